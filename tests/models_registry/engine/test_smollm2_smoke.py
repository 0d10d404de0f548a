"""Smoke tests on the real SmolLM2-135M-Instruct (converted from the shipped GGUF once)."""

from __future__ import annotations

import json

import pytest

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)

pytestmark = pytest.mark.smoke


def test_converted_model_has_no_quantization_config(smollm2_model_dir):
    verify_artifact(smollm2_model_dir)
    config = json.loads((smollm2_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert (smollm2_model_dir / "model.safetensors").is_file()
    tokenizer_config = json.loads((smollm2_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["pad_token"] is not None


def test_smollm2_knows_the_capital_of_france(smollm2_model_dir):
    # given
    model, tokenizer = load_policy(smollm2_model_dir)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )

    # when
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "What is the capital of France?"}]],
        GenerationParams(max_new_tokens=24, do_sample=False),
    )

    # then
    assert "Paris" in reply.text
    assert reply.finished


def test_conversion_is_idempotent(smollm2_model_dir):
    from models_registry.engine.ml import convert_gguf_to_safetensors, smollm2_gguf_path

    before = (smollm2_model_dir / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf_to_safetensors(smollm2_gguf_path(), smollm2_model_dir) == smollm2_model_dir
    assert (smollm2_model_dir / "model.safetensors").stat().st_mtime_ns == before
