"""training.methods.soups on a tiny random Llama, CPU only, no Django."""

from __future__ import annotations

import json
import math
import shutil
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
from training.methods.soups import SoupResult, mix_adapters

REPO_ROOT = Path(__file__).resolve().parents[2]


def _random_adapter(
    base: Path,
    folder: Path,
    *,
    seed: int,
    r: int,
    alpha: int,
    targets: list[str],
    use_rslora: bool = False,
    modules_to_save: list[str] | None = None,
    with_tokenizer: bool = False,
) -> Path:
    """A LoRA adapter with random A and B (a nonzero delta), saved like a trained run."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        target_modules=targets,
        use_rslora=use_rslora,
        modules_to_save=modules_to_save,
        init_lora_weights=False,
    )
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "modules_to_save.default" in name:
                parameter.normal_()  # the copies start equal to the base: make them differ
    model.save_pretrained(str(folder))
    if with_tokenizer:
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    return folder


def _merged_state(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {key: value.detach().clone() for key, value in merged.state_dict().items()}


def _merged_state_of_base(base: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).state_dict()


def _delta(tensors: dict[str, torch.Tensor], module: str) -> torch.Tensor | float:
    """``B @ A`` of one module of a saved adapter (unscaled), 0 where it has none."""
    a = tensors.get(f"{module}.lora_A.weight")
    return 0.0 if a is None else tensors[f"{module}.lora_B.weight"] @ a


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two adapters of different ranks, scalings (one rsLoRA) and partly different modules,
    both with a trained copy of the norm layers, plus their merged weights."""
    folder = tmp_path_factory.mktemp("soup-sources")
    first = _random_adapter(
        tiny_model_dir,
        folder / "helpful",
        seed=1,
        r=4,
        alpha=8,
        targets=["q_proj", "v_proj", "gate_proj"],
        modules_to_save=["norm"],
        with_tokenizer=True,
    )
    second = _random_adapter(
        tiny_model_dir,
        folder / "harmless",
        seed=2,
        r=8,
        alpha=4,
        targets=["q_proj", "k_proj", "down_proj"],
        use_rslora=True,
        modules_to_save=["norm"],
    )
    merged = (_merged_state(tiny_model_dir, first), _merged_state(tiny_model_dir, second))
    return first, second, merged


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_mix_merges_to_the_interpolated_weights(tiny_model_dir, adapters, tmp_path, weight):
    # given
    first, second, (merged_a, merged_b) = adapters
    base = _merged_state_of_base(tiny_model_dir)

    # when
    result = mix_adapters(first, second, weight=weight, output_dir=tmp_path / "soup")

    # then
    mixed = _merged_state(tiny_model_dir, result.output_dir)
    assert mixed.keys() == merged_a.keys() == merged_b.keys()
    for key, value in mixed.items():
        expected = weight * merged_a[key] + (1 - weight) * merged_b[key]
        assert torch.allclose(value, expected, atol=1e-5), key
    # Both experts really moved the weights, and apart, so the check above means something.
    moved = [k for k in base if not torch.allclose(merged_a[k], merged_b[k], atol=1e-3)]
    assert any("q_proj" in k for k in moved)
    assert any("k_proj" in k for k in moved) and any("gate_proj" in k for k in moved)
    assert any(k.endswith("model.norm.weight") for k in moved)


