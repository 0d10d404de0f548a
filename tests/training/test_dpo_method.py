"""training.methods.dpo (TRL's DPOTrainer) on a tiny random Llama, CPU only, no Django."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)
from training.methods.common import (
    Hooks,
    checkpoint_step,
    collate,
    encode_chat_reply,
    sequence_logps,
)
from training.methods.dpo import DPOConfig, TrainingCancelled, train_dpo

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def preference_file(tmp_path: Path) -> Path:
    rows = [
        _pair(f"Say something about the number {i}.", f"The number {i} is fine.", "No.")
        for i in range(6)
    ]
    return _write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.fixture
def yes_no_file(tmp_path: Path) -> Path:
    rows = [_pair(f"Question number {i}?", "yes", "no") for i in range(16)]
    return _write_jsonl(tmp_path / "yes_no.jsonl", rows)


def test_train_dpo_saves_a_loadable_adapter(tiny_model_dir, preference_file, tmp_path):
    # given
    config = DPOConfig(learning_rate=1e-3, epochs=2, batch_size=2, lora_r=4, lora_alpha=8)
    steps_seen = []
    output_dir = tmp_path / "adapter"

    # when
    result = train_dpo(
        config,
        dataset_path=preference_file,
        base_model_path=tiny_model_dir,
        output_dir=output_dir,
        on_step=lambda step, total, metrics: steps_seen.append((step, total, metrics)),
    )

    # then
    assert result.steps == 6
    assert [step for step, _, _ in steps_seen] == [1, 2, 3, 4, 5, 6]
    assert {total for _, total, _ in steps_seen} == {6}
    expected_keys = {
        "loss",
        "dpo_loss",
        "nll_loss",
        "reward_accuracy",
        "reward_margin",
        "chosen_reward",
        "rejected_reward",
        "learning_rate",
        "tokens_per_s",
    }
    for _, _, metrics in steps_seen:
        assert expected_keys <= metrics.keys()
        assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    # The adapter starts at zero, so the first step's policy is the reference exactly.
    assert steps_seen[0][2]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    for _, _, metrics in steps_seen:
        # The loss is the DPO loss plus nll_weight (1.0) times the NLL on the chosen replies,
        assert metrics["loss"] == pytest.approx(metrics["dpo_loss"] + metrics["nll_loss"], rel=1e-4)
        # and our metric names carry the same numbers as TRL's.
        assert metrics["reward_accuracy"] == metrics["rewards_accuracies"]
        assert metrics["reward_margin"] == metrics["rewards_margins"]
    # One of the 6 prompts is held out and evaluated after training.
    assert (result.metrics["pairs"], result.metrics["eval_pairs"]) == (5.0, 1.0)
    for key in ("eval_loss", "eval_dpo_loss", "eval_reward_accuracy", "eval_reward_margin"):
        assert math.isfinite(result.metrics[key]), key
    assert result.metrics["train_loss"] == pytest.approx(
        sum(metrics["loss"] for _, _, metrics in steps_seen) / 6
    )
    assert (output_dir / "adapter_config.json").is_file()
    assert (output_dir / "adapter_model.safetensors").is_file()
    verify_artifact(output_dir)
    record = json.loads((output_dir / "training_result.json").read_text())
    assert record["steps"] == 6
    assert record["seed"] == 0
    assert record["config"]["learning_rate"] == 1e-3
    assert set(record["library_versions"]) == {"torch", "transformers", "peft"}
    assert result.library_versions == record["library_versions"]
    assert math.isfinite(result.metrics["loss"])

    model, tokenizer = load_policy(tiny_model_dir, output_dir)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello"}]],
        GenerationParams(max_new_tokens=4, do_sample=False),
    )
    # A random model may emit only special tokens, which decoding drops.
    assert isinstance(reply.text, str)
    assert 1 <= reply.completion_tokens <= 4


def test_train_dpo_max_steps_and_accumulation(tiny_model_dir, preference_file, tmp_path):
    # given: 6 pairs in micro-batches of 2, 2 per optimizer step -> 2 steps per epoch
    config = DPOConfig(
        epochs=5,
        max_steps=3,
        batch_size=2,
        gradient_accumulation_steps=2,
        loss_type="ipo",
        lora_r=4,
    )
    totals = []

    # when
    result = train_dpo(
        config,
        dataset_path=preference_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "out",
        on_step=lambda s, t, m: totals.append(t),
    )

    # then
    assert result.steps == 3
    assert totals == [3, 3, 3]
    assert math.isfinite(result.metrics["loss"])


def test_train_dpo_is_reproducible(tiny_model_dir, preference_file, tmp_path):
    config = DPOConfig(learning_rate=1e-3, max_steps=2, batch_size=2, lora_r=4)
    first = train_dpo(
        config,
        dataset_path=preference_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "a",
    )
    second = train_dpo(
        config,
        dataset_path=preference_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "b",
    )
    assert first.metrics["loss"] == second.metrics["loss"]
    assert first.metrics["reward_margin"] == second.metrics["reward_margin"]


def test_should_stop_cancels_training(tiny_model_dir, preference_file, tmp_path):
    # given: a stop request after the second step
    steps = []

    # when / then
    with pytest.raises(TrainingCancelled):
        train_dpo(
            DPOConfig(epochs=3, batch_size=2, lora_r=4),
            dataset_path=preference_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            on_step=lambda step, total, metrics: steps.append(step),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_cancelled_dpo_run_resumes_from_its_checkpoint_to_the_same_adapter(
    tiny_model_dir, preference_file, tmp_path
):
    # given: an uninterrupted run, and the same run cancelled after its step-2 checkpoint
    config = DPOConfig(
        learning_rate=1e-3, max_steps=4, batch_size=2, lora_r=4, checkpoint_every=2, eval_fraction=0
    )
    straight = tmp_path / "straight"
    train_dpo(
        config, dataset_path=preference_file, base_model_path=tiny_model_dir, output_dir=straight
    )
    checkpoints = tmp_path / "checkpoints"
    seen = []
    with pytest.raises(TrainingCancelled):
        train_dpo(
            config,
            dataset_path=preference_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "first",
            hooks=Hooks(
                on_step=lambda step, total, metrics: seen.append(step),
                should_stop=lambda: len(seen) >= 2,
                checkpoint_dir=checkpoints,
            ),
        )
    assert seen == [1, 2]
    assert checkpoint_step(checkpoints) == 2
    assert not (tmp_path / "first").exists()

    # when: it runs again with the same checkpoint folder
    resumed_steps, log = [], []
    resumed = tmp_path / "resumed"
    result = train_dpo(
        config,
        dataset_path=preference_file,
        base_model_path=tiny_model_dir,
        output_dir=resumed,
        hooks=Hooks(
            on_step=lambda step, total, metrics: resumed_steps.append(step),
            log=log.append,
            checkpoint_dir=checkpoints,
        ),
    )

    # then: it did only the remaining steps and ends where the uninterrupted run ended
    assert resumed_steps == [3, 4]
    assert "resuming from checkpoint-2" in log
    assert result.steps == 4
    record = json.loads((resumed / "training_result.json").read_text())
    assert len(record["history"]) == 4  # the steps before the checkpoint are kept
    expected, got = _adapter_weights(straight), _adapter_weights(resumed)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, msg=name)


def test_length_curriculum_trains_short_pairs_first(tiny_model_dir, tmp_path):
    # given: pairs whose chosen replies grow with i, written in a scrambled order
    order = [4, 0, 5, 2, 1, 3]
    path = _write_jsonl(
        tmp_path / "lengths.jsonl",
        [_pair("Count.", " ".join(["word"] * (i + 1)), "no") for i in order],
    )

    def pair_tokens_per_step(curriculum: str | None) -> list[float]:
        seen = []
        config = DPOConfig(epochs=1, batch_size=1, lora_r=4, eval_fraction=0, curriculum=curriculum)
        train_dpo(
            config,
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / str(curriculum),
            on_step=lambda s, t, metrics: seen.append(metrics["num_tokens"]),
        )
        # num_tokens counts the tokens trained so far: one pair per step here
        return [after - before for before, after in zip([0.0, *seen], seen, strict=False)]

    # when
    curriculum = pair_tokens_per_step("length")
    shuffled = pair_tokens_per_step(None)

    # then: the same prompt and rejected reply each time, and one word is one token here
    shortest = curriculum[0]
    assert curriculum == [shortest + i for i in range(6)]
    assert sorted(shuffled) == curriculum
    assert shuffled != curriculum


def test_pairs_with_a_prompt_over_max_prompt_length_are_left_out(tiny_model_dir, tmp_path):
    # given: 4 short prompts and 2 of about 100 tokens, with a 64-token prompt limit
    rows = [_pair(f"Short question {i}?", "yes", "no") for i in range(4)]
    rows += [_pair("word " * 100 + str(i), "yes", "no") for i in range(2)]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    log = []

    # when
    result = train_dpo(
        DPOConfig(max_steps=1, batch_size=2, lora_r=4, eval_fraction=0, max_prompt_length=64),
        dataset_path=path,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "out",
        hooks=Hooks(log=log.append),
    )

    # then
    assert result.metrics["pairs"] == 4.0
    assert "2 of 6 pairs left out: their prompt is longer than max_prompt_length (64 tokens)" in log

    # ... and a file where no prompt fits is refused before training
    with pytest.raises(ValueError, match="every prompt is longer than max_prompt_length"):
        train_dpo(
            DPOConfig(max_prompt_length=8, lora_r=4),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "none",
        )
    assert not (tmp_path / "none").exists()


def test_dpo_learns_a_fixed_preference(tiny_model_dir, yes_no_file, tmp_path):
    # given: the chosen reply is always "yes" and the rejected one always "no"
    config = DPOConfig(
        learning_rate=5e-3, epochs=100, max_steps=20, batch_size=8, lora_r=8, lora_alpha=16
    )
    history = []

    # when
    train_dpo(
        config,
        dataset_path=yes_no_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "adapter",
        on_step=lambda step, total, metrics: history.append(metrics),
    )

    # then: the implicit reward separates the pair ...
    assert history[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert history[-1]["reward_accuracy"] == 1.0
    assert history[-1]["reward_margin"] > 0.02
    assert history[-1]["dpo_loss"] < history[0]["dpo_loss"]

    # ... and the trained policy prefers "yes" over "no" more than the base model does.
    def preference_gap(model, tokenizer) -> float:
        prompt = [{"role": "user", "content": "Question number 99?"}]
        encoded = [
            encode_chat_reply(
                tokenizer,
                prompt,
                [{"role": "assistant", "content": text}],
                max_length=512,
                max_prompt_length=256,
            )
            for text in ("yes", "no")
        ]
        batch = collate(encoded, pad_token_id=tokenizer.pad_token_id, device=model.device)
        with torch.no_grad():
            logps, _ = sequence_logps(model, batch)
        return float(logps[0] - logps[1])

    base_gap = preference_gap(*load_policy(tiny_model_dir))
    trained_model, tokenizer = load_policy(tiny_model_dir, tmp_path / "adapter")
    assert preference_gap(trained_model, tokenizer) > base_gap + 0.2
    [reply] = generate_replies(
        trained_model,
        tokenizer,
        [[{"role": "user", "content": "Question number 7?"}]],
        GenerationParams(max_new_tokens=3, do_sample=False),
    )
    assert reply.text.startswith("yes")


def test_config_from_dict_accepts_known_keys():
    config = DPOConfig.from_dict({"beta": 0.2, "loss_type": "ipo", "max_steps": 10})
    assert (config.beta, config.loss_type, config.max_steps) == (0.2, "ipo", 10)
    assert DPOConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"betta": 0.1}, "unknown DPO config key(s): betta"),
        ({"beta": 0}, "beta must be > 0"),
        ({"beta": -1.0}, "beta must be > 0"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"loss_type": "hinge"}, "loss_type must be one of ['sigmoid', 'ipo']"),
        ({"max_steps": 0}, "max_steps must be null or an integer >= 1"),
        ({"max_prompt_length": 512}, "max_prompt_length must be >= 1 and smaller than max_length"),
        ({"lora_target_modules": []}, "lora_target_modules must be null or a non-empty list"),
        ({"nll_weight": -0.5}, "nll_weight must be >= 0"),
        ({"epochs": True}, "epochs must be an integer"),
    ],
)
def test_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError) as excinfo:
        DPOConfig.from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        (json.dumps({"prompt": [{"role": "user", "content": "hi"}]}), "line 2: missing 'chosen'"),
        (
            json.dumps({**_pair("hi", "a", "b"), "chosen": [{"role": "user", "content": "a"}]}),
            "line 2: 'chosen'[0] has role 'user'",
        ),
        (json.dumps({**_pair("hi", "a", "b"), "prompt": "hi"}), "line 2: 'prompt' must be"),
    ],
)
def test_bad_dataset_line_names_the_line(tiny_model_dir, tmp_path, bad_line, message):
    # given
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_pair("ok", "a", "b")) + "\n" + bad_line + "\n", encoding="utf-8")

    # when / then
    with pytest.raises(ValueError) as excinfo:
        train_dpo(
            DPOConfig(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
        )
    assert message in str(excinfo.value)
    assert not (tmp_path / "out").exists()


def test_empty_dataset_is_rejected(tiny_model_dir, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no preference rows"):
        train_dpo(
            DPOConfig(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
        )


def test_reply_tokens_end_with_eos_and_mask_the_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompt = [{"role": "user", "content": "Hi " * 50}]
    reply = [{"role": "assistant", "content": "Hello there, friend"}]

    encoded = encode_chat_reply(tokenizer, prompt, reply, max_length=512, max_prompt_length=256)
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    reply_ids = encoded.input_ids[encoded.prompt_length :]
    assert tokenizer.decode(reply_ids, skip_special_tokens=True) == "Hello there, friend"
    assert encoded.labels[: encoded.prompt_length] == [-100] * encoded.prompt_length

    short = encode_chat_reply(tokenizer, prompt, reply, max_length=24, max_prompt_length=20)
    assert short.prompt_length == 20
    assert len(short.input_ids) == 24
    # The prompt keeps its end (the generation prompt), the reply its start.
    prompt_end = encoded.input_ids[: encoded.prompt_length][-20:]
    assert short.input_ids[:20] == prompt_end
    assert short.input_ids[20:] == reply_ids[:4]


def test_methods_import_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.dpo"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
