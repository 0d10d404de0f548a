"""training.methods.evaluation on a tiny random Llama, CPU only, no Django."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models_registry.engine.ml import GenerationParams, generate_replies, load_policy
from training.methods.common import holdout_split, prompt_key
from training.methods.evaluation import (
    WinRate,
    behaviour_fraction,
    held_out_prompts,
    win_rate,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[{"role": "user", "content": f"Tell me about the number {i}."}] for i in range(6)]


def _length_score(prompts: list, replies: list[str]) -> list[float]:
    """A rule-based judge: longer replies are better."""
    assert len(prompts) == len(replies)
    return [float(len(reply)) for reply in replies]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _random_adapter(base: Path, folder: Path, *, seed: int) -> Path:
    """A strong random LoRA on every linear layer: greedy replies differ from the base's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=64,
        target_modules="all-linear",
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_adapter(tiny_model_dir, tmp_path_factory.mktemp("candidate"), seed=7)


@pytest.fixture(scope="module")
def other_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_adapter(tiny_model_dir, tmp_path_factory.mktemp("parent"), seed=8)


def _greedy(base: Path, adapter: Path | None, max_new_tokens: int) -> list[str]:
    model, tokenizer = load_policy(base, adapter)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    return [r.text for r in generate_replies(model, tokenizer, PROMPTS, params, batch_size=4)]


def test_win_rate_against_itself_is_all_ties(tiny_model_dir):
    # given
    policy = (tiny_model_dir, None)

    # when
    outcome = win_rate(
        candidate=policy,
        parent=policy,
        prompts=PROMPTS,
        score=_length_score,
        max_new_tokens=6,
        batch_size=4,
    )

    # then
    assert isinstance(outcome, WinRate)
    assert (outcome.wins, outcome.ties, outcome.losses, outcome.prompts) == (0, 6, 0, 6)
    assert outcome.win_rate == 0.5
    assert outcome.candidate_mean_score == outcome.parent_mean_score
    assert len(outcome.examples) == 3
    assert {row["outcome"] for row in outcome.examples} == {"tie"}


def test_same_reply_is_a_tie_whatever_the_scorer_says(tiny_model_dir):
    # given: a noisy judge that scores the second batch of replies lower
    calls = []

    def noisy(prompts, replies):
        calls.append(len(replies))
        return [1.0 if len(calls) == 1 else 0.0 for _ in replies]

    # when
    outcome = win_rate(
        candidate=(tiny_model_dir, None),
        parent=(tiny_model_dir, None),
        prompts=PROMPTS,
        score=noisy,
        max_new_tokens=6,
    )

    # then
    assert calls == [6, 6]
    assert (outcome.wins, outcome.ties, outcome.losses) == (0, 6, 0)
    assert (outcome.candidate_mean_score, outcome.parent_mean_score) == (1.0, 0.0)


def _letter_e_score(prompts: list, replies: list[str]) -> list[float]:
    """A rule-based judge: the more e's, the better."""
    return [float(reply.count("e")) for reply in replies]


def test_win_rate_of_one_adapter_against_another(tiny_model_dir, adapter_dir, other_adapter_dir):
    # given: the replies each policy gives greedily, judged by their e's
    candidate_replies = _greedy(tiny_model_dir, adapter_dir, 8)
    parent_replies = _greedy(tiny_model_dir, other_adapter_dir, 8)
    differences = [
        c.count("e") - p.count("e") for c, p in zip(candidate_replies, parent_replies, strict=True)
    ]
    expected = (
        sum(d > 0 for d in differences),
        sum(d == 0 for d in differences),
        sum(d < 0 for d in differences),
    )

    # when
    outcome = win_rate(
        candidate=(tiny_model_dir, adapter_dir),
        parent=(tiny_model_dir, other_adapter_dir),
        prompts=PROMPTS,
        score=_letter_e_score,
        max_new_tokens=8,
        batch_size=4,
        examples=2,
    )

    # then: the rule splits these two random policies both ways
    assert expected[0] >= 1 and expected[2] >= 1
    assert (outcome.wins, outcome.ties, outcome.losses) == expected
    assert outcome.win_rate == (expected[0] + expected[1] / 2) / 6
    assert outcome.candidate_mean_score == sum(r.count("e") for r in candidate_replies) / 6
    assert outcome.parent_mean_score == sum(r.count("e") for r in parent_replies) / 6
    most_decisive = max(range(6), key=lambda i: (abs(differences[i]), -i))
    first = outcome.examples[0]
    assert len(outcome.examples) == 2
    assert first["prompt"] == PROMPTS[most_decisive]
    assert first["candidate"] == candidate_replies[most_decisive]
    assert first["parent"] == parent_replies[most_decisive]
    assert first["candidate_score"] == candidate_replies[most_decisive].count("e")
    assert first["parent_score"] == parent_replies[most_decisive].count("e")
    assert first["outcome"] == ("win" if differences[most_decisive] > 0 else "loss")
    assert json.loads(json.dumps(outcome.as_dict())) == outcome.as_dict()