def test_mix_writes_a_stacked_adapter_that_loads_and_generates(adapters, tiny_model_dir, tmp_path):
    # given
    first, second, _ = adapters
    output_dir = tmp_path / "soup"

    # when
    result = mix_adapters(first, second, weight=0.3, output_dir=output_dir)

    # then
    assert isinstance(result, SoupResult)
    assert result.output_dir == output_dir
    assert (result.weight, result.rank, result.lora_alpha, result.steps) == (0.3, 12, 12.0, 0)
    assert result.metrics == {
        "weight": 0.3,
        "lora_r": 12.0,
        "lora_alpha": 12.0,
        "modules_both": 2.0,  # q_proj in each of the 2 layers
        "modules_only_a": 4.0,
        "modules_only_b": 4.0,
    }
    verify_artifact(output_dir)
    config = json.loads((output_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (12, 12, False)
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert len(config["target_modules"]) == 10
    assert "model.layers.0.self_attn.q_proj" in config["target_modules"]
    from safetensors.torch import load_file

    tensors = load_file(str(output_dir / "adapter_model.safetensors"))
    sources = [load_file(str(folder / "adapter_model.safetensors")) for folder in (first, second)]
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert tensors[f"{q}.lora_A.weight"].shape == (12, 32)
    assert tensors[f"{q}.lora_B.weight"].shape == (32, 12)
    # Every module's delta is the interpolation of the experts' deltas: the soup's scaling
    # is 12 / 12 = 1, A's 8 / 4 = 2, B's (rsLoRA) 4 / sqrt(8); a module one expert lacks
    # counts as a zero delta there.
    modules = {key.rsplit(".lora_", 1)[0] for key in tensors if ".lora_" in key}
    assert len(modules) == 10
    for module in modules:
        expected = sum(
            share * scaling * _delta(source, module)
            for source, share, scaling in (
                (sources[0], 0.3, 2.0),
                (sources[1], 0.7, 4 / math.sqrt(8)),
            )
        )
        assert torch.allclose(_delta(tensors, module), expected, atol=1e-5), module
    assert (output_dir / "tokenizer_config.json").is_file()
    soup = json.loads((output_dir / "soup.json").read_text())
    assert soup["weight"] == 0.3
    assert [s["path"] for s in soup["sources"]] == [str(first), str(second)]
    assert [s["weight"] for s in soup["sources"]] == [0.3, pytest.approx(0.7)]
    assert all(len(s["adapter_sha256"]) == 64 for s in soup["sources"])
    assert soup["modules"] == {"both": 2, "only_a": 4, "only_b": 4}
    assert set(soup["library_versions"]) == {"torch", "transformers", "peft"}

    model, tokenizer = load_policy(tiny_model_dir, output_dir)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello"}]],
        GenerationParams(max_new_tokens=4, do_sample=False),
    )
    assert isinstance(reply.text, str)
    assert 1 <= reply.completion_tokens <= 4


def test_mix_into_an_existing_empty_folder(adapters, tmp_path):
    # given: the worker hands over a fresh empty work folder
    first, second, _ = adapters
    output_dir = tmp_path / "work"
    output_dir.mkdir()

    # when
    mix_adapters(first, second, weight=0.5, output_dir=output_dir)

    # then
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "chat_template.jinja",
        "soup.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize(("weight", "expert"), [(1.0, 0), (0.0, 1)])
def test_mix_at_an_end_weight_answers_like_that_expert(
    adapters, tiny_model_dir, tmp_path, weight, expert
):
    # given
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    first, second, _ = adapters
    inputs = torch.tensor([[1, 5, 9, 13, 17, 21]])

    def logits(adapter: Path) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
        with torch.no_grad():
            return model(input_ids=inputs).logits

    # when
    result = mix_adapters(first, second, weight=weight, output_dir=tmp_path / "soup")

    # then
    mixed, expected = logits(result.output_dir), logits((first, second)[expert])
    other = logits((first, second)[1 - expert])
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert not torch.allclose(mixed, other, atol=1e-3)  # the experts answer differently


@pytest.mark.parametrize("weight", [-0.1, 1.5, math.nan, True, "0.5"])
def test_mix_refuses_a_weight_outside_zero_one(adapters, tmp_path, weight):
    # given
    first, second, _ = adapters

    # when / then
    with pytest.raises(ValueError, match="weight must be a number between 0 and 1"):
        mix_adapters(first, second, weight=weight, output_dir=tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def _copy_with_config(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "adapter_config.json").read_text())
    config.update(changes)
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def test_mix_refuses_adapters_of_different_bases(adapters, tmp_path):
    # given
    first, second, _ = adapters
    other = _copy_with_config(second, tmp_path / "other", base_model_name_or_path="gpt2")

    # when / then
    with pytest.raises(ValueError, match="trained on different base models: .*'gpt2' \\(B\\)"):
        mix_adapters(first, other, weight=0.5, output_dir=tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_mix_refuses_missing_and_non_lora_folders(adapters, tiny_model_dir, tmp_path):
    # given
    first, second, _ = adapters
    no_weights = tmp_path / "no-weights"
    shutil.copytree(second, no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    not_lora = _copy_with_config(second, tmp_path / "ia3", peft_type="IA3")
    cases = [
        (tmp_path / "missing", "adapter B: folder .*missing does not exist"),
        (tiny_model_dir, "adapter B: .* is not a LoRA adapter folder \\(no adapter_config.json\\)"),
        (no_weights, "has adapter_config.json but no adapter_model.safetensors"),
        (not_lora, "is not a LoRA adapter \\(peft_type 'IA3'\\)"),
    ]

    for folder, message in cases:
        # when / then
        with pytest.raises(ValueError, match=message):
            mix_adapters(first, folder, weight=0.5, output_dir=tmp_path / "soup")
        assert not (tmp_path / "soup").exists()


def test_mix_refuses_lora_variants_it_cannot_represent(adapters, tmp_path):
    # given
    first, second, _ = adapters
    dora = _copy_with_config(second, tmp_path / "dora", use_dora=True)

    # when / then
    with pytest.raises(ValueError, match="adapter B uses use_dora=True; a soup mixes plain LoRA"):
        mix_adapters(first, dora, weight=0.5, output_dir=tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_mix_refuses_non_lora_tensors_only_one_adapter_has(adapters, tiny_model_dir, tmp_path):
    # given: the same LoRA modules, but no trained copy of the norm layers
    first, _, _ = adapters
    plain = _random_adapter(
        tiny_model_dir, tmp_path / "plain", seed=3, r=2, alpha=2, targets=["q_proj"]
    )

    # when / then
    with pytest.raises(ValueError, match="only adapter A has the non-LoRA tensor .*norm"):
        mix_adapters(first, plain, weight=0.5, output_dir=tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_mix_refuses_a_non_empty_output_folder(adapters, tmp_path):
    # given
    first, second, _ = adapters
    output_dir = tmp_path / "soup"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")

    # when / then
    with pytest.raises(ValueError, match="already exists and is not empty"):
        mix_adapters(first, second, weight=0.5, output_dir=output_dir)
    assert [p.name for p in output_dir.iterdir()] == ["keep.txt"]


def test_soups_import_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.soups"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
