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

What is ours: the config the run form shows (``KTOConfig``, validated with clear messages,
mapped onto TRL's config in ``trl_config``), reading and checking the snapshot file, the
held-out split by prompt (the one ``evaluation.held_out_prompts`` repeats), the seeded
shuffle up front (TRL pairs each prompt with another row's reply for the KL estimate when it
tokenises, by rotating replies within each batch-sized block of rows, so this order decides
the KL partners; the Trainer then shuffles the rows as usual). The bridge to the run
(per-step metrics, heartbeat, cancel, checkpoint marks, main-process-only artifacts) and the
precision settings are ``trl_runtime``'s, shared with SFT, the reward model and DPO.

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
    Hooks,
    RuntimeConfig,
    TrainingCancelled,
    check_messages,
    holdout_split,
    library_versions,
    lora_config,
    prepare_tokenizer,
    prompt_key,
    read_jsonl,
    require,
    seed_everything,
    training_record,
)
from training.methods.trl_runtime import (
    load_base_model,
    rows_dataset,
    run_bridge,
    save_trained,
    step_metrics,
    train_with_bridge,
    trainer_arguments,
)

__all__ = ["KTOConfig", "KTOResult", "TrainingCancelled", "read_unpaired_rows", "train_kto"]


@dataclass
class KTOConfig(RuntimeConfig):
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
        super().validate()
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
    """TRL's ``KTOConfig`` for our config (``trl_runtime.trainer_arguments`` plus KTO's own
    settings), with the reference log-probs computed once before training."""
    from trl import KTOConfig as TRLKTOConfig

    return TRLKTOConfig(
        **trainer_arguments(config, output_dir=output_dir, save=save),
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
        precompute_ref_log_probs=True,
        remove_unused_columns=False,
    )


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
    from transformers import AutoTokenizer
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
    model = load_base_model(base_model_path, config)
    checkpoints = hooks.checkpoint_dir
    with tempfile.TemporaryDirectory(prefix="kto-") as scratch:
        args = trl_config(
            config, output_dir=checkpoints or Path(scratch), save=checkpoints is not None
        )
        bridge = run_bridge(hooks)
        trainer = KTOTrainer(
            model=model,
            args=args,
            train_dataset=rows_dataset(
                _shuffled(rows, train_rows, config.seed), args, name="train"
            ),
            processing_class=tokenizer,
            peft_config=lora_config(config),
            callbacks=[bridge],
        )
        loop = train_with_bridge(trainer, bridge, hooks=hooks, what="KTO training")
        final = loop.last
        if len(held_out) >= 2:
            evaluation = trainer.evaluate(
                rows_dataset([rows[i] for i in held_out], args, name="held-out"),
                metric_key_prefix="eval",
            )
            final.update(step_metrics(evaluation))
            final["eval_replies"] = float(len(held_out))
        final["train_loss"] = loop.mean("loss")
        final["train_seconds"] = time.perf_counter() - started
        final["replies"] = float(len(train_rows))
        record = training_record(
            method="kto", config=config, loop=loop, metrics=final, base_model=base_model_path
        )
        save_trained(trainer, tokenizer, output_dir, record)
    return KTOResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
