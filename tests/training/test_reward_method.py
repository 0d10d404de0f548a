"""training.methods.reward on a tiny random Llama, CPU only, no Django."""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)
from training.methods.common import Hooks, checkpoint_step, holdout_split, prompt_key
from training.methods.reward import (
    RewardConfig,
    RewardScorer,
    TrainingCancelled,
    train_reward,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small everywhere: normalisation samples a couple of short base-policy replies.
QUICK = {"normalization_prompts": 2, "normalization_max_new_tokens": 4}


def _pair(prompt: str, chosen: str, rejected: str, **extra) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _train(config, dataset_path, model_dir, output_dir, **hooks) -> object:
    return train_reward(
        config,
        dataset_path=dataset_path,
        base_model_path=model_dir,
        output_dir=output_dir,
        hooks=Hooks(**hooks),
    )


@pytest.fixture
def preference_file(tmp_path: Path) -> Path:
    rows = [
        _pair(f"Say something about the number {i}.", f"The number {i} is fine.", "No.")
        for i in range(6)
    ]
    return _write_jsonl(tmp_path / "pairs.jsonl", rows)


def _pattern_rows(count: int, seed: int) -> list[dict]:
    """Chosen replies carry a friendly word (kindly/gladly), rejected ones an unfriendly
    one (sadly/rudely), each at a random place among random filler words."""
    rnd = random.Random(seed)
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "green",
        "quick",
        "paper",
        "light",
        "table",
        "music",
        "garden",
        "window",
    ]
    rows = []
    for i in range(count):
        body = rnd.sample(words, 3)
        chosen, rejected = body[:], body[:]
        chosen.insert(rnd.randrange(4), rnd.choice(["kindly", "gladly"]))
        rejected.insert(rnd.randrange(4), rnd.choice(["sadly", "rudely"]))
        prompt = f"Tell me something about {rnd.choice(words)} number {i}."
        rows.append(_pair(prompt, " ".join(chosen), " ".join(rejected)))
    return rows


