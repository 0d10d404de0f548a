"""What every method that trains on one of TRL's trainers shares: the runtime settings
(precision, gradient checkpointing, QLoRA), the ``TrainingArguments`` our configs become,
the callback that carries the Trainer's steps to the run, resuming from the last
checkpoint, and saving the artifact from the main process only.

TRL (``SFTTrainer``, ``RewardTrainer``, ``DPOTrainer``, ``KTOTrainer``) and transformers'
``Trainer`` own the loop: batching, accumulation, clipping, schedules, mixed precision,
checkpoints (``save_steps``) and exact resume (``resume_from_checkpoint``: RNG, optimizer,
scheduler and the batches already seen), and, under ``accelerate launch``, DDP, FSDP and
DeepSpeed. What is ours is the bridge to a run (``RunBridge``):

- every optimizer step's metrics go to ``Hooks.on_step`` from the main process only (the
  Trainer already averages the loss over every rank before it logs);
- a cancel request, read on the main process, is broadcast so every rank stops after the
  same step (ranks that stopped at different steps would wait on each other forever);
- each checkpoint is marked the way ``common.checkpoint_step`` reads it, and the step that
  wrote it is reported only once it exists, so the run page never names a checkpoint that
  is not there.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.methods.common import (
    CHECKPOINT_INFO,
    Hooks,
    LoopResult,
    TrainingCancelled,
    agreed,
    checkpoint_step,
    is_main_process,
    pick_device,
    resolve_precision,
    save_artifact,
    write_json,
)


def trainer_arguments(config: Any, *, output_dir: Path, save: bool) -> dict[str, Any]:
    """The ``TrainingArguments`` fields every method sets the same way, from our config.

    ``learning_rate``, ``max_length`` and the seed by name; ``epochs`` ->
    ``num_train_epochs``, ``max_steps`` (null -> -1), ``batch_size`` ->
    ``per_device_train_batch_size`` (per process: the global batch is this times the
    number of processes times ``gradient_accumulation_steps``), ``warmup_ratio`` ->
    ``warmup_steps`` (a float below 1 is a share of the steps), ``checkpoint_every`` ->
    ``save_steps``, ``mixed_precision`` -> ``bf16``/``fp16``, ``gradient_checkpointing`` as
    is. One log entry per step (``logging_steps=1``), which the bridge reports.
    """
    device = pick_device()
    precision = resolve_precision(config.mixed_precision, device)
    return dict(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        weight_decay=0.0,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps" if save else "no",
        save_steps=config.checkpoint_every,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        use_cpu=device == "cpu",
        ddp_find_unused_parameters=False,
    )


def load_base_model(base_model_path: str | Path, config: Any, *, model_class: Any = None) -> Any:
    """The base model for a Trainer: float32 master weights (the Trainer autocasts), or
    with ``config.qlora`` 4-bit NF4 weights from bitsandbytes, ready for a LoRA adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    model_class = model_class or AutoModelForCausalLM
    if not getattr(config, "qlora", False):
        return model_class.from_pretrained(str(base_model_path), dtype=torch.float32)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    model = model_class.from_pretrained(
        str(base_model_path), quantization_config=quantization, device_map={"": local_rank}
    )
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=config.gradient_checkpointing
    )