def test_win_rate_with_a_tie_margin_counts_close_calls_as_ties(
    tiny_model_dir, adapter_dir, other_adapter_dir
):
    # when: no length difference is bigger than a thousand characters
    outcome = win_rate(
        candidate=(tiny_model_dir, adapter_dir),
        parent=(tiny_model_dir, other_adapter_dir),
        prompts=PROMPTS,
        score=_length_score,
        max_new_tokens=8,
        tie_margin=1000.0,
    )

    # then
    assert (outcome.wins, outcome.ties, outcome.losses, outcome.win_rate) == (0, 6, 0, 0.5)


@pytest.mark.parametrize(
    ("prompts", "score", "message"),
    [
        ([], _length_score, "win_rate needs at least one prompt"),
        ([[{"role": "user"}]], _length_score, "prompt 0 must be a non-empty list"),
        (PROMPTS[:2], lambda p, r: [1.0], "score returned 1 values for 2 candidate replies"),
        (PROMPTS[:1], lambda p, r: [math.nan], "score returned nan for a candidate reply"),
        (PROMPTS[:1], lambda p, r: ["high"], "score returned 'high' for a candidate reply"),
    ],
)
def test_win_rate_refuses_bad_prompts_and_scores(tiny_model_dir, prompts, score, message):
    # when / then
    with pytest.raises(ValueError, match=message):
        win_rate(
            candidate=(tiny_model_dir, None),
            parent=(tiny_model_dir, None),
            prompts=prompts,
            score=score,
            max_new_tokens=2,
        )


def test_held_out_prompts_are_the_held_out_side_of_holdout_split(tmp_path):
    # given: preference rows, two per prompt, as DPO and the reward model read them
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i % 10}?"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(20)
    ]
    dataset = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    _, held_rows = holdout_split([prompt_key(row["prompt"]) for row in rows], fraction=0.3, seed=5)
    expected = []
    for i in held_rows:
        if rows[i]["prompt"] not in expected:
            expected.append(rows[i]["prompt"])

    # when
    prompts = held_out_prompts(dataset, eval_fraction=0.3, seed=5)

    # then
    assert 1 <= len(expected) < 10
    assert prompts == expected


def test_held_out_prompts_of_sft_rows_drop_the_reply(tmp_path):
    # given: SFT rows in the messages form; the prompt is everything before the reply
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Name {i}?"},
                {"role": "assistant", "content": f"Answer {i}"},
            ]
        }
        for i in range(8)
    ]
    dataset = _write_jsonl(tmp_path / "sft.jsonl", rows)
    prompts = [row["messages"][:-1] for row in rows]
    _, held = holdout_split([prompt_key(p) for p in prompts], fraction=0.25, seed=0)

    # when
    result = held_out_prompts(dataset, eval_fraction=0.25, seed=0)

    # then
    assert held
    assert result == [prompts[i] for i in held]
    assert held_out_prompts(dataset, eval_fraction=0.0, seed=0) == []


def test_held_out_prompts_names_the_bad_line(tmp_path):
    # given
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text(
        '{"prompt": [{"role": "user", "content": "Hi"}]}\n{"completion": "x"}\n', encoding="utf-8"
    )

    # when / then
    with pytest.raises(ValueError, match="line 2: missing 'prompt'"):
        held_out_prompts(dataset, eval_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="eval_fraction must be in \\[0, 1\\)"):
        held_out_prompts(dataset, eval_fraction=1.0, seed=0)


def test_behaviour_fraction():
    # given
    replies = ["I cannot help with that.", "Sure, here it is.", "I cannot do that.", "Yes."]

    # when
    fraction = behaviour_fraction(replies, lambda reply: reply.startswith("I cannot"))

    # then
    assert fraction == 0.5
    with pytest.raises(ValueError, match="at least one reply"):
        behaviour_fraction([], bool)


def test_evaluation_imports_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.evaluation"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
