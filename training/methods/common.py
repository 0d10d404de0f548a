"""Helpers shared by the training methods: data reading, configs, the held-out split, LoRA,
artifacts, hooks, and the loop RRHF and PPO still run on (the others use TRL's trainers
through ``trl_runtime``).

Plain Python on torch and transformers: nothing here may import Django, because the
methods run inside a Celery worker through ``training/tasks.py`` and are tested with
Django absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# The engine's devices, tokenizers and chat encoding, used by every method and kept importable
# from here (methods may use the engine; the engine uses nothing of training).
from models_registry.engine.encoding import IGNORE_INDEX as IGNORE_INDEX
from models_registry.engine.encoding import SMOLLM2_CHAT_TEMPLATE as SMOLLM2_CHAT_TEMPLATE
from models_registry.engine.encoding import EncodedReply as EncodedReply
from models_registry.engine.encoding import autocast_for as autocast_for
from models_registry.engine.encoding import chat_prompt_ids as chat_prompt_ids
from models_registry.engine.encoding import collate as collate
from models_registry.engine.encoding import encode_chat_reply as encode_chat_reply
from models_registry.engine.encoding import pick_device as pick_device
from models_registry.engine.encoding import prepare_tokenizer as prepare_tokenizer


class TrainingCancelled(Exception):
    """Raised by a training method when its ``should_stop`` callback asked it to stop."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (when installed) and torch's generators, CUDA included."""
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the methods themselves
        pass
    else:
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trained artifact depends on, for reproducibility records."""
    import peft
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


# --- Data -----------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file.

    Line numbers start at 1. A line that is not a JSON object raises ``ValueError``
    naming the file and line.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name} line {number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path.name} line {number}: expected a JSON object")
            yield number, row


def check_messages(
    value: Any, *, field: str, line: int, roles: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """Validate a conversational field (a non-empty list of {"role", "content"} dicts).

    ``roles`` restricts the allowed roles. Returns the messages reduced to role and
    content; raises ``ValueError`` naming the line and field otherwise.
    """
    where = f"line {line}: {field!r}"
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"{where}[{index}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"{where}[{index}] needs string 'role' and 'content'")
        if roles is not None and role not in roles:
            raise ValueError(f"{where}[{index}] has role {role!r}; expected one of {list(roles)}")
        messages.append({"role": role, "content": content})
    return messages


def read_preference_rows(dataset_path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Validated rows of a JSONL file in TRL's conversational preference form.

    Each line: ``{"prompt": [messages], "chosen": [assistant message], "rejected":
    [assistant message]}`` with optional numbers ``margin`` (preference strength) and
    ``agreement`` (share of labelers agreeing). Returns ``(line, row)`` with messages
    reduced to role and content; raises ``ValueError`` naming the first bad line, or when
    the file holds no rows.
    """
    rows = []
    for line, row in read_jsonl(dataset_path):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise ValueError(f"line {line}: missing {key!r} (expected prompt/chosen/rejected)")
        clean = {
            "prompt": check_messages(row["prompt"], field="prompt", line=line),
            "chosen": check_messages(
                row["chosen"], field="chosen", line=line, roles=("assistant",)
            ),
            "rejected": check_messages(
                row["rejected"], field="rejected", line=line, roles=("assistant",)
            ),
            "margin": optional_number(row, "margin", line=line),
            "agreement": optional_number(row, "agreement", line=line),
        }
        rows.append((line, clean))
    if not rows:
        raise ValueError(f"{Path(dataset_path).name} holds no preference rows")
    return rows


# --- Log-probabilities ----------------------------------------------------------------


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of the log-probabilities of the labelled tokens.

    Returns ``(logps, token_counts)``, both of shape ``(batch,)``. Gradients flow through
    ``logps`` when enabled by the caller.
    """
    labels = batch["labels"]
    width = labels.shape[1]
    # Only positions that predict a labelled token need the (vocabulary-sized) LM head:
    # start at the earliest reply token in the batch. With short replies after long chat
    # prompts this is most of the cost of a step.
    first_label = int((labels != IGNORE_INDEX).int().argmax(dim=1).min())
    start = max(first_label - 1, 0)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        logits_to_keep=width - start,
    ).logits[:, :-1]
    labels = labels[:, start + 1 :]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    logits = logits.float()
    # gather - logsumexp avoids materialising a second vocabulary-sized log_softmax tensor.
    token_logps = logits.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    token_logps = token_logps - torch.logsumexp(logits, dim=-1)
    token_logps = token_logps * mask
    return token_logps.sum(-1), mask.sum(-1)


# --- Configs --------------------------------------------------------------------------


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``: the config validation idiom."""
    if not ok:
        raise ValueError(message)


