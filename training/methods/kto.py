"""Kahneman-Tversky Optimisation (KTO) with a LoRA adapter, on TRL's ``KTOTrainer``.

KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306) learns from single replies
marked desirable or undesirable, not from pairs: the ratings, thumbs, comparison winners
and losers a project collects (``annotation.datasets.selectors.kto_rows``).

What TRL does (``trl.KTOTrainer``, a ``transformers.Trainer``): tokenising the
conversational rows with the chat template, the KL estimate from mismatched
(prompt, completion) pairs within a batch, the loss (``loss_type="kto"``) with
``beta``, ``desirable_weight`` and ``undesirable_weight``, the reference log-probs (the base
model: the LoRA adapter disabled, computed once before training with
``precompute_ref_log_probs``), the optimizer and schedule, checkpoints (``save_steps``) and
resuming from them (``resume_from_checkpoint``, exact: RNG, optimizer, scheduler and the
batches already seen).

What is ours: the config the run form shows (``KTOConfig``, validated with clear
messages, mapped onto TRL's config in ``trl_config``), reading and checking the snapshot
file, the held-out split by prompt (the one ``evaluation.held_out_prompts`` repeats), the
seeded shuffle (TRL keeps rows in order, which its KL pairing needs, so we shuffle once
up front), and ``_RunBridge``, a ``TrainerCallback`` that carries each optimizer step's
metrics to ``Hooks.on_step`` (the run's progress rows and heartbeat), turns a cancel request
into ``control.should_training_stop``, and marks each checkpoint in the folder the way
``common.checkpoint_step`` reads it, so the run page and a resume see it.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.methods.common import (
    CHECKPOINT_INFO,
    Hooks,
    LoopResult,
    MethodConfig,
    TrainingCancelled,
    check_messages,
    holdout_split,
    library_versions,
    lora_config,
    pick_device,
    prepare_tokenizer,
    prompt_key,
    read_jsonl,
    require,
    save_artifact,
    seed_everything,
    training_record,
    write_json,
)

__all__ = ["KTOConfig", "KTOResult", "TrainingCancelled", "read_unpaired_rows", "train_kto"]


@dataclass
class KTOConfig(MethodConfig):
    """Hyperparameters of a LoRA KTO run; invalid values raise ``ValueError``.

    Each maps onto ``trl.KTOConfig`` (see ``trl_config``): ``beta``, ``desirable_weight``,
    ``undesirable_weight`` and ``max_length`` by name, ``batch_size`` to
    ``per_device_train_batch_size``, ``epochs`` to ``num_train_epochs``,
    ``checkpoint_every`` to ``save_steps``; LoRA settings go to peft's ``LoraConfig``.

    - ``beta=0.1``: the KTO paper's and TRL's default.
    - ``learning_rate=1e-4``: TRL's 1e-6 default is for full weights; a LoRA adapter starts
      at zero and needs 10-100x more, as for DPO (``dpo.DPOConfig``).
    - ``desirable_weight``/``undesirable_weight`` 1.0: the paper asks that
      ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable)`` lie in
      [1, 4/3]; when a project's feedback is lopsided, TRL logs the range to use.
    - ``batch_size=8``: at least 2, since the KL estimate pairs each prompt with another
      row's reply in the same batch.
    """

    method_name = "KTO"

    learning_rate: float = 1e-4
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    seed: int = 0
    warmup_ratio: float = 0.1
    eval_fraction: float = 0.1
    checkpoint_every: int = 50

    def validate(self) -> None:
        require(self.learning_rate > 0, "learning_rate must be > 0")
        require(self.epochs >= 1, "epochs must be >= 1")
        require(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps must be null or an integer >= 1",
        )
        require(
            self.batch_size >= 2,
            "batch_size must be >= 2 (KTO's KL estimate pairs rows within a batch)",
        )
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        require(self.max_length >= 2, "max_length must be >= 2")
        require(self.beta > 0, "beta must be > 0")
        require(self.desirable_weight > 0, "desirable_weight must be > 0")
        require(self.undesirable_weight > 0, "undesirable_weight must be > 0")
        require(self.lora_r >= 1, "lora_r must be >= 1 (KTO's reference is the base model)")
        require(self.lora_alpha > 0, "lora_alpha must be > 0")
        require(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        require(self.seed >= 0, "seed must be >= 0")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        require(0 <= self.eval_fraction < 1, "eval_fraction must be in [0, 1)")
        require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")


@dataclass
class KTOResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


def read_unpaired_rows(dataset_path: str | Path) -> list[dict[str, Any]]:
    """Validated rows of a JSONL file in TRL's conversational unpaired form.

    Each line: ``{"prompt": [messages], "completion": [assistant message], "label":
    true|false}`` (other keys are ignored). Returns the rows reduced to those three keys;
    raises ``ValueError`` naming the first bad line, or when the file holds no rows.
    """
    rows = []
    for line, row in read_jsonl(dataset_path):
        for key in ("prompt", "completion", "label"):
            if key not in row:
                raise ValueError(f"line {line}: missing {key!r} (expected prompt/completion/label)")
        if not isinstance(row["label"], bool):
            raise ValueError(f"line {line}: 'label' must be true (desirable) or false")
        rows.append(
            {
                "prompt": check_messages(row["prompt"], field="prompt", line=line),
                "completion": check_messages(
                    row["completion"], field="completion", line=line, roles=("assistant",)
                ),
                "label": row["label"],
            }
        )
    if not rows:
        raise ValueError(f"{Path(dataset_path).name} holds no unpaired rows")
    return rows


def trl_config(config: KTOConfig, *, output_dir: Path, save: bool) -> Any:
    """TRL's ``KTOConfig`` for our config: float32 (bfloat16 on a GPU that has it), no
    gradient checkpointing (small models), a log line and a progress report every step."""
    import torch
    from trl import KTOConfig as TRLKTOConfig

    bf16 = pick_device() == "cuda" and torch.cuda.is_bf16_supported()
    return TRLKTOConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        weight_decay=0.0,
        seed=config.seed,
        data_seed=config.seed,
        precompute_ref_log_probs=True,
        activation_checkpointing=False,  # TRL's default is on: slower, needless here
        bf16=bf16,
        fp16=False,
        logging_steps=1,
        save_strategy="steps" if save else "no",
        save_steps=config.checkpoint_every,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=pick_device() == "cuda",
        remove_unused_columns=False,
    )


def _bridge_class():
    from transformers import TrainerCallback

    class RunBridge(TrainerCallback):
        """Carries the Trainer's steps to ``Hooks`` (see the module docstring)."""

        def __init__(self, hooks: Hooks, checkpoint_dir: Path | None):
            self.hooks, self.checkpoint_dir = hooks, checkpoint_dir
            self.cancelled = False
            self._pending: tuple[int, int, dict[str, float]] | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False  # the artifact is saved next; no checkpoint
            return control

        def _report(self, report: tuple[int, int, dict[str, float]], control) -> None:
            """Report a finished step, then ask whether to go on: the Trainer checks
            ``should_training_stop`` right after logging and saving, before the next step."""
            self.hooks.step_done(*report)
            if self.hooks.should_stop is not None and self.hooks.should_stop():
                self.cancelled = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return control  # the summary at the end of training, not a step
            metrics = _step_metrics(logs)
            report = (state.global_step, state.max_steps, metrics)
            if control.should_save and self.checkpoint_dir is not None:
                self._pending = report  # reported once the checkpoint it names exists
            else:
                self._report(report, control)
            return control

        def on_save(self, args, state, control, **kwargs):
            if self.checkpoint_dir is not None:
                write_json(self.checkpoint_dir / CHECKPOINT_INFO, {"step": state.global_step})
            if self._pending is not None:
                self._report(self._pending, control)
                self._pending = None
            return control

    return RunBridge