def step_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """A Trainer log entry as our metrics: numbers only, "rewards/chosen" as
    "rewards_chosen"."""
    return {
        key.replace("/", "_"): float(value)
        for key, value in logs.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


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
            main = is_main_process()
            if main:
                self.hooks.step_done(*report)
            stop = main and self.hooks.should_stop is not None and bool(self.hooks.should_stop())
            if agreed(stop):
                self.cancelled = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return control  # the summary at the end of training, not a step
            report = (state.global_step, state.max_steps, step_metrics(logs))
            if control.should_save and self.checkpoint_dir is not None:
                self._pending = report  # reported once the checkpoint it names exists
            else:
                self._report(report, control)
            return control

        def on_save(self, args, state, control, **kwargs):
            if self.checkpoint_dir is not None and is_main_process():
                write_json(self.checkpoint_dir / CHECKPOINT_INFO, {"step": state.global_step})
            if self._pending is not None:
                self._report(self._pending, control)
                self._pending = None
            return control

    return RunBridge


def run_bridge(hooks: Hooks) -> Any:
    """A ``TrainerCallback`` reporting to ``hooks`` (pass it in the trainer's callbacks)."""
    return _bridge_class()(hooks, hooks.checkpoint_dir)


def last_checkpoint(folder: Path | None) -> str | None:
    """The last complete checkpoint in ``folder``: the one the bridge marked once the
    Trainer had saved it. A ``checkpoint-N`` folder without the mark was being written when
    the worker died, and resuming from it fails."""
    if folder is None:
        return None
    step = checkpoint_step(folder)
    marked = folder / f"checkpoint-{step}"
    return str(marked) if step and marked.is_dir() else None


def train_with_bridge(trainer: Any, bridge: Any, *, hooks: Hooks, what: str) -> LoopResult:
    """Train (resuming from the last checkpoint in ``hooks.checkpoint_dir`` if any) and
    return every step's metrics; raises ``TrainingCancelled`` when a cancel stopped it."""
    resume_from = last_checkpoint(hooks.checkpoint_dir)
    if resume_from is not None:
        hooks.say(f"resuming from {Path(resume_from).name}")
    trainer.train(resume_from_checkpoint=resume_from)
    if bridge.cancelled:
        raise TrainingCancelled(f"{what} cancelled")
    state = trainer.state
    # The Trainer's log history survives a resume, so it holds every step's metrics.
    history = [step_metrics(entry) for entry in state.log_history if "loss" in entry]
    return LoopResult(steps=state.global_step, total_steps=state.max_steps, history=history)


def save_trained(
    trainer: Any, tokenizer: Any, output_dir: str | Path, record: dict[str, Any]
) -> None:
    """Write the artifact: the Trainer gathers sharded (FSDP/DeepSpeed) weights on every
    rank, and the main process alone writes the files."""
    if trainer.accelerator.num_processes > 1:
        trainer.save_model(str(output_dir))  # collective: every rank takes part
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(str(output_dir))
            write_json(Path(output_dir) / "training_result.json", record)
        trainer.accelerator.wait_for_everyone()
        return
    save_artifact(trainer.model, tokenizer, output_dir, record)


def in_given_order(trainer_class: type) -> type:
    """``trainer_class`` visiting the training rows in the order given, not shuffled: for a
    curriculum (``common.curriculum_order``), whose rows the caller sorts easiest first.
    Under several processes each rank takes its share of every batch in that order."""
    from torch.utils.data import SequentialSampler

    class InGivenOrder(trainer_class):
        def _get_train_sampler(self, *args, **kwargs):
            dataset = args[0] if args else kwargs.get("train_dataset", self.train_dataset)
            return SequentialSampler(dataset if dataset is not None else self.train_dataset)

    InGivenOrder.__name__ = f"{trainer_class.__name__}InGivenOrder"
    return InGivenOrder


def rows_dataset(rows: list[dict[str, Any]], args: Any, *, name: str) -> Any:
    """A ``datasets.Dataset`` of ``rows`` for a trainer built with ``args``.

    In one process, an in-memory dataset. Under several processes, one saved by the main
    process in ``args.output_dir`` and read by every rank: TRL's trainers cache their
    tokenised rows and precomputed reference log-probs next to the dataset's files, and an
    in-memory dataset's cache is a private temporary folder that the other ranks cannot see.
    """
    import hashlib
    import json

    from datasets import Dataset, load_from_disk

    if args.world_size == 1:
        return Dataset.from_list(rows)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(args.output_dir) / f"{name}-{digest}"
    with args.main_process_first(desc=f"{name} rows"):
        if args.process_index == 0 and not folder.exists():
            Dataset.from_list(rows).save_to_disk(str(folder))
        return load_from_disk(str(folder))
