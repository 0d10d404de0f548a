"""training.methods.raft on a tiny random Llama, CPU only, no Django.

The reward is a rule written here (the reply's length in characters): a random model's
replies vary in length, so ranking has something to choose from.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models_registry.engine.ml import (
    GenerationParams,
    generate_best_of_n,
    generate_replies,
    load_policy,
    verify_artifact,
)
from training.methods.common import Hooks, prepare_tokenizer
from training.methods.raft import (
    Kept,
    RAFTConfig,
    TrainingCancelled,
    kept_example,
    tokenized_row,
    train_raft,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class LengthReward:
    """Reward = characters in the reply; remembers every (prompt, reply, reward) it scored."""

    def __init__(self):
        self.calls: list[list[tuple[str, str, float]]] = []

    def __call__(self, conversations: list[list[dict]], replies: list[str]) -> list[float]:
        rewards = [float(len(reply)) for reply in replies]
        self.calls.append(
            [
                (c[-1]["content"], r, w)
                for c, r, w in zip(conversations, replies, rewards, strict=True)
            ]
        )
        return rewards


def _best_per_prompt(scored: list[tuple[str, str, float]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for prompt, _, reward in scored:
        best[prompt] = max(best.get(prompt, -math.inf), reward)
    return best


PROMPT_ROWS = [
    {"prompt": _user("Say one thing.")},
    {"messages": _user("Say two things.") + [{"role": "assistant", "content": "A, B."}]},
    {"prompt": _user("Say three things.")},
    {"prompt": _user("Say one thing.")},  # a duplicate prompt is sampled once
]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "prompts.jsonl", PROMPT_ROWS)


def _config(**overrides) -> RAFTConfig:
    settings = dict(
        samples_per_prompt=3,
        iterations=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        epochs=1,
        batch_size=1,
        lora_r=4,
        lora_alpha=8,
        eval_fraction=0,
    )
    return RAFTConfig(**{**settings, **overrides})


def test_train_raft_fine_tunes_on_the_best_replies(tiny_model_dir, prompts_file, tmp_path):
    # given: 3 distinct prompts, 3 samples each, 2 iterations of one epoch in batches of 1
    reward = LengthReward()
    steps_seen = []
    output_dir = tmp_path / "raft"

    # when
    result = train_raft(
        _config(),
        dataset_path=prompts_file,
        base_model_path=tiny_model_dir,
        output_dir=output_dir,
        score=reward,
        hooks=Hooks(on_step=lambda step, total, metrics: steps_seen.append((step, total, metrics))),
    )

    # then: each iteration scored every prompt 3 times ...
    assert len(reward.calls) == 2
    for scored in reward.calls:
        prompts = [prompt for prompt, _, _ in scored]
        expected = ["Say one thing.", "Say two things.", "Say three things."]
        assert prompts == [prompt for prompt in expected for _ in range(3)]

    # ... kept the best reply of each prompt, whose mean beats the mean of all samples ...
    assert len(result.iterations) == 2
    for scored, metrics in zip(reward.calls, result.iterations, strict=True):
        best = _best_per_prompt(scored)
        all_rewards = [w for _, _, w in scored]
        assert metrics["kept"] == 3.0
        assert metrics["reward_mean"] == pytest.approx(sum(best.values()) / 3)
        assert metrics["reward_sampled_mean"] == pytest.approx(sum(all_rewards) / 9)
        assert metrics["reward_best"] == max(all_rewards)
        assert metrics["reward_mean"] >= metrics["reward_sampled_mean"]

    # ... and fine-tuned on the 3 kept replies per iteration, steps counted across iterations.
    assert result.steps == 6
    assert [(step, total) for step, total, _ in steps_seen] == [(s, 6) for s in range(1, 7)]
    for step, _, metrics in steps_seen:
        iteration = result.iterations[(step - 1) // 3]
        assert metrics["iteration"] == 1.0 + (step - 1) // 3
        assert metrics["reward_mean"] == iteration["reward_mean"]
        assert metrics["reward_best"] == iteration["reward_best"]
        assert all(math.isfinite(value) for value in metrics.values())
    assert result.metrics["rows"] == 3.0
    assert result.metrics["prompts"] == 3.0

    verify_artifact(output_dir)
    assert (output_dir / "adapter_model.safetensors").is_file()
    record = json.loads((output_dir / "training_result.json").read_text())
    assert (record["method"], record["steps"], record["total_steps"]) == ("raft", 6, 6)
    assert record["iterations"] == result.iterations
    assert record["config"]["samples_per_prompt"] == 3
    model, tokenizer = load_policy(tiny_model_dir, output_dir)
    [reply] = generate_replies(
        model, tokenizer, [_user("Hello")], GenerationParams(max_new_tokens=4, do_sample=False)
    )
    assert 1 <= reply.completion_tokens <= 4


def test_keep_fraction_keeps_only_the_top_prompts(tiny_model_dir, prompts_file, tmp_path):
    # given
    reward = LengthReward()

    # when: one iteration keeping a third of the 3 prompts, held-out prompts scored after
    result = train_raft(
        _config(iterations=1, keep_fraction=0.34, samples_per_prompt=2, eval_fraction=0.3),
        dataset_path=prompts_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "out",
        score=reward,
    )

    # then: one training prompt kept (the one whose best reply scored highest), one step
    sampled, held_out = reward.calls
    best = _best_per_prompt(sampled)
    [metrics] = result.iterations
    assert metrics["kept"] == 1.0
    assert metrics["reward_mean"] == max(best.values())
    assert result.steps == 1
    assert result.metrics["eval_prompts"] == float(len(held_out)) == 3.0 - len(best)
    assert result.metrics["eval_reward_mean"] == pytest.approx(
        sum(w for _, _, w in held_out) / len(held_out)
    )


RESUME_CONFIG = {"checkpoint_every": 1}


@pytest.fixture(scope="module")
def uninterrupted_raft(tiny_model_dir, tmp_path_factory):
    """The result and adapter weights of an uninterrupted run (2 iterations of 3 steps)."""
    folder = tmp_path_factory.mktemp("raft-uninterrupted")
    result = train_raft(
        _config(**RESUME_CONFIG),
        dataset_path=_write_jsonl(folder / "prompts.jsonl", PROMPT_ROWS),
        base_model_path=tiny_model_dir,
        output_dir=folder / "out",
        score=LengthReward(),
    )
    return result, load_file(folder / "out" / "adapter_model.safetensors")


@pytest.mark.parametrize(
    ("stop_after", "samplings_left"),
    [(3, 1), (4, 0)],  # at the end of iteration 1; inside iteration 2
)
def test_resumed_raft_run_ends_with_the_uninterrupted_weights(
    tiny_model_dir, prompts_file, tmp_path, uninterrupted_raft, stop_after, samplings_left
):
    # given: a run cancelled after step ``stop_after`` of 6
    checkpoints = tmp_path / "checkpoints"
    first_steps, resumed_steps = [], []
    resumed_reward = LengthReward()

    def run(output_dir: Path, hooks: Hooks, score):
        return train_raft(
            _config(**RESUME_CONFIG),
            dataset_path=prompts_file,
            base_model_path=tiny_model_dir,
            output_dir=output_dir,
            score=score,
            hooks=hooks,
        )

    with pytest.raises(TrainingCancelled):
        run(
            tmp_path / "cancelled",
            Hooks(
                on_step=lambda step, total, metrics: first_steps.append(step),
                should_stop=lambda: len(first_steps) >= stop_after,
                checkpoint_dir=checkpoints,
            ),
            LengthReward(),
        )

    # when: it runs again with the same checkpoint folder
    resumed = run(
        tmp_path / "resumed",
        Hooks(
            on_step=lambda step, total, metrics: resumed_steps.append(step),
            checkpoint_dir=checkpoints,
        ),
        resumed_reward,
    )

    # then: it samples only what was not sampled yet and ends where an uninterrupted run does
    assert first_steps == list(range(1, stop_after + 1))
    assert not (tmp_path / "cancelled").exists()
    assert len(resumed_reward.calls) == samplings_left
    assert resumed_steps == list(range(stop_after + 1, 7))
    expected_result, expected_weights = uninterrupted_raft
    assert resumed.iterations == expected_result.iterations
    resumed_weights = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert resumed_weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.allclose(resumed_weights[name], tensor, atol=1e-7), name


def test_a_reply_cut_at_max_new_tokens_is_trained_without_end_of_turn(tiny_model_dir):
    # given
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))

    def trained_text(finished: bool) -> str:
        kept = Kept(prompt=_user("Say one thing."), reply="One", finished=finished, reward=1.0)
        row = tokenized_row(kept_example(tokenizer, kept, _config()))
        ids = [
            t
            for t, trained in zip(row["input_ids"], row["completion_mask"], strict=True)
            if trained
        ]
        return tokenizer.decode(ids)

    # when / then: the SFTTrainer's rows train on the reply only, ending the turn when it ended
    assert trained_text(finished=True) == "One<|im_end|>"
    assert trained_text(finished=False) == "One"


def test_best_of_n_returns_the_best_of_its_draws(tiny_model_dir):
    # given
    model, tokenizer = load_policy(tiny_model_dir)
    conversations = [_user("Say one thing."), _user("Say two things.")]
    params = GenerationParams(max_new_tokens=6, do_sample=True, temperature=1.0, seed=3)
    reward = LengthReward()

    # when
    best = generate_best_of_n(model, tokenizer, conversations, params, n=4, score=reward)
    best = [(reply.text, value) for reply, value in best]

    # then: for each prompt, the reply with the highest reward among the 4 it drew
    [scored] = reward.calls
    assert len(scored) == 8
    assert len({reply for _, reply, _ in scored}) > 1
    for conversation, (reply, value) in zip(conversations, best, strict=True):
        drawn = [(r, w) for p, r, w in scored if p == conversation[-1]["content"]]
        assert len(drawn) == 4
        assert value == max(w for _, w in drawn)
        assert (reply, value) in drawn
    again = generate_best_of_n(model, tokenizer, conversations, params, n=4, score=LengthReward())
    assert [(reply.text, value) for reply, value in again] == best


def test_a_score_of_the_wrong_length_is_an_error(tiny_model_dir, prompts_file, tmp_path):
    with pytest.raises(ValueError, match="score returned 1 values for 9 replies"):
        train_raft(
            _config(),
            dataset_path=prompts_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=lambda conversations, replies: [0.0],
        )
    assert not (tmp_path / "out").exists()


def test_config_defaults_and_round_trip():
    config = RAFTConfig()
    assert (config.samples_per_prompt, config.iterations, config.keep_fraction) == (4, 2, 1.0)
    assert (config.temperature, config.max_new_tokens, config.learning_rate) == (1.0, 64, 2e-4)
    assert RAFTConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"k": 4}, "unknown RAFT config key(s): k"),
        ({"samples_per_prompt": 0}, "samples_per_prompt must be >= 1"),
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 4096"),
        ({"keep_fraction": 0}, "keep_fraction must be in (0, 1]"),
        ({"keep_fraction": 1.5}, "keep_fraction must be in (0, 1]"),
        ({"learning_rate": -1}, "learning_rate must be > 0"),
    ],
)
def test_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError) as excinfo:
        RAFTConfig.from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("[1, 2]", "line 2: expected a JSON object"),
        (json.dumps({"text": "hi"}), "line 2: missing 'prompt' (or 'messages')"),
        (json.dumps({"prompt": []}), "line 2: 'prompt' must be a non-empty list"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}),
            "line 2: 'messages' holds no prompt before its reply",
        ),
    ],
)
def test_bad_dataset_line_names_the_line(tiny_model_dir, tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": _user("ok")}) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        train_raft(
            _config(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=LengthReward(),
        )
    assert message in str(excinfo.value)
    assert not (tmp_path / "out").exists()


def test_raft_imports_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.raft"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