def _step_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """A Trainer log entry as our metrics: numbers only, "rewards/chosen" as
    "rewards_chosen"."""
    return {
        key.replace("/", "_"): float(value)
        for key, value in logs.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _last_checkpoint(folder: Path | None) -> str | None:
    if folder is None or not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


def _shuffled(rows: list[dict[str, Any]], indices: list[int], seed: int) -> list[dict]:
    order = list(indices)
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order]


def train_kto(
    config: KTOConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    on_step=None,
    should_stop=None,
    hooks: Hooks | None = None,
) -> KTOResult:
    """Train a LoRA adapter on ``base_model_path`` with KTO and save it to ``output_dir``.

    Writes ``adapter_config.json``, ``adapter_model.safetensors``, the tokenizer and
    ``training_result.json`` (final and held-out metrics, per-step history, config, seed,
    library versions); the caller gives a private directory and publishes it. ``hooks``
    (or the shorthand ``on_step``/``should_stop``) report every optimizer step, cancel
    (``TrainingCancelled``, nothing saved) and hold the checkpoint folder: checkpoints go
    there every ``checkpoint_every`` steps, and a run that finds one there resumes from it.
    Same config, data and seed give the same adapter on the same hardware.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOTrainer

    hooks = hooks or Hooks(on_step=on_step, should_stop=should_stop)
    started = time.perf_counter()
    seed_everything(config.seed)
    rows = read_unpaired_rows(dataset_path)
    train_rows, held_out = holdout_split(
        [prompt_key(row["prompt"]) for row in rows],
        fraction=config.eval_fraction,
        seed=config.seed,
    )
    desirable = sum(rows[i]["label"] for i in train_rows)
    hooks.say(
        f"{len(rows)} replies: {len(train_rows)} to train on ({desirable} desirable, "
        f"{len(train_rows) - desirable} undesirable), {len(held_out)} held out"
    )
    require(len(train_rows) >= 2, "KTO needs at least 2 replies to train on")
    hooks.check_stop("KTO training")

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_path), dtype=torch.float32)
    checkpoints = hooks.checkpoint_dir
    resume_from = _last_checkpoint(checkpoints)
    with tempfile.TemporaryDirectory(prefix="kto-") as scratch:
        args = trl_config(
            config, output_dir=checkpoints or Path(scratch), save=checkpoints is not None
        )
        bridge = _bridge_class()(hooks, checkpoints)
        trainer = KTOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(_shuffled(rows, train_rows, config.seed)),
            processing_class=tokenizer,
            peft_config=lora_config(config),
            callbacks=[bridge],
        )
        if resume_from is not None:
            hooks.say(f"resuming from {Path(resume_from).name}")
        trainer.train(resume_from_checkpoint=resume_from)
        if bridge.cancelled:
            raise TrainingCancelled("KTO training cancelled")
        state = trainer.state
        # The Trainer's log history survives a resume, so it holds every step's metrics.
        history = [_step_metrics(entry) for entry in state.log_history if "loss" in entry]
        loop = LoopResult(steps=state.global_step, total_steps=state.max_steps, history=history)
        final = loop.last
        if len(held_out) >= 2:
            evaluation = trainer.evaluate(
                Dataset.from_list([rows[i] for i in held_out]), metric_key_prefix="eval"
            )
            final.update(_step_metrics(evaluation))
            final["eval_replies"] = float(len(held_out))
        final["train_loss"] = loop.mean("loss")
        final["train_seconds"] = time.perf_counter() - started
        final["replies"] = float(len(train_rows))
        record = training_record(
            method="kto", config=config, loop=loop, metrics=final, base_model=base_model_path
        )
        save_artifact(trainer.model, tokenizer, output_dir, record)
    return KTOResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
