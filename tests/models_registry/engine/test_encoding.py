"""models_registry.engine.encoding.left_padded_batch: the batch encoding that one shared
tokenizer can serve from several threads at once."""

from __future__ import annotations

import threading

import pytest
from transformers import AutoTokenizer

from models_registry.engine.encoding import left_padded_batch, prepare_tokenizer

TEXTS = ["Say hello.", "Write a very long story about a dragon who learns to sing.", "Hi"]


@pytest.fixture
def tokenizer(smollm2_tokenizer_dir):
    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir)))


def test_rows_are_left_padded_with_the_pad_token_and_masked(tokenizer):
    batch = left_padded_batch(tokenizer, TEXTS)

    ids, mask = batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    for text, row, row_mask in zip(TEXTS, ids, mask, strict=True):
        own = tokenizer(text, add_special_tokens=False)["input_ids"]
        padding = len(row) - len(own)
        assert row == [tokenizer.pad_token_id] * padding + own
        assert row_mask == [0] * padding + [1] * len(own)


def test_matches_the_tokenizers_own_left_padding(tokenizer):
    expected = tokenizer(
        TEXTS, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
    batch = left_padded_batch(tokenizer, TEXTS)

    assert batch["input_ids"].tolist() == expected["input_ids"].tolist()
    assert batch["attention_mask"].tolist() == expected["attention_mask"].tolist()


def test_stays_padded_while_other_threads_tokenize_the_same_tokenizer(tokenizer):
    """What a /v1 view counting prompt tokens does beside the batcher; with the
    tokenizer's own ``padding=True`` this loses the padding now and then."""
    stop = threading.Event()

    def count_tokens():
        while not stop.is_set():
            tokenizer(TEXTS[1], add_special_tokens=False)

    counters = [threading.Thread(target=count_tokens) for _ in range(4)]
    for counter in counters:
        counter.start()
    try:
        widths = {
            tuple(left_padded_batch(tokenizer, TEXTS)["input_ids"].shape) for _ in range(1000)
        }
    finally:
        stop.set()
        for counter in counters:
            counter.join()

    assert widths == {(3, len(tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]))}
