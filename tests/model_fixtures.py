"""Model fixtures shared by the ML tests (a pytest plugin: see tests/conftest.py).

No Django and no database: these fixtures build tiny random models on the fly from the
SmolLM2 tokenizer, and convert the real SmolLM2 GGUF once into a cache folder
(``MODEL_CACHE_DIR`` or ``var/test-models/`` under the repository root) for smoke tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: runs the real SmolLM2-135M model (slow)")


def model_cache_dir() -> Path:
    return Path(os.environ.get("MODEL_CACHE_DIR") or REPO_ROOT / "var" / "test-models")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with SmolLM2's tokenizer (chat template and pad token included)."""
    from models_registry.engine.ml import load_tokenizer_from_gguf, smollm2_gguf_path

    tokenizer = load_tokenizer_from_gguf(smollm2_gguf_path())
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A tiny randomly initialised Llama (2 layers, hidden 32) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct converted to safetensors once and kept between runs."""
    from models_registry.engine.ml import convert_gguf_to_safetensors, smollm2_gguf_path

    return convert_gguf_to_safetensors(
        smollm2_gguf_path(), model_cache_dir() / "SmolLM2-135M-Instruct"
    )


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A reward-model adapter on the tiny Llama, trained two steps to prefer "yes"."""
    import json

    from training.methods.reward import RewardConfig, train_reward

    folder = tmp_path_factory.mktemp("tiny-reward-data")
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(8)
    ]
    data = folder / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    output = folder / "reward"
    config = RewardConfig(
        max_steps=2,
        batch_size=4,
        lora_r=4,
        lora_alpha=8,
        eval_fraction=0.0,
        normalization_prompts=4,
        normalization_max_new_tokens=6,
    )
    train_reward(config, dataset_path=data, base_model_path=tiny_model_dir, output_dir=output)
    return output
