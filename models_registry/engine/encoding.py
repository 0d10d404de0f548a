"""Devices, tokenizers and chat encoding: what generation, reward scoring and training share.

Plain Python on torch and transformers (no Django, nothing else of ours); the training
methods use these through ``training.methods.common``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100

# SmolLM2-Instruct's own template (ChatML with a default system turn). Used only when a
# tokenizer arrives without one, e.g. a GGUF file whose metadata lacks it.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def pick_device() -> str:
    """Return ``"cuda"`` when a CUDA device is usable, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Make sure ``tokenizer`` has a chat template and a pad token; returns it.

    The pad token falls back to EOS (what SmolLM2 ships with): padding positions are
    always masked out, so sharing the id is harmless.
    """
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def autocast_for(device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA devices that support it, full precision elsewhere."""
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- Chat encoding --------------------------------------------------------------------


def left_padded_batch(
    tokenizer: Any, texts: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for ``texts`` on ``device``, left-padded with
    the pad token.

    The padding happens here, not in ``tokenizer(..., padding=True)``: a fast tokenizer
    keeps its padding switch in the shared Rust backend, so a padded call on one thread
    and an unpadded call on another (a /v1 view counting prompt tokens while the batcher
    encodes) can leave the batch unpadded mid-call. Unpadded calls never flip the switch.
    """
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, width - len(row) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` rendered with the chat template plus the generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


@dataclass(frozen=True)
class EncodedReply:
    """A prompt+reply token sequence; ``prompt_length`` leading tokens are context only."""

    input_ids: list[int]
    prompt_length: int

    @property
    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.prompt_length + self.input_ids[self.prompt_length :]

    @property
    def reply_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def encode_chat_reply(
    tokenizer: Any,
    prompt: list[dict[str, str]],
    reply: list[dict[str, str]],
    *,
    max_length: int,
    max_prompt_length: int,
) -> EncodedReply:
    """Tokenize a prompt conversation and its assistant reply for training.

    The reply tokens are what the chat template renders after the generation prompt, as
    in TRL: where the template ends the turn with EOS (SmolLM2's ``<|im_end|>``) anything
    after that EOS is dropped, and where it does not, EOS is appended, so the model learns
    to stop exactly where generation stops. Over-long examples keep the end of the prompt
    (at most ``max_prompt_length`` tokens) and then the start of the reply so the whole
    sequence fits in ``max_length``.
    """
    if max_prompt_length >= max_length:
        raise ValueError("max_prompt_length must be smaller than max_length")
    eos = tokenizer.eos_token_id
    prompt_ids = chat_prompt_ids(tokenizer, prompt)
    full_text = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    # Tokens can merge across the boundary; the reply starts where the two diverge.
    split = _common_prefix_length(prompt_ids, full_ids)
    prompt_ids, reply_ids = prompt_ids[:split], full_ids[split:]
    if eos is not None:
        if eos in reply_ids:
            last_eos = len(reply_ids) - 1 - reply_ids[::-1].index(eos)
            reply_ids = reply_ids[: last_eos + 1]
        else:
            reply_ids = reply_ids + [eos]
    if not reply_ids:
        raise ValueError("reply renders to no tokens")
    prompt_ids = prompt_ids[-max_prompt_length:]
    reply_ids = reply_ids[: max_length - len(prompt_ids)]
    return EncodedReply(input_ids=prompt_ids + reply_ids, prompt_length=len(prompt_ids))


def collate(
    examples: Sequence[EncodedReply], *, pad_token_id: int, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """Right-pad examples into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": labels.to(device),
    }
