"""Direct Preference Optimization (DPO / IPO) with a LoRA adapter, on TRL's ``DPOTrainer``.

Losses (``DPOConfig.loss_type``, plus ``nll_weight``):

- ``sigmoid``: DPO, Rafailov et al. 2023, https://arxiv.org/abs/2305.18290 (Eq. 7);
- ``ipo``: IPO, Azar et al. 2023, https://arxiv.org/abs/2310.12036 (Eq. 17), on
  length-averaged log-probabilities as TRL computes it;
- plus ``nll_weight`` times the NLL of the chosen reply, the RPO term of Pang et al. 2024,
  https://arxiv.org/abs/2404.19733: TRL's ``"sft"`` loss type, which is the mean over every
  chosen reply token of the micro-batch (not a per-pair mean), the same token mean our own
  loop used.

What TRL does (``trl.DPOTrainer``, a ``transformers.Trainer``): tokenising the
conversational rows with the chat template (a reply is everything the template renders
after the generation prompt: with SmolLM2's template that includes the newline after
``<|im_end|>``, where ``common.encode_chat_reply`` stops at the EOS), padding, the
policy's log-probs (its fused LM head, which never builds the full logits), the
reference log-probs (the base model: the LoRA adapter disabled, since TRL gets a peft
model and no ``ref_model``; computed once before training with
``precompute_ref_log_probs``, and once for the held-out pairs), the losses, the reward
metrics (``rewards/chosen``, ``rewards/accuracies``, ``rewards/margins``, ...), the
optimizer and schedule, checkpoints (``save_steps``) and resuming from them
(``resume_from_checkpoint``, exact: RNG, optimizer, scheduler and the batches already
seen), and the held-out evaluation (``evaluate``).

What is ours: the config the run form shows (``DPOConfig``, validated with clear messages,
mapped onto TRL's config in ``trl_config``); reading and checking the snapshot file, every
line tokenised once up front so a bad row names its line; the held-out split by prompt
(``common.holdout_split``, the one ``evaluation.held_out_prompts`` repeats); the
``max_prompt_length`` limit (TRL 1.16 has none, see ``DPOConfig``); the curriculum order
(``trl_runtime.in_given_order``); and a few metrics TRL does not log, kept under the names
the run pages, the model registry and the benches read (``_metric_trainer``):
``dpo_loss`` and ``nll_loss`` (the two parts of ``loss``), ``reward_accuracy``,
``reward_margin``, ``chosen_reward``, ``rejected_reward`` (the same numbers as TRL's
``rewards_accuracies``, ``rewards_margins``, ``rewards_chosen``, ``rewards_rejected``,
which are logged too) and ``tokens_per_s``; ``eval_`` prefixed for the held-out pairs. The
bridge to the run (per-step metrics, heartbeat, cancel, checkpoint marks, main-process-only
artifacts) and the precision settings are ``trl_runtime``'s, shared with SFT, the reward
model and KTO.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.methods.common import (
    EncodedReply,
    Hooks,
    TrainingCancelled,
    TrainingConfig,
    chat_prompt_ids,
    curriculum_difficulty,
    curriculum_order,
    encode_chat_reply,
    holdout_split,
    library_versions,
    lora_config,
    prepare_tokenizer,
    prompt_key,
    read_preference_rows,
    require,
    seed_everything,
    training_record,
)
from training.methods.trl_runtime import (
    in_given_order,
    load_base_model,
    rows_dataset,
    run_bridge,
    save_trained,
    step_metrics,
    train_with_bridge,
    trainer_arguments,
)

__all__ = [
    "DPOConfig",
    "DPOResult",
    "PreferencePair",
    "TrainingCancelled",
    "load_preference_pairs",
    "read_preference_rows",
    "train_dpo",
]

LOSS_TYPES = ("sigmoid", "ipo")

# Our metric names -> TRL's (as ``trl_runtime.step_metrics`` writes them): the same numbers.
METRIC_ALIASES = {
    "reward_accuracy": "rewards/accuracies",
    "reward_margin": "rewards/margins",
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
}


@dataclass
class DPOConfig(TrainingConfig):
    """Hyperparameters of a LoRA DPO run; invalid values raise ``ValueError``.

    Each maps onto ``trl.DPOConfig`` (see ``trl_config``): ``beta``, ``learning_rate``,
    ``max_length`` and ``seed`` by name; ``loss_type`` and ``nll_weight`` to ``loss_type``
    and ``loss_weights`` (``sigmoid`` -> ``["sigmoid"]``, ``ipo`` -> ``["ipo"]``, with
    ``nll_weight > 0`` ``"sft"`` added with that weight: ``["sigmoid", "sft"]``,
    ``[1.0, nll_weight]``); ``batch_size`` to ``per_device_train_batch_size`` (and the
    eval batch size), ``epochs`` to ``num_train_epochs``, ``max_steps`` to ``max_steps``
    (null -> -1), ``gradient_accumulation_steps`` by name, ``warmup_ratio`` to
    ``warmup_steps`` (a share of the steps), ``checkpoint_every`` to ``save_steps``,
    ``mixed_precision``/``gradient_checkpointing``/``qlora`` as ``trl_runtime`` sets them;
    ``lora_*`` go to peft's ``LoraConfig``, and ``lora_dropout=0`` also sets TRL's
    ``disable_dropout`` (every dropout off, the model's own included, so the policy's
    forward matches the precomputed reference's; above 0 dropout stays on, as the user
    asked); ``eval_fraction`` and ``curriculum`` are ours (the held-out split and the row
    order).

    ``max_length`` and ``max_prompt_length``: TRL 1.16 has no prompt limit; its collator
    cuts prompt+reply to ``max_length`` keeping the start (``truncation_mode=
    "keep_start"``: the whole prompt, then as much of the reply as fits) and it drops pairs
    whose prompt alone fills ``max_length``. So that every trained reply keeps at least
    ``max_length - max_prompt_length`` tokens, pairs whose prompt (rendered with the chat
    template and the generation prompt) is longer than ``max_prompt_length`` tokens are
    left out of training and evaluation, and the log says how many. (Our own loop used to
    keep the end of such prompts instead, which cuts off their system turn.)

    Defaults are chosen for LoRA on a ~100M-parameter instruct model (SmolLM2-135M) with
    the few hundred to few thousand preference pairs one labeling round produces:

    - ``beta=0.1``: the DPO paper's and TRL's default KL strength.
    - ``learning_rate=1e-4``: LoRA adapters start at zero (B = 0) and train ~1% of the
      weights, so they need roughly 10-100x the 5e-7..5e-6 used for full-weight DPO
      (TRL's default is 1e-6); 1e-4 is the middle of the usual LoRA range (5e-5..2e-4).
      Measured on SmolLM2 (CPU, 32 synthetic pairs): 3 epochs (12 steps) took the reward
      margin from 0 to ~1.4 with accuracy 1.0 and visibly changed greedy answers to
      held-out prompts while they stayed fluent; 1 epoch (4 steps) barely changed them.
    - ``epochs=3``, ``batch_size=8``, ``warmup_ratio=0.1``: small datasets need several
      passes; 8 pairs (16 sequences) fit CPU memory at ``max_length=512``.
    - ``lora_r=16``, ``lora_alpha=32`` (scale 2) on every attention and MLP projection
      (``lora_target_modules=None`` means peft's ``"all-linear"``, which leaves the LM
      head alone), no dropout, so the first step's policy equals the reference exactly.
    - ``nll_weight=1.0``: RPO's recommended weight; without it DPO mostly pushes the
      rejected reply down and greedy generations barely change.
    """

    method_name = "DPO"

    beta: float = 0.1
    loss_type: str = "sigmoid"
    nll_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.lora_r >= 1, "lora_r must be >= 1 (DPO's reference is the base model)")
        require(
            self.loss_type in LOSS_TYPES,
            f"loss_type must be one of {list(LOSS_TYPES)}, got {self.loss_type!r}",
        )
        require(self.beta > 0, "beta must be > 0")
        require(self.nll_weight >= 0, "nll_weight must be >= 0")


@dataclass
class DPOResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferencePair:
    """One tokenized preference row with what the split and the curriculum need."""

    chosen: EncodedReply
    rejected: EncodedReply
    prompt_key: str
    row: dict[str, Any]

    @property
    def tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


def load_preference_pairs(
    dataset_path: str | Path, tokenizer: Any, *, max_length: int, max_prompt_length: int
) -> list[PreferencePair]:
    """Read (see ``read_preference_rows``) and tokenize a preference file.

    The encoding is the engine's (``common.encode_chat_reply``); ``train_dpo`` uses it to
    check every line and for the ``length`` curriculum, while TRL tokenises for training.
    """
    pairs = []
    for line, row in read_preference_rows(dataset_path):
        try:
            encoded = [
                encode_chat_reply(
                    tokenizer,
                    row["prompt"],
                    row[side],
                    max_length=max_length,
                    max_prompt_length=max_prompt_length,
                )
                for side in ("chosen", "rejected")
            ]
        except Exception as exc:  # template errors surface as jinja/tokenizer exceptions
            raise ValueError(f"line {line}: cannot tokenize: {exc}") from exc
        pairs.append(PreferencePair(*encoded, prompt_key=prompt_key(row["prompt"]), row=row))
    return pairs


def trl_losses(config: DPOConfig) -> tuple[list[str], list[float]]:
    """TRL's ``loss_type`` and ``loss_weights`` for our ``loss_type`` and ``nll_weight``."""
    if config.nll_weight > 0:
        return [config.loss_type, "sft"], [1.0, config.nll_weight]
    return [config.loss_type], [1.0]


def trl_config(config: DPOConfig, *, output_dir: Path, save: bool) -> Any:
    """TRL's ``DPOConfig`` for our config (``trl_runtime.trainer_arguments`` plus DPO's own
    settings), with the reference log-probs computed once before training."""
    from trl import DPOConfig as TRLDPOConfig

    loss_type, loss_weights = trl_losses(config)
    return TRLDPOConfig(
        **trainer_arguments(config, output_dir=output_dir, save=save),
        beta=config.beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        truncation_mode="keep_start",
        precompute_ref_log_probs=True,
        disable_dropout=config.lora_dropout == 0,
    )


def _metric_trainer(base: type, nll_weight: float) -> type:
    """``base`` (TRL's ``DPOTrainer``) also logging the metrics named in the module
    docstring; the loss and its gradients are TRL's, untouched."""

    class DPOTrainerWithOurMetrics(base):
        _tokens = 0
        _since: float | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.training and self._since is None:
                self._since = time.perf_counter()
            # The policy's per-token log-probs of this batch, as TRL's forward returns them.
            seen: dict[str, Any] = {}

            def keep(module, args, kwargs, output):
                log_probs = getattr(output, "log_probs", None)
                if log_probs is not None:
                    seen.setdefault("log_probs", log_probs.detach())

            handle = model.register_forward_hook(keep, with_kwargs=True)
            try:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                handle.remove()
            loss = result[0] if return_outputs else result
            self._record(inputs, loss.detach(), seen.get("log_probs"))
            return result

        def _record(self, inputs: dict[str, Any], loss: Any, log_probs: Any) -> None:
            import torch

            mode = "train" if self.model.training else "eval"
            metrics = self._metrics[mode]
            gather = self.accelerator.gather_for_metrics
            if log_probs is not None:
                # The "sft" term: the mean NLL over every chosen token of the batch (the
                # batch is the chosen sequences, then the rejected ones).
                mask = inputs["completion_mask"][:, 1:]
                chosen = mask[: mask.size(0) // 2].bool()
                chosen_logps = log_probs[: chosen.size(0), -mask.size(1) :][chosen]
                nll = -chosen_logps.float().sum() / chosen.sum().clamp(min=1)
                preference = loss.float() - nll_weight * nll
                total = gather(-chosen_logps.float().sum().reshape(1)).sum()
                count = gather(chosen.sum().reshape(1)).sum().clamp(min=1)
                metrics["nll_loss"].append((total / count).item())
                metrics["dpo_loss"].append(gather(preference.reshape(1)).mean().item())
            for ours, theirs in METRIC_ALIASES.items():
                if metrics.get(theirs):
                    metrics[ours].append(metrics[theirs][-1])
            if mode == "train":
                tokens = gather(inputs["attention_mask"].sum().reshape(1).to(torch.long))
                self._tokens += int(tokens.sum())

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self.model.training and "loss" in logs and self._since is not None:
                now = time.perf_counter()
                logs["tokens_per_s"] = self._tokens / max(now - self._since, 1e-9)
                self._tokens, self._since = 0, now
            super().log(logs, start_time)

    return DPOTrainerWithOurMetrics


def trainer_class(config: DPOConfig) -> type:
    """The Trainer ``train_dpo`` uses: TRL's ``DPOTrainer`` with our metrics, keeping the
    rows' order under a curriculum."""
    from trl import DPOTrainer

    trainer = _metric_trainer(DPOTrainer, config.nll_weight)
    return in_given_order(trainer) if config.curriculum is not None else trainer


def _trl_row(pair: PreferencePair) -> dict[str, Any]:
    return {key: pair.row[key] for key in ("prompt", "chosen", "rejected")}


def _within_prompt_limit(
    pairs: list[PreferencePair], tokenizer: Any, max_prompt_length: int
) -> list[PreferencePair]:
    """The pairs whose chat-rendered prompt fits ``max_prompt_length`` tokens."""
    lengths: dict[str, int] = {}
    kept = []
    for pair in pairs:
        if pair.prompt_key not in lengths:
            lengths[pair.prompt_key] = len(chat_prompt_ids(tokenizer, pair.row["prompt"]))
        if lengths[pair.prompt_key] <= max_prompt_length:
            kept.append(pair)
    return kept


def train_dpo(
    config: DPOConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    on_step=None,
    should_stop=None,
    hooks: Hooks | None = None,
) -> DPOResult:
    """Train a LoRA adapter on ``base_model_path`` with DPO/IPO and save it to ``output_dir``.

    Writes ``adapter_config.json``, ``adapter_model.safetensors``, the tokenizer and
    ``training_result.json`` (final and held-out metrics, per-step history, config, seed,
    library versions); the caller gives a private directory and publishes it. ``hooks``
    (or the shorthand ``on_step``/``should_stop``) report every optimizer step, cancel
    (``TrainingCancelled``, nothing saved) and hold the checkpoint folder: checkpoints go
    there every ``checkpoint_every`` steps, and a run that finds one there resumes from it.
    Same config, data and seed give the same adapter on the same hardware.
    """
    from transformers import AutoTokenizer

    hooks = hooks or Hooks(on_step=on_step, should_stop=should_stop)
    started = time.perf_counter()
    seed_everything(config.seed)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    pairs = load_preference_pairs(
        dataset_path,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    fitting = _within_prompt_limit(pairs, tokenizer, config.max_prompt_length)
    if len(fitting) < len(pairs):
        hooks.say(
            f"{len(pairs) - len(fitting)} of {len(pairs)} pairs left out: their prompt is "
            f"longer than max_prompt_length ({config.max_prompt_length} tokens)"
        )
    require(
        bool(fitting),
        f"every prompt is longer than max_prompt_length ({config.max_prompt_length} tokens)",
    )
    pairs = fitting
    train_rows, held_out = holdout_split(
        [p.prompt_key for p in pairs], fraction=config.eval_fraction, seed=config.seed
    )
    hooks.say(f"{len(pairs)} pairs: {len(train_rows)} to train on, {len(held_out)} held out")
    difficulty = curriculum_difficulty(
        config.curriculum, [pairs[i].row for i in train_rows], [pairs[i].tokens for i in train_rows]
    )
    if difficulty is not None:
        train_rows = [train_rows[i] for i in curriculum_order(difficulty)]
    hooks.check_stop("DPO training")

    model = load_base_model(base_model_path, config)
    checkpoints = hooks.checkpoint_dir
    with tempfile.TemporaryDirectory(prefix="dpo-") as scratch:
        args = trl_config(
            config, output_dir=checkpoints or Path(scratch), save=checkpoints is not None
        )
        bridge = run_bridge(hooks)
        trainer = trainer_class(config)(
            model=model,
            args=args,
            train_dataset=rows_dataset(
                [_trl_row(pairs[i]) for i in train_rows], args, name="train"
            ),
            processing_class=tokenizer,
            peft_config=lora_config(config),
            callbacks=[bridge],
        )
        loop = train_with_bridge(trainer, bridge, hooks=hooks, what="DPO training")
        final = loop.last
        if held_out:
            evaluation = trainer.evaluate(
                rows_dataset([_trl_row(pairs[i]) for i in held_out], args, name="held-out"),
                metric_key_prefix="eval",
            )
            final.update(step_metrics(evaluation))
            final["eval_pairs"] = float(len(held_out))
        final["train_loss"] = loop.mean("loss")
        final["train_seconds"] = time.perf_counter() - started
        final["pairs"] = float(len(train_rows))
        record = training_record(
            method="dpo", config=config, loop=loop, metrics=final, base_model=base_model_path
        )
        save_trained(trainer, tokenizer, output_dir, record)
    return DPOResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
