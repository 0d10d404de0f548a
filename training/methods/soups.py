"""Rewarded soups: mix two LoRA adapters trained from the same base, exactly.

Ramé et al. 2023, "Rewarded soups: towards Pareto-optimal alignment by interpolating
weights fine-tuned on diverse rewards", https://arxiv.org/abs/2306.04488: fine-tune one
expert per objective (helpful, harmless, ...) from a shared initialisation, then serve
``lambda * theta_a + (1 - lambda) * theta_b`` for a user-chosen ``lambda``.

For LoRA experts the interpolation is done in weight space without merging into the
base, by peft: ``PeftModel.add_weighted_adapter(combination_type="cat")`` stacks
``w_i * s_i * A_i`` and concatenates the ``B_i`` (``s_i`` each adapter's scaling, zero
padding where a module is in one adapter only) into an adapter of rank ``r_a + r_b`` and
scaling 1, whose delta is exactly ``w * delta_W_a + (1 - w) * delta_W_b``. Its merged
weights therefore equal the interpolation of the two experts' merged weights (up to float
rounding). This needs the base model loaded on the CPU (peft injects into it).

Ours, around peft: the checks that make the mix exact and fail clearly (weight in [0, 1],
same base, plain LoRA only, matching module shapes), the linear interpolation of
``modules_to_save`` tensors (peft refuses to combine those), and the folder: a normal peft
adapter folder with adapter A's tokenizer files and ``soup.json`` (the sources and weight),
written atomically, that ``models_registry.engine.ml.load_policy`` loads like any other.

Nothing here imports Django (``training/services.py`` registers the folder as a model
version).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.methods.common import library_versions, write_json

__all__ = ["SoupResult", "mix_adapters"]

PAPER = "https://arxiv.org/abs/2306.04488"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SOUP_FILE = "soup.json"
TOKENIZER_FILES = (
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# peft saves a LoRA module's factors as "<prefix><module path>.lora_A.weight" (linear,
# conv) or "...lora_embedding_A" (embeddings); A's rank is its dim 0, B's its dim 1.
PEFT_PREFIX = "base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<factor>lora_(?:embedding_)?[AB])(?:\.weight)?$")
# Config fields of LoRA variants whose update is not s * B @ A, or whose scaling is not
# alpha / r per module: a soup of those would not be exact, so it is refused.
UNSUPPORTED_FIELDS = (
    "use_dora",
    "lora_bias",
    "use_qalora",
    "use_bdlora",
    "alpha_pattern",
    "target_parameters",
    "alora_invocation_tokens",
    "arrow_config",
    "kasa_config",
    "monteclora_config",
    "velora_config",
)
PLAIN_INITS = (True, False, "gaussian", "orthogonal")
# Fields that must agree for the two adapters to describe deltas of the same modules.
SHARED_FIELDS = ("peft_type", "task_type", "revision", "fan_in_fan_out", "layer_replication")


@dataclass
class SoupResult:
    """The mixed adapter folder and what it holds.

    ``weight`` is adapter A's share; ``rank`` and ``lora_alpha`` are the new adapter's;
    ``metrics`` holds the same figures as floats for the run page (a soup trains nothing,
    so ``steps`` is 0).
    """

    output_dir: Path
    weight: float
    rank: int
    lora_alpha: float
    metrics: dict[str, float]
    library_versions: dict[str, str] = field(default_factory=dict)
    steps: int = 0


@dataclass
class _LoraFactors:
    a_key: str
    b_key: str
    a: torch.Tensor
    b: torch.Tensor

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass
class _Adapter:
    path: Path
    label: str
    config: dict[str, Any]
    modules: dict[str, _LoraFactors]
    other: dict[str, torch.Tensor]


def mix_adapters(
    adapter_a: Path, adapter_b: Path, *, weight: float, output_dir: Path
) -> SoupResult:
    """Write the rewarded soup ``weight * A + (1 - weight) * B`` as a LoRA adapter folder.

    The folder holds ``adapter_config.json`` (rank ``r_a + r_b``, alpha equal to the
    rank, target modules named by path), ``adapter_model.safetensors``, adapter A's
    tokenizer files when it has them, and ``soup.json`` recording both sources (path and
    SHA-256 of their weights), the weight and the library versions. Merged into the base,
    the mix equals ``weight * merged(A) + (1 - weight) * merged(B)`` for every weight
    tensor: a module only one adapter trains counts as a zero delta in the other, and
    non-LoRA tensors (``modules_to_save``) are interpolated linearly.

    Raises ``ValueError`` with a clear message, and writes nothing, for a weight outside
    [0, 1], a missing or non-LoRA folder, adapters of different base models or task
    types, LoRA variants that a soup cannot represent exactly (DoRA, ...), non-LoRA
    tensors that only one adapter has, or an ``output_dir`` that exists and is not
    empty. ``output_dir`` appears complete or not at all.
    """
    weight = _checked_weight(weight)
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    first = _read_adapter(Path(adapter_a), "adapter A")
    second = _read_adapter(Path(adapter_b), "adapter B")
    _check_compatible(first, second)

    tensors, rank = _mixed_lora_tensors(first, second, weight=weight)
    alpha = rank  # peft's combined adapter has scaling alpha / r = 1
    tensors.update(_mixed_other_tensors(first, second, weight=weight))
    config = _mixed_config(first, second, rank=rank, alpha=alpha)
    counts = _module_counts(first, second)
    record = _soup_record(first, second, weight=weight, rank=rank, alpha=alpha, counts=counts)
    _write_folder(output_dir, first, config=config, tensors=tensors, record=record)
    return SoupResult(
        output_dir=output_dir,
        weight=weight,
        rank=rank,
        lora_alpha=float(alpha),
        metrics={
            "weight": weight,
            "lora_r": float(rank),
            "lora_alpha": float(alpha),
            **{f"modules_{key}": float(value) for key, value in counts.items()},
        },
        library_versions=record["library_versions"],
    )


# --- Checks and reading -----------------------------------------------------------------


def _checked_weight(weight: Any) -> float:
    ok = isinstance(weight, int | float) and not isinstance(weight, bool)
    if not ok or not math.isfinite(weight) or not 0 <= weight <= 1:
        raise ValueError(f"weight must be a number between 0 and 1 (A's share), got {weight!r}")
    return float(weight)


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"output folder {output_dir} already exists and is not empty")


def _read_adapter(path: Path, label: str) -> _Adapter:
    """Read and check one peft LoRA folder (config and tensors, on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_dir():
        raise ValueError(f"{label}: folder {path} does not exist")
    config_path, weights_path = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not config_path.is_file():
        raise ValueError(f"{label}: {path} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{label}: {config_path} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        found = config.get("peft_type") if isinstance(config, dict) else None
        raise ValueError(f"{label}: {path} is not a LoRA adapter (peft_type {found!r})")
    _check_plain_lora(config, label)
    if not weights_path.is_file():
        raise ValueError(f"{label}: {path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{label}: {weights_path} is not a readable safetensors file") from exc
    modules, other = _split_tensors(state, config, label)
    if not modules:
        raise ValueError(f"{label}: {weights_path} holds no LoRA weights")
    return _Adapter(path=path, label=label, config=config, modules=modules, other=other)


def _check_plain_lora(config: dict[str, Any], label: str) -> None:
    for name in UNSUPPORTED_FIELDS:
        if config.get(name):
            raise ValueError(
                f"{label} uses {name}={config[name]!r}; a soup mixes plain LoRA adapters only"
            )
    init = config.get("init_lora_weights", True)
    if init not in PLAIN_INITS:
        raise ValueError(
            f"{label} was initialised with init_lora_weights={init!r}, which changes the "
            "base weights; a soup mixes plain LoRA adapters only"
        )
    alpha, rank = config.get("lora_alpha"), config.get("r")
    for name, value in (("lora_alpha", alpha), ("r", rank)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{label}: {ADAPTER_CONFIG} needs a positive {name}, got {value!r}")


def _split_tensors(
    state: dict[str, torch.Tensor], config: dict[str, Any], label: str
) -> tuple[dict[str, _LoraFactors], dict[str, torch.Tensor]]:
    """Group the LoRA factors by module path; everything else is a non-LoRA tensor."""
    factors: dict[str, dict[str, str]] = {}
    other = {}
    for key in state:
        match = LORA_KEY.match(key)
        if match is None:
            other[key] = state[key]
            continue
        if not key.startswith(PEFT_PREFIX):
            raise ValueError(f"{label}: unexpected tensor name {key!r} (no {PEFT_PREFIX!r})")
        side = match["factor"][-1]
        factors.setdefault(match["module"][len(PEFT_PREFIX) :], {})[side] = key
    modules = {}
    for module, keys in factors.items():
        if set(keys) != {"A", "B"}:
            raise ValueError(f"{label}: module {module} lacks its lora_A or lora_B weight")
        a, b = state[keys["A"]], state[keys["B"]]
        if a.ndim < 2 or b.ndim < 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"{label}: module {module} has mismatched LoRA shapes "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        modules[module] = _LoraFactors(
            a_key=keys["A"],
            b_key=keys["B"],
            a=a,
            b=b,
        )
    return modules, other


def _same_base(first: _Adapter, second: _Adapter) -> bool:
    base_a = first.config.get("base_model_name_or_path")
    base_b = second.config.get("base_model_name_or_path")
    if base_a == base_b:
        return True
    # The same local folder may be written two ways (relative, symlinked).
    if isinstance(base_a, str) and isinstance(base_b, str) and base_a and base_b:
        path_a, path_b = Path(base_a), Path(base_b)
        return path_a.exists() and path_b.exists() and path_a.resolve() == path_b.resolve()
    return False


def _outer_shape(factors: _LoraFactors) -> tuple:
    """What two adapters must share for a module: factor names and every dimension of
    A and B except the rank."""
    b_shape = factors.b.shape
    return (factors.a_key, factors.b_key, factors.a.shape[1:], b_shape[:1] + b_shape[2:])


def _check_compatible(first: _Adapter, second: _Adapter) -> None:
    if not _same_base(first, second):
        raise ValueError(
            "adapters were trained on different base models: "
            f"{first.config.get('base_model_name_or_path')!r} (A) and "
            f"{second.config.get('base_model_name_or_path')!r} (B); a soup mixes runs "
            "from the same base"
        )
    for name in SHARED_FIELDS:
        if first.config.get(name) != second.config.get(name):
            raise ValueError(
                f"adapters differ in {name}: {first.config.get(name)!r} (A) and "
                f"{second.config.get(name)!r} (B)"
            )
    for name in sorted(set(first.modules) & set(second.modules)):
        if _outer_shape(first.modules[name]) != _outer_shape(second.modules[name]):
            raise ValueError(f"adapters disagree on the kind or shape of module {name}")
    only = sorted(set(first.other) ^ set(second.other))
    if only:
        owner = "A" if only[0] in first.other else "B"
        raise ValueError(
            f"only adapter {owner} has the non-LoRA tensor {only[0]!r} (modules_to_save); a "
            "soup interpolates non-LoRA tensors only when both adapters have them"
        )
    for key in sorted(first.other):
        if first.other[key].shape != second.other[key].shape:
            raise ValueError(f"adapters disagree on the shape of non-LoRA tensor {key!r}")


# --- Mixing ---------------------------------------------------------------------------


def _module_names(first: _Adapter, second: _Adapter) -> list[str]:
    return list(first.modules) + [name for name in second.modules if name not in first.modules]


def _module_counts(first: _Adapter, second: _Adapter) -> dict[str, int]:
    a, b = set(first.modules), set(second.modules)
    return {"both": len(a & b), "only_a": len(a - b), "only_b": len(b - a)}


def _lora_config(adapter: _Adapter) -> Any:
    """The adapter's peft config with its modules named by path (so that the two configs'
    target sets are of one type and peft can join them) and no ``modules_to_save`` (peft
    refuses to combine those; we interpolate them ourselves)."""
    from dataclasses import replace

    from peft import LoraConfig

    config = LoraConfig.from_pretrained(str(adapter.path))
    return replace(
        config,
        target_modules=sorted(adapter.modules),
        layers_to_transform=None,
        layers_pattern=None,
        exclude_modules=None,
        modules_to_save=None,
        inference_mode=True,
    )


def _load_base(first: _Adapter) -> Any:
    from transformers import AutoModelForCausalLM

    base = first.config.get("base_model_name_or_path")
    try:
        return AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the adapters' base model {base!r}: {exc}") from exc


def _mixed_lora_tensors(
    first: _Adapter, second: _Adapter, *, weight: float
) -> tuple[dict[str, torch.Tensor], int]:
    """peft's ``cat`` combination of the two adapters, as saved tensors and its rank.

    peft stacks ``weight_i * s_i * A_i`` and concatenates the ``B_i`` (zero-padded where a
    module is in one adapter only) under scaling ``alpha / r = 1``, so the combined delta
    is exactly ``w * dW_a + (1 - w) * dW_b``.
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    model = get_peft_model(_load_base(first), _lora_config(first), adapter_name="source_a")
    model.add_adapter("source_b", _lora_config(second))
    for name, adapter in (("source_a", first), ("source_b", second)):
        state = {}
        for factors in adapter.modules.values():
            state[factors.a_key], state[factors.b_key] = factors.a, factors.b
        loaded = set_peft_model_state_dict(model, state, adapter_name=name)
        if loaded.unexpected_keys:
            raise ValueError(f"{adapter.label}: peft did not place {loaded.unexpected_keys[0]!r}")
    model.add_weighted_adapter(
        adapters=["source_a", "source_b"],
        weights=[weight, 1.0 - weight],
        adapter_name="soup",
        combination_type="cat",
    )
    tensors = get_peft_model_state_dict(model, adapter_name="soup")
    tensors = {key: value.detach().float().contiguous() for key, value in tensors.items()}
    return tensors, model.peft_config["soup"].r


def _mixed_other_tensors(
    first: _Adapter, second: _Adapter, *, weight: float
) -> dict[str, torch.Tensor]:
    """Linear interpolation of the full tensors both adapters carry (modules_to_save)."""
    tensors = {}
    for key, a in first.other.items():
        b = second.other[key]
        if not (a.is_floating_point() and b.is_floating_point()):
            if not torch.equal(a, b):
                raise ValueError(f"adapters differ in the non-float tensor {key!r}")
            tensors[key] = a
            continue
        mixed = weight * a.float() + (1.0 - weight) * b.float()
        tensors[key] = mixed.to(torch.promote_types(a.dtype, b.dtype)).contiguous()
    return tensors


def _mixed_config(first: _Adapter, second: _Adapter, *, rank: int, alpha: float) -> dict[str, Any]:
    """Adapter A's config with the soup's rank and alpha and its modules named by path.

    Naming every module by its full path keeps the target set exact whatever each
    source used (``all-linear``, a regex, ``layers_to_transform``): peft matches a
    target equal to a module's path.
    """
    config = json.loads(json.dumps(first.config))
    modules_to_save = first.config.get("modules_to_save") or second.config.get("modules_to_save")
    config.update(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(_module_names(first, second)),
        rank_pattern={},
        alpha_pattern={},
        use_rslora=False,
        layers_to_transform=None,
        layers_pattern=None,
        exclude_modules=None,
        modules_to_save=modules_to_save,
        init_lora_weights=True,
        inference_mode=True,
    )
    return config


# --- Writing ----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_record(adapter: _Adapter, share: float) -> dict[str, Any]:
    return {
        "path": str(adapter.path),
        "weight": share,
        "adapter_sha256": _sha256(adapter.path / ADAPTER_WEIGHTS),
        "r": adapter.config["r"],
        "lora_alpha": adapter.config["lora_alpha"],
        "modules": len(adapter.modules),
    }


def _soup_record(
    first: _Adapter,
    second: _Adapter,
    *,
    weight: float,
    rank: int,
    alpha: float,
    counts: dict[str, int],
) -> dict[str, Any]:
    return {
        "method": "soup",
        "paper": PAPER,
        "weight": weight,
        "base_model_name_or_path": first.config.get("base_model_name_or_path"),
        "sources": [_source_record(first, weight), _source_record(second, 1.0 - weight)],
        "r": rank,
        "lora_alpha": alpha,
        "modules": counts,
        "library_versions": library_versions(),
    }


def _write_folder(
    output_dir: Path,
    first: _Adapter,
    *,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    record: dict[str, Any],
) -> None:
    """Write into a temporary sibling, then rename it into place (an empty
    ``output_dir`` is replaced), so a failure leaves no partial folder behind."""
    from safetensors.torch import save_file

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_json(staging / ADAPTER_CONFIG, config)
        if (first.path / "tokenizer_config.json").is_file():
            for name in TOKENIZER_FILES:
                if (first.path / name).is_file():
                    shutil.copy2(first.path / name, staging / name)
        write_json(staging / SOUP_FILE, record)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
