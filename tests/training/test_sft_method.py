"""training.methods.sft on a tiny random Llama, CPU only, no Django."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)
from training.methods.common import IGNORE_INDEX, Hooks, holdout_split, prompt_key
from training.methods.sft import SFTConfig, TrainingCancelled, load_sft_examples, train_sft

REPO_ROOT = Path(__file__).resolve().parents[2]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _all_forms(i: int) -> dict:
    """Row i in one of the three accepted forms, in turn."""
    prompt, reply = _user(f"Tell me about {i}."), _assistant(f"{i} is a number.")
    if i % 3 == 0:
        return {"messages": prompt + reply}
    if i % 3 == 1:
        return {"prompt": prompt, "completion": reply}
    return {"prompt": prompt, "chosen": reply, "rejected": _assistant("No."), "margin": 2}


@pytest.fixture
def sft_file(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "sft.jsonl", [_all_forms(i) for i in range(6)])


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def _chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False) -> list:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _greedy(model, tokenizer, prompt: str, tokens: int = 3) -> str:
    [reply] = generate_replies(
        model, tokenizer, [_user(prompt)], GenerationParams(max_new_tokens=tokens, do_sample=False)
    )
    return reply.text


def test_train_sft_saves_a_loadable_adapter(tiny_model_dir, sft_file, tmp_path):
    # given: 6 rows in the three forms, a third of the prompts held out
    config = SFTConfig(
        learning_rate=1e-3, epochs=2, batch_size=2, lora_r=4, lora_alpha=8, eval_fraction=0.3
    )
    train, held_out = holdout_split(
        [prompt_key(_user(f"Tell me about {i}.")) for i in range(6)], fraction=0.3, seed=0
    )
    steps_seen = []
    output_dir = tmp_path / "adapter"

    # when
    result = train_sft(
        config,
        dataset_path=sft_file,
        base_model_path=tiny_model_dir,
        output_dir=output_dir,
        hooks=Hooks(on_step=lambda step, total, metrics: steps_seen.append((step, total, metrics))),
    )

    # then: ceil(len(train) / 2) steps per epoch, two epochs
    expected_steps = 2 * math.ceil(len(train) / 2)
    assert (len(train), len(held_out)) == (4, 2)
    assert result.steps == expected_steps
    assert [step for step, _, _ in steps_seen] == list(range(1, expected_steps + 1))
    assert {total for _, total, _ in steps_seen} == {expected_steps}
    for _, _, metrics in steps_seen:
        assert {"loss", "learning_rate", "num_tokens", "mean_token_accuracy"} <= metrics.keys()
        assert all(math.isfinite(value) for value in metrics.values())
    tokens_seen = [metrics["num_tokens"] for _, _, metrics in steps_seen]
    assert tokens_seen == sorted(tokens_seen) and tokens_seen[0] > 0
    assert steps_seen[-1][2]["loss"] < steps_seen[0][2]["loss"]
    assert result.metrics["eval_rows"] == 2.0
    assert result.metrics["rows"] == 4.0
    assert math.isfinite(result.metrics["eval_loss"])
    assert result.metrics["eval_perplexity"] == pytest.approx(math.exp(result.metrics["eval_loss"]))

    assert (output_dir / "adapter_config.json").is_file()
    assert (output_dir / "adapter_model.safetensors").is_file()
    verify_artifact(output_dir)
    record = json.loads((output_dir / "training_result.json").read_text())
    assert (record["method"], record["steps"], record["seed"]) == ("sft", expected_steps, 0)
    assert record["config"]["learning_rate"] == 1e-3
    assert record["metrics"]["eval_loss"] == result.metrics["eval_loss"]
    assert result.library_versions == record["library_versions"]

    model, tokenizer = load_policy(tiny_model_dir, output_dir)
    [reply] = generate_replies(
        model, tokenizer, [_user("Hello")], GenerationParams(max_new_tokens=4, do_sample=False)
    )
    assert 1 <= reply.completion_tokens <= 4


def test_full_fine_tuning_writes_a_full_model(tiny_model_dir, sft_file, tmp_path):
    # given
    config = SFTConfig(learning_rate=1e-3, max_steps=2, batch_size=2, lora_r=0, eval_fraction=0)
    output_dir = tmp_path / "full"

    # when
    result = train_sft(
        config, dataset_path=sft_file, base_model_path=tiny_model_dir, output_dir=output_dir
    )

    # then: a whole model folder whose weights moved, loadable as a base model
    assert result.steps == 2
    assert (output_dir / "config.json").is_file()
    assert (output_dir / "model.safetensors").is_file()
    assert not (output_dir / "adapter_config.json").exists()
    verify_artifact(output_dir)
    trained = load_file(output_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert trained.keys() == base.keys()
    assert not torch.equal(
        trained["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"]
    )
    model, tokenizer = load_policy(output_dir)
    [reply] = generate_replies(
        model, tokenizer, [_user("Hello")], GenerationParams(max_new_tokens=4, do_sample=False)
    )
    assert 1 <= reply.completion_tokens <= 4


def test_resumed_run_ends_with_the_uninterrupted_weights(tiny_model_dir, sft_file, tmp_path):
    # given: 6 rows, batches of 2, 2 epochs -> 6 steps, a checkpoint after every step
    config = SFTConfig(
        learning_rate=1e-3, epochs=2, batch_size=2, lora_r=4, eval_fraction=0, checkpoint_every=1
    )
    checkpoints = tmp_path / "checkpoints"
    first_steps, resumed_steps, log = [], [], []

    def run(output_dir: Path, hooks: Hooks):
        return train_sft(
            config,
            dataset_path=sft_file,
            base_model_path=tiny_model_dir,
            output_dir=output_dir,
            hooks=hooks,
        )

    # when: a run cancelled after its second step, then the same run again
    with pytest.raises(TrainingCancelled):
        run(
            tmp_path / "cancelled",
            Hooks(
                on_step=lambda step, total, metrics: first_steps.append(step),
                should_stop=lambda: len(first_steps) >= 2,
                checkpoint_dir=checkpoints,
            ),
        )
    resumed = run(
        tmp_path / "resumed",
        Hooks(
            on_step=lambda step, total, metrics: resumed_steps.append(step),
            log=log.append,
            checkpoint_dir=checkpoints,
        ),
    )
    uninterrupted = run(tmp_path / "uninterrupted", Hooks())

    # then
    assert first_steps == [1, 2]
    assert not (tmp_path / "cancelled").exists()
    assert resumed_steps == [3, 4, 5, 6]
    assert "resuming from checkpoint-2" in log
    assert resumed.steps == uninterrupted.steps == 6
    resumed_weights = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "uninterrupted" / "adapter_model.safetensors")
    assert resumed_weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(resumed_weights[name], tensor, atol=1e-7), name
    assert resumed.metrics["loss"] == pytest.approx(uninterrupted.metrics["loss"], abs=1e-6)


def test_only_reply_tokens_are_labelled(tiny_model_dir, tmp_path):
    # given: a preference row, whose chosen reply is the target
    path = _write_jsonl(
        tmp_path / "pref.jsonl",
        [{"prompt": _user("Is it on?"), "chosen": _assistant("yes"), "rejected": _assistant("no")}],
    )
    tokenizer = _tokenizer(tiny_model_dir)

    # when
    [example] = load_sft_examples(path, tokenizer, max_length=512, max_prompt_length=256)

    # then
    encoded = example.encoded
    prompt_ids = _chat_ids(tokenizer, _user("Is it on?"), add_generation_prompt=True)
    assert encoded.prompt_length == len(prompt_ids)
    assert encoded.labels[: encoded.prompt_length] == [IGNORE_INDEX] * len(prompt_ids)
    reply_labels = encoded.labels[encoded.prompt_length :]
    assert tokenizer.decode(reply_labels) == "yes<|im_end|>"


def test_loss_is_the_token_mean_nll_of_the_replies(tiny_model_dir, tmp_path):
    # given: two rows in one batch; the first step's policy is the base model (LoRA B = 0),
    # in float32 to compare with it exactly
    rows = [(_user("Is it on?"), "yes"), (_user("Name three colours, please."), "red, green, blue")]
    path = _write_jsonl(
        tmp_path / "two.jsonl", [{"messages": prompt + _assistant(text)} for prompt, text in rows]
    )
    config = SFTConfig(max_steps=1, batch_size=2, lora_r=4, eval_fraction=0, mixed_precision="fp32")
    losses = []

    # when
    train_sft(
        config,
        dataset_path=path,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "out",
        hooks=Hooks(on_step=lambda step, total, metrics: losses.append(metrics["loss"])),
    )

    # then: it matches the base model's NLL of the reply tokens only: everything the chat
    # template renders after the prompt ("<|im_end|>" and the newline after it included)
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    reply_nll, reply_tokens, all_nll, all_tokens = 0.0, 0, 0.0, 0
    for prompt, text in rows:
        prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = _chat_ids(tokenizer, prompt + _assistant(text))
        assert tokenizer.decode(full_ids[-2:]) == "<|im_end|>\n"
        assert full_ids[: len(prompt_ids)] == prompt_ids
        with torch.no_grad():
            logits = model(torch.tensor([full_ids])).logits[0, :-1]
        token_nll = F.cross_entropy(logits, torch.tensor(full_ids[1:]), reduction="none")
        reply_nll += float(token_nll[len(prompt_ids) - 1 :].sum())
        reply_tokens += len(full_ids) - len(prompt_ids)
        all_nll += float(token_nll.sum())
        all_tokens += len(full_ids) - 1
    assert losses[0] == pytest.approx(reply_nll / reply_tokens, rel=1e-5)
    assert losses[0] != pytest.approx(all_nll / all_tokens, rel=1e-3)


def test_length_curriculum_trains_short_rows_first(tiny_model_dir, tmp_path):
    # given: rows whose replies grow with i, written in a scrambled order
    order = [4, 0, 5, 2, 1, 3]
    path = _write_jsonl(
        tmp_path / "lengths.jsonl",
        [{"messages": _user("Count.") + _assistant(" ".join(["word"] * (i + 1)))} for i in order],
    )

    def row_tokens_per_step(curriculum: str | None) -> list[float]:
        seen = []
        config = SFTConfig(epochs=1, batch_size=1, lora_r=4, eval_fraction=0, curriculum=curriculum)
        train_sft(
            config,
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / str(curriculum),
            hooks=Hooks(on_step=lambda s, t, metrics: seen.append(metrics["num_tokens"])),
        )
        # num_tokens counts the tokens trained so far: one row per step here
        return [after - before for before, after in zip([0.0, *seen], seen, strict=False)]

    # when
    curriculum = row_tokens_per_step("length")
    shuffled = row_tokens_per_step(None)

    # then: the same prompt each time, and one word is one token here
    shortest = curriculum[0]
    assert curriculum == [shortest + i for i in range(6)]
    assert sorted(shuffled) == curriculum
    assert shuffled != curriculum


def test_rows_are_cut_to_max_length_and_a_prompt_that_fills_it_is_dropped(tiny_model_dir, tmp_path):
    # given: a short row, a row whose reply runs past max_length, a row whose prompt fills it
    long_text = " ".join(["word"] * 80)
    path = _write_jsonl(
        tmp_path / "long.jsonl",
        [
            {"messages": _user("Hi.") + _assistant("Hello.")},
            {"messages": _user("Talk.") + _assistant(long_text)},
            {"messages": _user(long_text) + _assistant("Too late.")},
        ],
    )
    config = SFTConfig(
        max_length=48, max_prompt_length=16, batch_size=1, epochs=1, lora_r=4, eval_fraction=0
    )
    tokens, log = [], []

    # when
    result = train_sft(
        config,
        dataset_path=path,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "out",
        hooks=Hooks(
            on_step=lambda s, t, metrics: tokens.append(metrics["num_tokens"]), log=log.append
        ),
    )

    # then: two rows trained, none longer than max_length; the third is reported
    assert result.steps == 2
    assert result.metrics["rows"] == 2.0
    assert "1 of 3 rows dropped: their prompt alone fills max_length (48 tokens)" in log
    per_row = [tokens[0], tokens[1] - tokens[0]]
    assert max(per_row) == 48
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_sft_learns_a_fixed_answer(tiny_model_dir, tmp_path):
    # given: 16 questions all answered "yes"; a few held out
    path = _write_jsonl(
        tmp_path / "yes.jsonl",
        [{"messages": _user(f"Question {i}?") + _assistant("yes")} for i in range(16)],
    )
    # (the trained reply is "yes<|im_end|>" and the newline the template puts after it: a
    # third of the targets is that newline, which this tiny model also predicts in the prompt,
    # so it takes 1e-2 rather than 5e-3 to make "yes" its first token in 10 steps)
    config = SFTConfig(learning_rate=1e-2, epochs=100, max_steps=10, lora_r=8, lora_alpha=16)
    tokenizer = _tokenizer(tiny_model_dir)
    base_model, _ = load_policy(tiny_model_dir)
    assert not _greedy(base_model, tokenizer, "Question 99?").startswith("yes")
    history = []

    # when
    result = train_sft(
        config,
        dataset_path=path,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "adapter",
        hooks=Hooks(on_step=lambda step, total, metrics: history.append(metrics)),
    )

    # then: the held-out loss fell below the starting loss (a 32-wide tied embedding caps
    # how far) and unseen questions are answered "yes"
    assert result.steps == 10
    assert result.metrics["eval_rows"] >= 1
    assert result.metrics["eval_loss"] < history[0]["loss"] - 0.1
    model, tokenizer = load_policy(tiny_model_dir, tmp_path / "adapter")
    for question in ("Question 99?", "Question 123?", "Question 7?"):
        assert _greedy(model, tokenizer, question).startswith("yes")


def test_config_defaults_and_round_trip():
    config = SFTConfig()
    assert (config.learning_rate, config.epochs, config.lora_r) == (2e-4, 3, 16)
    assert SFTConfig.from_dict(config.to_dict()) == config
    assert SFTConfig.from_dict({"lora_r": 0, "curriculum": "length"}).lora_r == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lr": 0.1}, "unknown SFT config key(s): lr"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lora_r": -1}, "lora_r must be >= 0 (0 trains every weight)"),
        ({"curriculum": "random"}, "curriculum must be null or one of"),
        ({"eval_fraction": 1.0}, "eval_fraction must be in [0, 1)"),
        ({"batch_size": "8"}, "batch_size must be an integer"),
    ],
)
def test_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError) as excinfo:
        SFTConfig.from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ({"text": "hi"}, "line 2: expected 'messages', 'prompt' + 'completion'"),
        ({"messages": _user("hi")}, "line 2: 'messages' must end with an assistant reply"),
        ({"messages": _assistant("hi")}, "line 2: 'messages' must end with an assistant reply"),
        ({"prompt": _user("hi")}, "line 2: 'prompt' without 'completion'"),
        ({"prompt": _user("hi"), "completion": _user("x")}, "line 2: 'completion'[0] has role"),
        ({"prompt": "hi", "completion": _assistant("x")}, "line 2: 'prompt' must be"),
        ({"messages": _user("a") + _assistant("b"), "margin": "big"}, "line 2: 'margin' must be"),
    ],
)
def test_bad_dataset_line_names_the_line(tiny_model_dir, tmp_path, bad_row, message):
    # given
    bad_line = bad_row if isinstance(bad_row, str) else json.dumps(bad_row)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_all_forms(0)) + "\n" + bad_line + "\n", encoding="utf-8")

    # when / then
    with pytest.raises(ValueError) as excinfo:
        train_sft(
            SFTConfig(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
        )
    assert message in str(excinfo.value)
    assert not (tmp_path / "out").exists()


def test_empty_dataset_is_rejected(tiny_model_dir, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no SFT rows"):
        train_sft(
            SFTConfig(), dataset_path=path, base_model_path=tiny_model_dir, output_dir=tmp_path
        )


def test_sft_imports_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.sft"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
