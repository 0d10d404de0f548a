"""models_registry.engine.ml: artifact checks and batched generation on a tiny random Llama."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models_registry.engine.ml import (
    ArtifactError,
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Write a very long story about a dragon who learns to sing."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}],
    [{"role": "user", "content": "2 + 2 = ?"}],
]


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    save_file({"lora_A.weight": torch.zeros(4, 8)}, str(folder / "adapter_model.safetensors"))
    return folder


def test_verify_artifact_accepts_a_full_model(tiny_model_dir):
    verify_artifact(tiny_model_dir)


def test_verify_artifact_accepts_an_adapter(adapter_dir):
    verify_artifact(adapter_dir)


def test_verify_artifact_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        verify_artifact(tmp_path / "nope")


def test_verify_artifact_rejects_an_empty_folder(tmp_path):
    with pytest.raises(ArtifactError, match="neither a model"):
        verify_artifact(tmp_path)


def test_verify_artifact_rejects_config_without_weights(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    with pytest.raises(ArtifactError, match="no .safetensors weights"):
        verify_artifact(folder)


def test_verify_artifact_rejects_truncated_weights(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a"')
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        verify_artifact(folder)


def test_verify_artifact_rejects_corrupt_config(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        verify_artifact(folder)


def test_verify_artifact_rejects_adapter_without_weights(adapter_dir):
    (adapter_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="no adapter_model.safetensors"):
        verify_artifact(adapter_dir)


def test_verify_artifact_rejects_missing_shard(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="missing weight shard"):
        verify_artifact(folder)


def test_load_policy_is_cached_and_ready_for_generation(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir)
    assert load_policy(str(tiny_model_dir))[0] is model
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert tokenizer.chat_template


def test_greedy_generation_does_not_depend_on_batch_size(tiny_model_dir):
    # given
    model, tokenizer = load_policy(tiny_model_dir)
    params = GenerationParams(max_new_tokens=12, do_sample=False)

    # when
    one_by_one = generate_replies(model, tokenizer, CONVERSATIONS, params, batch_size=1)
    batched = generate_replies(model, tokenizer, CONVERSATIONS, params, batch_size=4)

    # then
    assert len(batched) == len(CONVERSATIONS)
    assert [reply.text for reply in batched] == [reply.text for reply in one_by_one]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in one_by_one]
    for reply in batched:
        assert 1 <= reply.completion_tokens <= 12
        if not reply.finished:
            assert reply.completion_tokens == 12
        assert reply.seconds > 0
        assert "<|im_end|>" not in reply.text


def test_sampling_is_reproducible_with_a_seed(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir)
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=7)

    first = generate_replies(model, tokenizer, CONVERSATIONS, params, batch_size=2)
    second = generate_replies(model, tokenizer, CONVERSATIONS, params, batch_size=2)
    other_seed = generate_replies(
        model,
        tokenizer,
        CONVERSATIONS,
        GenerationParams(max_new_tokens=10, temperature=1.0, seed=8),
        batch_size=2,
    )

    assert [r.text for r in first] == [r.text for r in second]
    assert [r.text for r in first] != [r.text for r in other_seed]


def test_generation_params_round_trip_and_validation():
    params = GenerationParams(max_new_tokens=32, temperature=1, seed=3)
    assert params.as_dict() == {
        "max_new_tokens": 32,
        "temperature": 1.0,
        "top_p": 0.95,
        "do_sample": True,
        "seed": 3,
    }
    assert GenerationParams(**params.as_dict()) == params
    with pytest.raises(ValueError, match="temperature must be > 0"):
        GenerationParams(temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)


def test_the_engine_imports_without_django():
    code = (
        "import sys; sys.modules['django'] = None; import models_registry.engine.ml, "
        "models_registry.engine.reward, models_registry.engine.serving, models_registry.engine.hub"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