def _checked_value(name: str, value: Any, annotation: str) -> Any:
    optional = annotation.endswith("| None")
    kind = annotation.removesuffix("| None").strip()
    if value is None:
        require(optional, f"{name} must not be null")
        return None
    suffix = " or null" if optional else ""
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        require(ok and math.isfinite(value), f"{name} must be a number{suffix}")
        return float(value)
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        require(ok, f"{name} must be an integer{suffix}")
        return value
    if kind == "bool":
        require(isinstance(value, bool), f"{name} must be true or false{suffix}")
        return value
    if kind == "str":
        require(isinstance(value, str), f"{name} must be a string{suffix}")
        return value
    if kind == "list[str]":
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        require(ok, f"{name} must be null or a non-empty list of module names")
        return list(value)
    raise TypeError(f"unsupported config annotation {annotation!r} for {name}")


@dataclass
class MethodConfig:
    """Base of every method's config dataclass.

    Field values are type-checked from their annotations (``float``, ``int``, ``bool``,
    ``str``, ``list[str]``, each optionally ``| None``; ints are accepted for floats), then
    ``validate()`` checks ranges. Bad values raise ``ValueError`` with a message naming the
    field, which the web layer shows as is. ``method_name`` names the method in errors.
    """

    method_name = "training"

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = _checked_value(spec.name, getattr(self, spec.name), str(spec.type))
            setattr(self, spec.name, value)
        self.validate()

    def validate(self) -> None:
        """Range checks; subclasses extend and call ``super().validate()``."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build a config from JSON-like data; unknown keys and bad values raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.method_name} config must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.method_name} config key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class RuntimeConfig(MethodConfig):
    """The settings of how a run computes, shared by every config trained on a Trainer.

    - ``mixed_precision="auto"``: bf16 on a CUDA device that has it and on CPUs with
      native bf16 (AVX512-BF16/AMX, as TRL's configs default to), fp16 on older GPUs,
      float32 elsewhere. Master weights stay float32 (autocast), as in transformers.
    - ``gradient_checkpointing``: recompute activations in the backward pass, trading
      about a third more compute for much less memory; off by default (TRL's default is
      on), since LoRA on small models fits without it.
    - ``qlora``: load the base weights in 4 bits (bitsandbytes NF4) under the LoRA adapter;
      CUDA only, refused at run creation elsewhere.
    """

    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    qlora: bool = False

    def validate(self) -> None:
        require(
            self.mixed_precision in PRECISIONS,
            f"mixed_precision must be one of {list(PRECISIONS)}, got {self.mixed_precision!r}",
        )
        require(
            not self.qlora or getattr(self, "lora_r", 1) >= 1,
            "qlora trains a LoRA adapter over 4-bit base weights: set lora_r >= 1",
        )


def cpu_has_bf16() -> bool:
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(setting: str, device: str | None = None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for a ``mixed_precision`` setting on ``device``."""
    import torch

    device = device or pick_device()
    if setting != "auto":
        return setting
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device == "cpu" and cpu_has_bf16() else "fp32"


def agreed(flag: bool) -> bool:
    """The main process's ``flag`` on every rank (itself when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


CURRICULA = ("margin", "agreement", "length")


@dataclass
class TrainingConfig(RuntimeConfig):
    """The optimisation, LoRA, evaluation and checkpoint settings every method shares.

    Subclasses add their own fields and may redeclare these with other defaults.
    ``lora_r=0`` means full fine-tuning (every weight trains) where a method allows it.
    ``eval_fraction`` of the prompts (split by prompt, never across it) is held out for
    the evaluation that runs after training. ``checkpoint_every`` optimizer steps (and at
    the end of each epoch) the trainable weights and optimizer state are written to the
    checkpoint folder, from which an interrupted run resumes. ``curriculum`` orders the
    training rows from easy to hard instead of shuffling them.
    """

    learning_rate: float = 1e-4
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_prompt_length: int = 256
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    seed: int = 0
    warmup_ratio: float = 0.1
    eval_fraction: float = 0.1
    checkpoint_every: int = 50
    curriculum: str | None = None

    def validate(self) -> None:
        super().validate()
        require(self.learning_rate > 0, "learning_rate must be > 0")
        require(self.epochs >= 1, "epochs must be >= 1")
        require(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps must be null or an integer >= 1",
        )
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        require(self.max_length >= 2, "max_length must be >= 2")
        require(
            1 <= self.max_prompt_length < self.max_length,
            "max_prompt_length must be >= 1 and smaller than max_length",
        )
        require(self.lora_r >= 0, "lora_r must be >= 0 (0 trains every weight)")
        require(self.lora_alpha > 0, "lora_alpha must be > 0")
        require(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        require(self.seed >= 0, "seed must be >= 0")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        require(0 <= self.eval_fraction < 1, "eval_fraction must be in [0, 1)")
        require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        require(
            self.curriculum is None or self.curriculum in CURRICULA,
            f"curriculum must be null or one of {list(CURRICULA)}",
        )


# --- Held-out split and curriculum ----------------------------------------------------


def prompt_key(messages: list[dict[str, str]]) -> str:
    """A stable key for a prompt conversation (rows sharing it stay on one side of a split)."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def holdout_split(
    keys: Sequence[str], *, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split row indices into ``(train, held_out)`` by prompt key.

    A key goes to the held-out side when the hash of ``(seed, key)`` falls below
    ``fraction``, so a prompt keeps its side as the dataset grows and rows of one prompt
    never straddle the split. With ``fraction > 0`` at least one key is held out when
    there are two or more keys, and at least one always stays for training.
    """
    if fraction <= 0:
        return list(range(len(keys))), []

    def position(key: str) -> float:
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    positions = {key: position(key) for key in keys}
    held = {key for key, value in positions.items() if value < fraction}
    if not held and len(positions) >= 2:
        held = {min(positions, key=positions.get)}
    if len(held) == len(positions):
        held.discard(max(held, key=positions.get))
    train = [i for i, key in enumerate(keys) if key not in held]
    held_out = [i for i, key in enumerate(keys) if key in held]
    return train, held_out


def curriculum_order(difficulty: Sequence[float]) -> list[int]:
    """Indices from easiest (lowest difficulty) to hardest; ties keep dataset order."""
    return sorted(range(len(difficulty)), key=lambda i: (difficulty[i], i))


# --- Models ---------------------------------------------------------------------------


def lora_config(config: TrainingConfig, *, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )


def load_causal_lm_for_training(
    base_model_path: str | os.PathLike[str], config: TrainingConfig, *, device: str
) -> Any:
    """The base model in float32 on ``device``, wrapped with a fresh LoRA adapter
    (``config.lora_r > 0``) or with every weight trainable (``lora_r == 0``), recomputing
    activations in the backward pass when ``config.gradient_checkpointing`` asks."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model_path), dtype=torch.float32)
    model.to(device)
    if getattr(config, "gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.lora_r == 0:
        return model
    return get_peft_model(model, lora_config(config))


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_artifact(
    model: Any, tokenizer: Any, output_dir: str | os.PathLike[str], record: dict[str, Any]
) -> None:
    """Write the model (adapter or full weights), tokenizer and ``training_result.json``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))
    write_json(output_dir / "training_result.json", record)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary sibling renamed into place)."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


# --- The optimisation loop ------------------------------------------------------------


@dataclass
class Hooks:
    """How a method talks to its caller while it runs.

    ``on_step(step, total_steps, metrics)`` after every optimizer step; ``should_stop()``
    before every step (``True`` raises ``TrainingCancelled``); ``log(message)`` for the
    run log; ``checkpoint_dir`` is where checkpoints go and where a resumed run finds
    its last one (None: no checkpoints).
    """

    on_step: Callable[[int, int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    log: Callable[[str], None] | None = None
    checkpoint_dir: Path | None = None

    def step_done(self, step: int, total: int, metrics: dict[str, float]) -> None:
        if self.on_step is not None:
            self.on_step(step, total, dict(metrics))

    def check_stop(self, what: str = "training") -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(f"{what} cancelled")

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"


def save_checkpoint(
    folder: Path, *, model: Any, optimizer: Any, scheduler: Any, step: int, state: dict
) -> None:
    """Write the trainable weights, optimizer and scheduler state, the step and ``state``
    (method-specific, JSON-like) atomically into ``folder/checkpoint.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    payload = {
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "state": state,
        "torch_rng": torch.get_rng_state(),
    }
    partial = folder / (CHECKPOINT_FILE + ".part")
    torch.save(payload, partial)
    os.replace(partial, folder / CHECKPOINT_FILE)
    write_json(folder / CHECKPOINT_INFO, {"step": step})


def checkpoint_step(folder: Path) -> int:
    """The step of the last complete checkpoint in ``folder`` (0 when there is none),
    read without loading the checkpoint itself."""
    try:
        return int(json.loads((folder / CHECKPOINT_INFO).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def load_checkpoint(
    folder: Path | None, *, model: Any, optimizer: Any, scheduler: Any
) -> tuple[int, dict]:
    """Restore a checkpoint written by ``save_checkpoint``; returns ``(step, state)``.

    ``(0, {})`` when there is none. The weights must match the model's trainable ones.
    """
    path = folder / CHECKPOINT_FILE if folder is not None else None
    if path is None or not path.is_file():
        return 0, {}
    payload = torch.load(path, map_location="cpu", weights_only=False)
    missing = model.load_state_dict(payload["weights"], strict=False).unexpected_keys
    if missing:
        raise ValueError(f"checkpoint does not match the model: unexpected {missing[:3]}")
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"]), dict(payload["state"])


def warmup_linear_schedule(optimizer: Any, *, total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup to the peak learning rate, then linear decay to zero at the last step."""
    warmup_steps = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Optimisation:
    """AdamW over a model's trainable weights, the warmup-then-linear schedule, and their
    checkpoint in ``checkpoint_dir``: what our own loops (RRHF's, PPO's) share.

    ``start`` restores the last checkpoint when there is one and says at which step (0
    when none) and with what method state (``history`` and the like) to go on from.
    """

    model: Any
    optimizer: Any
    scheduler: Any
    checkpoint_dir: Path | None

    @classmethod
    def start(
        cls,
        model: Any,
        *,
        learning_rate: float,
        total_updates: int,
        warmup_ratio: float,
        checkpoint_dir: Path | None,
        eps: float = 1e-8,
    ) -> tuple[Optimisation, int, dict]:
        optimizer = torch.optim.AdamW(
            trainable_parameters(model), lr=learning_rate, weight_decay=0.0, eps=eps
        )
        scheduler = warmup_linear_schedule(
            optimizer, total_steps=total_updates, warmup_ratio=warmup_ratio
        )
        step, state = load_checkpoint(
            checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler
        )
        return cls(model, optimizer, scheduler, checkpoint_dir), step, state

    def save(self, *, step: int, state: dict) -> None:
        """Checkpoint (from the main process only; a no-op without a folder)."""
        if self.checkpoint_dir is not None and is_main_process():
            save_checkpoint(
                self.checkpoint_dir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                step=step,
                state=state,
            )


@dataclass
class LoopResult:
    steps: int
    total_steps: int
    history: list[dict[str, float]]

    @property
    def last(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}

    def mean(self, key: str) -> float:
        values = [m[key] for m in self.history if key in m]
        return sum(values) / len(values) if values else float("nan")


MAX_GRAD_NORM = 1.0

# compute(indices, model) -> (loss, metrics, tokens): the mean loss of those rows, computed
# with ``model`` (the loop's prepared one), as a tensor with gradients, float metrics
# averaged over the rows, and the tokens processed.
ComputeLoss = Callable[[list[int], Any], tuple[torch.Tensor, dict[str, float], int]]

ACCELERATE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def loop_accelerator(config: TrainingConfig) -> Any:
    """accelerate's ``Accelerator`` for our own loop: the run's precision (autocast, with
    loss scaling for fp16), CPU or CUDA, and DDP when started by ``accelerate launch``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # One state per process; a worker runs many trainings, as transformers' Trainer does.
    AcceleratorState._reset_state(reset_partial_state=False)
    device = pick_device()
    return Accelerator(
        mixed_precision=ACCELERATE_PRECISION[resolve_precision(config.mixed_precision, device)],
        cpu=device == "cpu",
    )


def run_training_loop(
    *,
    model: Any,
    config: TrainingConfig,
    rows: Sequence[int],
    compute: ComputeLoss,
    hooks: Hooks,
    difficulty: Sequence[float] | None = None,
) -> LoopResult:
    """Optimise ``model`` over ``rows`` (indices into the method's data) with AdamW, on
    accelerate (``loop_accelerator``): RRHF's loop, whose loss no library ships.

    Every epoch visits the rows in micro-batches of ``config.batch_size`` per process,
    shuffled by ``(seed, epoch)`` or, with ``difficulty`` given, from easiest to hardest;
    under several processes each takes its share of every global micro-batch. Gradients
    of ``gradient_accumulation_steps`` micro-batches are summed (weighted by their row
    counts), averaged over processes, clipped to norm 1 and applied; the learning rate warms
    up then decays linearly. Checkpoints go to ``hooks.checkpoint_dir`` every
    ``checkpoint_every`` steps and at each epoch end (written by the main process); when
    the folder already holds one, training resumes after its step with the same order and
    optimizer state, so the result matches an uninterrupted run. Only the main process
    reports steps; its cancel decision reaches every process. Returns the per-step metrics
    (``loss``, the method's metrics averaged over processes, ``learning_rate``,
    ``tokens_per_s``, ``epoch``).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no training rows left after holding out the evaluation set")
    accelerator = loop_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    size, accumulation = config.batch_size * world, config.gradient_accumulation_steps
    micro_per_epoch = math.ceil(len(rows) / size)
    steps_per_epoch = math.ceil(micro_per_epoch / accumulation)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    trainable = trainable_parameters(model)
    optimisation, step, state = Optimisation.start(
        model,
        learning_rate=config.learning_rate,
        total_updates=total_steps,
        warmup_ratio=config.warmup_ratio,
        checkpoint_dir=hooks.checkpoint_dir,
    )
    scheduler = optimisation.scheduler
    prepared, optimizer = accelerator.prepare(model, optimisation.optimizer)
    history: list[dict[str, float]] = list(state.get("history", []))
    if step:
        hooks.say(f"resumed from the checkpoint at step {step} of {total_steps}")

    def checkpoint() -> None:
        optimisation.save(step=step, state={"history": history})
        accelerator.wait_for_everyone()

    def my_share(batch: list[int]) -> tuple[list[int], float]:
        """This process's rows of a global micro-batch, and the weight of its loss (0 for
        a process left without rows at the end of an epoch: it still takes part)."""
        share = batch[rank * config.batch_size : (rank + 1) * config.batch_size]
        return (share, 1.0) if share else (batch[:1], 0.0)

    prepared.train()
    for epoch in range(config.epochs):
        if difficulty is not None:
            order = [rows[i] for i in curriculum_order([difficulty[r] for r in rows])]
        else:
            generator = torch.Generator().manual_seed(config.seed + epoch)
            order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
        micro_batches = [order[i : i + size] for i in range(0, len(order), size)]
        for index, g in enumerate(range(0, len(micro_batches), accumulation)):
            if epoch * steps_per_epoch + index < step:
                continue  # done before the checkpoint this run resumed from
            if step >= total_steps:
                break
            stop = accelerator.is_main_process and bool(hooks.should_stop and hooks.should_stop())
            if agreed(stop):
                raise TrainingCancelled("training cancelled")
            group = [my_share(batch) for batch in micro_batches[g : g + accumulation]]
            metrics = _accumulate(compute, group, prepared, accelerator)
            accelerator.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics.update(learning_rate=float(learning_rate), epoch=float(epoch + 1))
            history.append(metrics)
            epoch_done = g + accumulation >= len(micro_batches)
            if step < total_steps and (step % config.checkpoint_every == 0 or epoch_done):
                checkpoint()  # before reporting the step, so a reported checkpoint exists
            if accelerator.is_main_process:
                hooks.step_done(step, total_steps, metrics)
        if step >= total_steps:
            break
    return LoopResult(steps=step, total_steps=total_steps, history=history)


def _accumulate(
    compute: ComputeLoss, group: list[tuple[list[int], float]], model: Any, accelerator: Any
) -> dict[str, float]:
    """Backward over one optimizer step's micro-batches (this process's share of each);
    returns row-weighted metrics averaged over processes and the tokens/s of them all."""
    group_size = sum(len(batch) * share for batch, share in group) or 1.0
    started = time.perf_counter()
    sums: dict[str, float] = {}
    tokens = 0
    for batch, share in group:
        loss, metrics, batch_tokens = compute(batch, model)
        weight = share * len(batch) / group_size
        accelerator.backward(loss * weight)
        tokens += batch_tokens if share else 0
        sums["loss"] = sums.get("loss", 0.0) + weight * float(loss.detach())
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + weight * float(value)
    elapsed = time.perf_counter() - started
    if accelerator.num_processes > 1:
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys] + [tokens], device=accelerator.device)
        values = accelerator.reduce(values, reduction="sum")
        sums = {
            k: float(v) / accelerator.num_processes for k, v in zip(keys, values[:-1], strict=True)
        }
        tokens = int(values[-1])
    sums["tokens_per_s"] = tokens / elapsed if elapsed > 0 else 0.0
    return sums


def training_record(
    *, method: str, config: MethodConfig, loop: LoopResult, metrics: dict, base_model: Any
) -> dict[str, Any]:
    """The ``training_result.json`` content every method writes next to its artifact."""
    return {
        "method": method,
        "steps": loop.steps,
        "total_steps": loop.total_steps,
        "metrics": metrics,
        "history": loop.history,
        "config": config.to_dict(),
        "seed": getattr(config, "seed", None),
        "base_model": str(base_model),
        "device": pick_device(),
        "library_versions": library_versions(),
    }


def curriculum_difficulty(
    curriculum: str | None, rows: Sequence[dict[str, Any]], lengths: Sequence[int]
) -> list[float] | None:
    """Per-row difficulty for ``curriculum`` (None: shuffle instead).

    - ``margin``: a strong preference (the row's ``margin``: strength, rank gap) is easy.
    - ``agreement``: rows most labelers agreed on (``agreement`` in [0, 1]) are easy.
    - ``length``: short rows (token count) are easy.
    Rows without the field sit in the middle (margin 0, agreement 0.5).
    """
    if curriculum is None:
        return None
    if curriculum == "length":
        return [float(n) for n in lengths]
    default = 0.0 if curriculum == "margin" else 0.5
    return [-float(row.get(curriculum) or default) for row in rows]


def optional_number(row: dict[str, Any], key: str, *, line: int) -> float | None:
    """A row's optional numeric field (``margin``, ``agreement``), checked."""
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"line {line}: {key!r} must be a number")
    return float(value)


# --- Prompt datasets (RAFT; PPO and evaluation read the same forms) -------------------


def read_prompts(dataset_path: str | os.PathLike[str]) -> list[tuple[int, list[dict[str, str]]]]:
    """Distinct prompts of a JSONL file as ``(line, messages)``, first occurrence kept.

    A row's prompt is its ``prompt`` (messages), or else its ``messages`` without the
    last assistant turn, so prompt, SFT and preference exports all work. Raises
    ``ValueError`` naming the first bad line, or when the file holds no prompts.
    """
    prompts: dict[str, tuple[int, list[dict[str, str]]]] = {}
    for line, row in read_jsonl(dataset_path):
        if "prompt" in row:
            messages = check_messages(row["prompt"], field="prompt", line=line)
        elif "messages" in row:
            messages = check_messages(row["messages"], field="messages", line=line)
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            if not messages:
                raise ValueError(f"line {line}: 'messages' holds no prompt before its reply")
        else:
            raise ValueError(f"line {line}: missing 'prompt' (or 'messages')")
        prompts.setdefault(prompt_key(messages), (line, messages))
    if not prompts:
        raise ValueError(f"{Path(dataset_path).name} holds no prompts")
    return list(prompts.values())