def test_train_reward_saves_an_artifact_the_scorer_loads(tiny_model_dir, preference_file, tmp_path):
    # given
    config = RewardConfig(
        learning_rate=1e-3, epochs=2, batch_size=2, lora_r=4, lora_alpha=8, eval_fraction=0, **QUICK
    )
    steps_seen = []
    output_dir = tmp_path / "rm"

    # when
    result = _train(
        config,
        preference_file,
        tiny_model_dir,
        output_dir,
        on_step=lambda step, total, metrics: steps_seen.append((step, total, metrics)),
    )

    # then: 6 pairs in batches of 2 for 2 epochs
    assert result.steps == 6
    assert [step for step, _, _ in steps_seen] == [1, 2, 3, 4, 5, 6]
    # TRL's RewardTrainer metrics
    expected_keys = {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward"}
    for _, total, metrics in steps_seen:
        assert total == 6
        assert expected_keys <= metrics.keys()
        assert all(math.isfinite(value) for value in metrics.values())
    # The small score head starts every reward near 0: the loss starts at ~log 2.
    first = steps_seen[0][2]
    assert first["loss"] == pytest.approx(math.log(2), abs=0.05)
    assert -0.5 < first["min_reward"] <= first["max_reward"] < 0.5

    verify_artifact(output_dir)
    assert (output_dir / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((output_dir / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_CLS"
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
    normalization = json.loads((output_dir / "reward_normalization.json").read_text())
    assert normalization["prompts"] == 2
    assert normalization["std"] >= 1e-3
    assert result.metrics["reward_mean_raw"] == normalization["mean"]
    assert result.metrics["reward_std_raw"] == normalization["std"]
    record = json.loads((output_dir / "training_result.json").read_text())
    assert record["method"] == "reward"
    assert record["steps"] == 6
    assert record["config"]["center_rewards_coefficient"] == 0.01
    assert set(record["library_versions"]) == {"torch", "transformers", "peft"}

    scorer = RewardScorer.load(output_dir)
    conversations = [
        [{"role": "user", "content": "Say something about the number 3."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "Anything?"}],
    ]
    replies = ["The number 3 is fine.", "", "A much longer reply " * 5]
    raw = scorer.score_raw(conversations, replies)
    scores = scorer.score(conversations, replies)
    assert all(math.isfinite(value) for value in raw + scores)
    assert scores == pytest.approx(
        [(value - normalization["mean"]) / normalization["std"] for value in raw]
    )
    # Scores do not depend on batching.
    assert scorer.score(conversations, replies, batch_size=1) == pytest.approx(scores, abs=1e-4)
    # The base can also be named explicitly.
    explicit = RewardScorer.load(output_dir, base_model_path=tiny_model_dir, device="cpu")
    assert explicit.score(conversations, replies) == pytest.approx(scores, abs=1e-4)


def test_scores_of_the_base_policys_replies_are_normalised(tiny_model_dir, tmp_path):
    # given: every prompt is a training prompt (nothing held out)
    prompts = [f"Write a line about topic {i}." for i in range(8)]
    path = _write_jsonl(
        tmp_path / "pairs.jsonl", [_pair(p, "Yes, gladly.", "No.") for p in prompts]
    )
    config = RewardConfig(
        learning_rate=1e-3,
        max_steps=3,
        batch_size=4,
        lora_r=4,
        eval_fraction=0,
        normalization_prompts=8,
        normalization_max_new_tokens=8,
    )

    # when
    _train(config, path, tiny_model_dir, tmp_path / "rm")

    # then: the base policy's own replies, sampled again with the same settings, score
    # mean 0 and standard deviation 1 through the loaded scorer.
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    policy, tokenizer = load_policy(tiny_model_dir)
    params = GenerationParams(max_new_tokens=8, temperature=0.7, do_sample=True, seed=0)
    replies = [reply.text for reply in generate_replies(policy, tokenizer, conversations, params)]
    scores = RewardScorer.load(tmp_path / "rm").score(conversations, replies)
    # Exact up to float32 noise on CPU; bf16 autocast on CUDA adds rounding.
    tolerance = 0.05 if torch.cuda.is_available() else 1e-3
    assert statistics.fmean(scores) == pytest.approx(0.0, abs=tolerance)
    assert statistics.pstdev(scores) == pytest.approx(1.0, abs=tolerance)


@pytest.mark.parametrize(
    ("use_margin", "row_margin", "expected_shift"),
    [(True, 3, 1.5), (True, None, 0.0), (False, 3, 0.0)],
)
def test_margin_loss_subtracts_the_scaled_margin(
    tiny_model_dir, tmp_path, use_margin, row_margin, expected_shift
):
    # given: one pair per step, so the step's margin metric is that pair's r_c - r_r
    extra = {} if row_margin is None else {"margin": row_margin, "agreement": 1.0}
    rows = [_pair(f"Question {i}?", "Yes, gladly.", "No.", **extra) for i in range(4)]
    path = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = RewardConfig(
        max_steps=2,
        batch_size=1,
        lora_r=4,
        eval_fraction=0,
        use_margin=use_margin,
        margin_scale=0.5,
        center_rewards_coefficient=0.0,
        **QUICK,
    )
    history = []

    # when
    _train(config, path, tiny_model_dir, tmp_path / "rm", on_step=lambda s, t, m: history.append(m))

    # then: loss = -log sigma(r_c - r_r - 0.5 * margin), margin 0 where not used or absent
    for metrics in history:
        expected = float(-F.logsigmoid(torch.tensor(metrics["margin"] - expected_shift)))
        assert metrics["loss"] == pytest.approx(expected, abs=1e-5)


def test_reward_model_learns_a_preference_pattern(tiny_model_dir, tmp_path):
    # given: 48 pairs whose chosen reply holds a friendly word, 40% of prompts held out
    path = _write_jsonl(tmp_path / "pattern.jsonl", _pattern_rows(48, seed=3))
    config = RewardConfig(
        learning_rate=5e-3,
        epochs=20,
        max_steps=20,
        batch_size=8,
        lora_r=8,
        lora_alpha=16,
        eval_fraction=0.4,
        **QUICK,
    )

    # when
    result = _train(config, path, tiny_model_dir, tmp_path / "rm")

    # then: held-out pairwise accuracy goes from chance to (nearly) all pairs right
    metrics = result.metrics
    print(
        f"held-out accuracy {metrics['eval_accuracy_before']:.2f} -> {metrics['eval_accuracy']:.2f}"
        f", loss {metrics['eval_loss_before']:.3f} -> {metrics['eval_loss']:.3f}"
        f" on {metrics['eval_pairs']:.0f} pairs"
    )
    assert metrics["eval_pairs"] >= 15
    assert metrics["eval_loss_before"] == pytest.approx(math.log(2), abs=0.05)
    assert metrics["eval_accuracy_before"] <= 0.7
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_margin"] > 1.0
    assert metrics["eval_loss"] < metrics["eval_loss_before"] - 0.3

    # ... and the saved scorer prefers friendly replies to prompts it never saw.
    scorer = RewardScorer.load(tmp_path / "rm")
    fresh = _pattern_rows(10, seed=99)
    conversations = [row["prompt"] for row in fresh]
    chosen = scorer.score(conversations, [row["chosen"][0]["content"] for row in fresh])
    rejected = scorer.score(conversations, [row["rejected"][0]["content"] for row in fresh])
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 9


def test_the_scorer_reads_the_reward_where_training_put_it(
    tiny_model_dir, preference_file, tmp_path
):
    # given: half the prompts held out, all of them in one evaluation batch, in float32 as
    # the scorer on CPU; SmolLM2's pad token is its EOS, which ends every encoded reply
    config = RewardConfig(
        learning_rate=1e-2,
        max_steps=3,
        batch_size=8,
        lora_r=4,
        eval_fraction=0.5,
        mixed_precision="fp32",
        **QUICK,
    )

    # when
    result = _train(config, preference_file, tiny_model_dir, tmp_path / "rm")

    # then: the loaded scorer's rewards of the held-out pairs give TRL's held-out margin and
    # accuracy (the head is read at the same token in training and in scoring)
    rows = [json.loads(line) for line in preference_file.read_text().splitlines()]
    _, held_out = holdout_split(
        [prompt_key(row["prompt"]) for row in rows], fraction=0.5, seed=config.seed
    )
    pairs = [rows[i] for i in held_out]
    scorer = RewardScorer.load(tmp_path / "rm")
    conversations = [row["prompt"] for row in pairs]
    chosen = scorer.score_raw(conversations, [row["chosen"][0]["content"] for row in pairs])
    rejected = scorer.score_raw(conversations, [row["rejected"][0]["content"] for row in pairs])
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    assert result.metrics["eval_pairs"] == len(pairs) >= 2
    assert abs(result.metrics["eval_margin"]) > 1e-3  # the head moved
    assert statistics.fmean(gaps) == pytest.approx(result.metrics["eval_margin"], abs=1e-4)
    assert statistics.fmean(g > 0 for g in gaps) == pytest.approx(result.metrics["eval_accuracy"])


def test_a_cancelled_reward_run_resumes_from_its_checkpoint_to_the_same_model(
    tiny_model_dir, preference_file, tmp_path
):
    # given: an uninterrupted run, and the same run cancelled after its step-2 checkpoint
    config = RewardConfig(
        learning_rate=1e-3,
        max_steps=4,
        batch_size=2,
        lora_r=4,
        lora_alpha=8,
        eval_fraction=0,
        checkpoint_every=2,
        **QUICK,
    )
    _train(config, preference_file, tiny_model_dir, tmp_path / "straight")
    checkpoints = tmp_path / "checkpoints"
    seen = []
    with pytest.raises(TrainingCancelled):
        _train(
            config,
            preference_file,
            tiny_model_dir,
            tmp_path / "first",
            on_step=lambda step, total, metrics: seen.append(step),
            should_stop=lambda: len(seen) >= 2,
            checkpoint_dir=checkpoints,
        )
    assert checkpoint_step(checkpoints) == 2
    assert not (tmp_path / "first").exists()

    # when: it runs again with the same checkpoint folder
    resumed_steps = []
    result = _train(
        config,
        preference_file,
        tiny_model_dir,
        tmp_path / "resumed",
        on_step=lambda step, total, metrics: resumed_steps.append(step),
        checkpoint_dir=checkpoints,
    )

    # then: it did only the remaining steps and ends where the uninterrupted run ended
    assert resumed_steps == [3, 4]
    assert result.steps == 4
    record = json.loads((tmp_path / "resumed" / "training_result.json").read_text())
    assert len(record["history"]) == 4
    from safetensors.torch import load_file

    expected = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    actual = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert expected.keys() == actual.keys()
    assert any("score" in name for name in actual)  # the head is saved with the adapter
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5)


def test_a_margin_curriculum_trains_on_the_clearest_pairs_first(tiny_model_dir, tmp_path):
    # given: one pair per step; the weaker the labelers' preference, the longer the reply,
    # so each step's token count tells which pair it trained on
    rows = [
        _pair(f"Question {i}?", "Yes" + " indeed" * (5 - margin), "No.", margin=float(margin))
        for i, margin in enumerate([1, 4, 2, 3])
    ]
    path = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = RewardConfig(
        max_steps=4, batch_size=1, lora_r=4, eval_fraction=0, curriculum="margin", **QUICK
    )
    history = []

    # when
    _train(config, path, tiny_model_dir, tmp_path / "rm", on_step=lambda s, t, m: history.append(m))

    # then: margins 4, 3, 2, 1 in that order (TRL counts the tokens trained on so far)
    totals = [m["num_tokens"] for m in history]
    per_step = [b - a for a, b in zip([0.0, *totals], totals, strict=False)]
    assert per_step == sorted(per_step)
    assert len(set(per_step)) == 4


def test_full_fine_tuning_saves_a_full_model(tiny_model_dir, preference_file, tmp_path):
    # given
    config = RewardConfig(learning_rate=1e-4, max_steps=2, batch_size=4, lora_r=0, **QUICK)

    # when
    result = _train(config, preference_file, tiny_model_dir, tmp_path / "rm")

    # then
    output_dir = tmp_path / "rm"
    verify_artifact(output_dir)
    assert not (output_dir / "adapter_config.json").exists()
    model_config = json.loads((output_dir / "config.json").read_text())
    assert model_config["architectures"] == ["LlamaForSequenceClassification"]
    assert model_config["pad_token_id"] is not None
    assert result.steps == 2
    [score] = RewardScorer.load(output_dir).score([[{"role": "user", "content": "Hi"}]], ["Hello"])
    assert math.isfinite(score)


def test_should_stop_cancels_training(tiny_model_dir, preference_file, tmp_path):
    steps = []
    with pytest.raises(TrainingCancelled):
        _train(
            RewardConfig(epochs=3, batch_size=2, lora_r=4, **QUICK),
            preference_file,
            tiny_model_dir,
            tmp_path / "rm",
            on_step=lambda step, total, metrics: steps.append(step),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    assert not (tmp_path / "rm").exists()


def test_config_from_dict_accepts_known_keys():
    config = RewardConfig.from_dict({"use_margin": True, "margin_scale": 1, "lora_r": 0})
    assert (config.use_margin, config.margin_scale, config.lora_r) == (True, 1.0, 0)
    assert RewardConfig.from_dict(config.to_dict()) == config
    assert RewardConfig.method_name == "reward"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"margin": 0.5}, "unknown reward config key(s): margin"),
        ({"use_margin": "yes"}, "use_margin must be true or false"),
        ({"margin_scale": -1}, "margin_scale must be >= 0"),
        ({"center_rewards_coefficient": -0.1}, "center_rewards_coefficient must be >= 0"),
        ({"normalization_prompts": 0}, "normalization_prompts must be >= 1"),
        (
            {"normalization_max_new_tokens": 0},
            "normalization_max_new_tokens must be between 1 and 4096",
        ),
        ({"lora_r": -1}, "lora_r must be >= 0"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
    ],
)
def test_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError) as excinfo:
        RewardConfig.from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        (json.dumps({"prompt": [{"role": "user", "content": "hi"}]}), "line 2: missing 'chosen'"),
        (
            json.dumps(_pair("hi", "a", "b", margin="big")),
            "line 2: 'margin' must be a number",
        ),
        (
            json.dumps({**_pair("hi", "a", "b"), "rejected": [{"role": "user", "content": "b"}]}),
            "line 2: 'rejected'[0] has role 'user'",
        ),
    ],
)
def test_bad_dataset_line_names_the_line(tiny_model_dir, tmp_path, bad_line, message):
    # given
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_pair("ok", "a", "b")) + "\n" + bad_line + "\n", encoding="utf-8")

    # when / then
    with pytest.raises(ValueError) as excinfo:
        _train(RewardConfig(), path, tiny_model_dir, tmp_path / "rm")
    assert message in str(excinfo.value)
    assert not (tmp_path / "rm").exists()


def test_scorer_rejects_bad_input_and_non_reward_folders(tiny_model_dir, preference_file, tmp_path):
    # given
    _train(
        RewardConfig(max_steps=1, batch_size=2, lora_r=4, **QUICK),
        preference_file,
        tiny_model_dir,
        tmp_path / "rm",
    )
    scorer = RewardScorer.load(tmp_path / "rm")
    hello = [{"role": "user", "content": "Hello"}]

    # when / then
    with pytest.raises(ValueError, match="got 2 conversations but 1 replies"):
        scorer.score([hello, hello], ["Hi"])
    with pytest.raises(ValueError, match="conversation 1 must be a non-empty list"):
        scorer.score([hello, []], ["Hi", "Hi"])
    with pytest.raises(ValueError, match="reply 0 must be a string"):
        scorer.score([hello], [None])
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="reward_normalization.json is missing"):
        RewardScorer.load(tiny_model_dir)


def test_methods_import_without_django():
    code = (
        "import sys; sys.modules['django'] = None; "
        "import training.methods.reward; import models_registry.engine.ml"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
