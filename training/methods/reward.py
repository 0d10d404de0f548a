"""Reward model training (Bradley-Terry pairwise loss) on TRL's ``RewardTrainer``, and the
scorer other methods call.

The model is the base causal LM with a scalar head (``AutoModelForSequenceClassification``
with ``num_labels=1``) trained with a LoRA adapter of task type ``SEQ_CLS`` whose
``modules_to_save=["score"]`` trains and saves the head with it, or, with ``lora_r=0``,
with every weight trainable.

Loss, per pair (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155 Eq. 1):
``-log sigma(r_chosen - r_rejected - m)`` where ``m`` is ``margin_scale`` times the row's
``margin`` with ``use_margin`` (Llama 2's margin loss, Touvron et al. 2023,
https://arxiv.org/abs/2307.09288 Eq. 2) and absent otherwise, plus
``center_rewards_coefficient * mean((r_chosen + r_rejected) ** 2)`` (Eisenstein et al.
2023, https://arxiv.org/abs/2312.09244 Eq. 2). Rankings arrive already expanded to pairs
and ties already left out (``annotation.datasets.selectors.training_preference_rows``).

What TRL does (``trl.RewardTrainer``, a ``transformers.Trainer``): the loss above (its
``margin`` column and ``center_rewards_coefficient``), the per-step metrics (``loss``,
``accuracy``: share of pairs with ``r_chosen > r_rejected``, ``margin``: mean
``r_chosen - r_rejected``, ``min_reward``/``mean_reward``/``max_reward``), batching the
chosen and rejected replies of a pair into one forward pass, wrapping the model with the
LoRA adapter, the held-out evaluation (``evaluate``), the optimizer and schedule,
checkpoints (``save_steps``) and resuming from them (``resume_from_checkpoint``, exact).

What is ours: the config the run form shows (``RewardConfig``, mapped onto TRL's in
``trl_config``), reading and checking the snapshot file (``read_preference_rows``), the
tokenisation, the head's initialisation, the pad token the head reads past, the held-out
split by prompt, the curriculum order and the normalisation after training:

- Replies are tokenised with the engine's ``encode_chat_reply``, exactly as
  ``RewardScorer`` tokenises what it scores (the reply ends at its EOS; over-long rows
  keep the end of the prompt, at most ``max_prompt_length`` tokens, and the start of the
  reply), and handed to TRL as ``chosen_ids``/``rejected_ids``. TRL's own tokenisation
  would keep the template's newline after the EOS and drop over-long rows.
- The reward is the head's output at the last token of the sequence (the EOS that ends
  the reply), where ``RewardScorer`` reads it (from the attention mask). transformers'
  sequence-classification models read it at the last token that is not the pad token,
  which would skip that EOS when the pad token is the EOS (as in SmolLM2). So training
  pads with a token that ends no sequence (``pooling_pad_token``), set on the copy of the
  tokenizer TRL is given; the saved tokenizer and model config keep the base's pad.
- The head starts from N(0, (1 / (hidden + 1))^2) (OpenRLHF's reward head init), so the
  first rewards are close to 0 (loss ~ log 2) yet gradients reach the adapter at once.
- After training, the base policy answers up to ``normalization_prompts`` training
  prompts and the raw rewards of those replies give the mean and standard deviation that
  ``RewardScorer.score`` normalises with (``reward_normalization.json``), so a reply as
  good as the base policy's typical one scores 0 and the scale is comparable across
  reward models.

The bridge to the run (per-step metrics, heartbeat, cancel, checkpoint marks,
main-process-only artifacts) and the precision and QLoRA settings are ``trl_runtime``'s,
shared with SFT, KTO and DPO.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# The scorer and the scalar head are the engine's (serving and candidate pairing score with
# them too); kept importable from here.
from models_registry.engine.reward import NORMALIZATION_FILE as NORMALIZATION_FILE
from models_registry.engine.reward import RewardScorer as RewardScorer
from models_registry.engine.reward import score_head
from training.methods.common import (
    Hooks,
    TrainingCancelled,
    TrainingConfig,
    curriculum_difficulty,
    curriculum_order,
    encode_chat_reply,
    holdout_split,
    library_versions,
    lora_config,
    pick_device,
    prepare_tokenizer,
    prompt_key,
    read_preference_rows,
    require,
    seed_everything,
    training_record,
    write_json,
)
from training.methods.trl_runtime import (
    in_given_order,
    is_main_process,
    load_base_model,
    rows_dataset,
    run_bridge,
    save_trained,
    step_metrics,
    train_with_bridge,
    trainer_arguments,
)

__all__ = [
    "NORMALIZATION_FILE",
    "RewardConfig",
    "RewardResult",
    "RewardScorer",
    "TrainingCancelled",
    "read_preference_rows",
    "train_reward",
]

# Floor for the normalising standard deviation: a base policy whose replies all score
# alike (e.g. it always says the same thing) must not turn small differences into huge
# normalised rewards.
MIN_REWARD_STD = 1e-3


@dataclass
class RewardConfig(TrainingConfig):
    """Hyperparameters of a reward model run; invalid values raise ``ValueError``.

    Each maps onto ``trl.RewardConfig`` (see ``trl_config``) through
    ``trl_runtime.trainer_arguments`` (``learning_rate``, ``max_length``, ``seed``,
    ``warmup_ratio`` -> ``warmup_steps``, ``epochs`` -> ``num_train_epochs``,
    ``max_steps``, ``batch_size`` -> ``per_device_train_batch_size`` and
    ``per_device_eval_batch_size``, ``gradient_accumulation_steps``,
    ``checkpoint_every`` -> ``save_steps``, ``mixed_precision`` -> ``bf16``/``fp16``,
    ``gradient_checkpointing``), plus ``center_rewards_coefficient`` by name (0 -> None);
    ``use_margin``/``margin_scale`` become TRL's ``margin`` column (``margin_scale`` times
    the row's ``margin``); LoRA settings go to peft's ``LoraConfig`` (``SEQ_CLS``,
    ``modules_to_save=["score"]``; ``lora_r=0``: no adapter), ``qlora`` to
    ``trl_runtime.load_base_model``. Ours alone: ``max_prompt_length`` (tokenisation),
    ``eval_fraction`` (the held-out split), ``curriculum`` (``trl_runtime.in_given_order``)
    and the ``normalization_*`` settings.

    - ``learning_rate=1e-4``, ``lora_r=16``: the shared LoRA defaults (see ``DPOConfig``);
      TRL's ``RewardConfig`` also defaults to 1e-4. The score head trains at the same rate.
    - ``epochs=2``: InstructGPT and Llama 2 train reward models for one epoch because
      more overfits a large comparison set; one labeling round gives a few hundred pairs,
      for which one pass of a LoRA adapter is only a few dozen steps.
    - ``center_rewards_coefficient=0.01``: TRL's recommended value. The pairwise loss is
      blind to a constant shift of all rewards, so without it the raw level drifts freely;
      at 0.01 it costs nothing measurable in accuracy. The rewards are normalised after
      training anyway, so this only keeps the raw numbers tame (bf16 on GPU).
    - ``use_margin=False``, ``margin_scale=0.5``: with ``use_margin`` a pair's ``margin``
      (labeler strength 1-4, or places apart in a ranking) times 0.5 is the gap the
      chosen reward must clear, so "much better" (4) asks for a gap of 2 and "marginally
      better" (1) for 0.5, between Llama 2's small and large margin scales.
    - ``normalization_prompts=64``, ``normalization_max_new_tokens=64``: base-policy
      replies sampled (temperature 0.7, ``seed``) for the reward normalisation.
    """

    method_name = "reward"

    epochs: int = 2
    center_rewards_coefficient: float = 0.01
    use_margin: bool = False
    margin_scale: float = 0.5
    normalization_prompts: int = 64
    normalization_max_new_tokens: int = 64

    def validate(self) -> None:
        super().validate()
        require(self.center_rewards_coefficient >= 0, "center_rewards_coefficient must be >= 0")
        require(self.margin_scale >= 0, "margin_scale must be >= 0")
        require(self.normalization_prompts >= 1, "normalization_prompts must be >= 1")
        require(
            1 <= self.normalization_max_new_tokens <= 4096,
            "normalization_max_new_tokens must be between 1 and 4096",
        )


@dataclass
class RewardResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


# --- Data -----------------------------------------------------------------------------


def _tokenized(
    rows: list[tuple[int, dict[str, Any]]], tokenizer: Any, config: RewardConfig
) -> list[dict[str, Any]]:
    """``chosen_ids``/``rejected_ids`` per row (TRL's processed form), encoded as
    ``RewardScorer`` encodes, with TRL's ``margin`` column when ``use_margin``."""
    examples = []
    for line, row in rows:
        try:
            encoded = {
                f"{side}_ids": encode_chat_reply(
                    tokenizer,
                    row["prompt"],
                    row[side],
                    max_length=config.max_length,
                    max_prompt_length=config.max_prompt_length,
                ).input_ids
                for side in ("chosen", "rejected")
            }
        except Exception as exc:  # template errors surface as jinja/tokenizer exceptions
            raise ValueError(f"line {line}: cannot tokenize: {exc}") from exc
        if config.use_margin:
            encoded["margin"] = config.margin_scale * (row["margin"] or 0.0)
        examples.append(encoded)
    return examples


def pooling_pad_token(tokenizer: Any, sequences: list[list[int]]) -> str:
    """A pad token that ends none of ``sequences``: transformers' sequence-classification
    models read the reward at the last token that is not the pad token, and this makes
    that each sequence's own last token (its EOS), where ``RewardScorer`` reads it."""
    ends = {ids[-1] for ids in sequences}
    candidates = (tokenizer.pad_token_id, tokenizer.unk_token_id, *range(len(tokenizer)))
    token_id = next(i for i in candidates if i is not None and i not in ends)
    return tokenizer.convert_ids_to_tokens(token_id)


# --- The scalar-head model ------------------------------------------------------------


class _ScalarHeadModel:
    """``AutoModelForSequenceClassification`` with one output, as ``trl_runtime``'s
    ``load_base_model`` loads a model class (float32, or 4-bit NF4 with ``qlora``)."""

    @staticmethod
    def from_pretrained(path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSequenceClassification
        from trl.trainer.reward_trainer import suppress_seqcls_warning

        # The new head and the unused lm_head are expected; TRL silences the warnings too.
        with suppress_seqcls_warning():
            return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)


def _init_score_head(model: Any, seed: int) -> None:
    """Draw the head from N(0, (1 / (hidden + 1))^2), OpenRLHF's reward head init, so the
    first rewards are close to 0 (loss ~ log 2) yet gradients reach the adapter from the
    first step (a head of exact zeros would block them)."""
    head = score_head(model)
    generator = torch.Generator().manual_seed(seed)
    std = 1.0 / (head.in_features + 1)
    with torch.no_grad():
        weight = torch.randn(head.weight.shape, generator=generator) * std
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        if head.bias is not None:
            head.bias.zero_()


def _set_pad_token_id(model: Any, pad_token_id: int) -> None:
    """The pad id transformers' own pooling (pipelines, ``model(...)``) reads."""
    model.config.pad_token_id = pad_token_id
    model.config.get_text_config().pad_token_id = pad_token_id


def load_reward_model_for_training(base_model_path: str | Path, config: RewardConfig) -> Any:
    """The base model with a fresh one-output ``score`` head (float32, or 4-bit under
    ``qlora``); TRL adds the LoRA adapter and sets the pad id it pools with."""
    model = load_base_model(base_model_path, config, model_class=_ScalarHeadModel)
    _init_score_head(model, config.seed)
    return model


def reward_lora_config(config: RewardConfig) -> Any:
    """peft's ``LoraConfig`` for a reward model, or None (``lora_r=0``: every weight)."""
    if config.lora_r == 0:
        return None
    peft_config = lora_config(config, task_type="SEQ_CLS")
    peft_config.modules_to_save = ["score"]
    return peft_config


def trl_config(config: RewardConfig, *, output_dir: Path, save: bool) -> Any:
    """TRL's ``RewardConfig`` for our config (``trl_runtime.trainer_arguments`` plus the
    reward model's own settings)."""
    from trl import RewardConfig as TRLRewardConfig

    return TRLRewardConfig(
        **trainer_arguments(config, output_dir=output_dir, save=save),
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        # TRL zeroes every dropout by default, the adapter's too; ours is lora_dropout.
        disable_dropout=False,
    )


# --- Normalisation --------------------------------------------------------------------


def _unique_prompts(rows: list[dict[str, Any]], indices: list[int], limit: int) -> list[list]:
    """The first ``limit`` distinct prompt conversations of ``indices``, in dataset order."""
    seen: dict[str, list] = {}
    for index in indices:
        prompt = rows[index]["prompt"]
        seen.setdefault(prompt_key(prompt), prompt)
        if len(seen) == limit:
            break
    return list(seen.values())


def _base_policy_normalization(
    scorer: RewardScorer,
    prompts: list[list[dict[str, str]]],
    config: RewardConfig,
    base_model_path: str | Path,
) -> dict[str, Any]:
    """Raw-reward mean and standard deviation of the base policy's sampled replies."""
    from models_registry.engine.ml import GenerationParams, generate_replies, load_policy

    params = GenerationParams(
        max_new_tokens=config.normalization_max_new_tokens,
        temperature=0.7,
        do_sample=True,
        seed=config.seed,
    )
    policy, policy_tokenizer = load_policy(base_model_path)
    replies = generate_replies(policy, policy_tokenizer, prompts, params)
    raw = scorer.score_raw(prompts, [reply.text for reply in replies], batch_size=8)
    return {
        "mean": statistics.fmean(raw),
        "std": max(statistics.pstdev(raw), MIN_REWARD_STD),
        "std_floor": MIN_REWARD_STD,
        "prompts": len(prompts),
        "generation": params.as_dict(),
        "base_model": str(base_model_path),
    }


# --- Training -------------------------------------------------------------------------


def train_reward(
    config: RewardConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    hooks: Hooks | None = None,
) -> RewardResult:
    """Train a reward model on ``base_model_path`` from preference pairs and save it.

    ``dataset_path`` is JSONL in TRL's conversational preference form (see
    ``read_preference_rows``), with optional ``margin`` and ``agreement`` per row.
    Writes the adapter with the score head (``lora_r > 0``) or the full model, the
    tokenizer, ``reward_normalization.json`` and ``training_result.json`` into
    ``output_dir``; the caller gives a private directory and publishes it. Metrics hold
    the last step's, the held-out ones (TRL's ``eval_loss``, ``eval_accuracy``,
    ``eval_margin``..., ``eval_pairs``, and ``eval_accuracy_before``/``eval_loss_before``
    of the untrained model), ``train_loss``, ``train_seconds`` and the normalisation
    (``reward_mean_raw``, ``reward_std_raw``). ``hooks`` report every optimizer step,
    cancel (``TrainingCancelled``, nothing saved) and hold the checkpoint folder:
    checkpoints go there every ``checkpoint_every`` steps, and a run that finds one there
    resumes from it.
    """
    from transformers import AutoTokenizer
    from trl import RewardTrainer

    hooks = hooks or Hooks()
    started = time.perf_counter()
    seed_everything(config.seed)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    lines = read_preference_rows(dataset_path)
    rows = [row for _, row in lines]
    examples = _tokenized(lines, tokenizer, config)
    train_rows, held_out = holdout_split(
        [prompt_key(row["prompt"]) for row in rows], fraction=config.eval_fraction, seed=config.seed
    )
    hooks.say(f"{len(rows)} pairs: {len(train_rows)} to train on, {len(held_out)} held out")
    hooks.check_stop("reward training")
    difficulty = curriculum_difficulty(
        config.curriculum,
        [rows[i] for i in train_rows],
        [len(examples[i]["chosen_ids"]) + len(examples[i]["rejected_ids"]) for i in train_rows],
    )
    if difficulty is not None:
        train_rows = [train_rows[i] for i in curriculum_order(difficulty)]

    # TRL pads with, and sets on the model, the pad token of the tokenizer it is given: a
    # copy, so the tokenizer saved with the artifact keeps the base's.
    trainer_tokenizer = copy.deepcopy(tokenizer)
    sequences = [example[key] for example in examples for key in ("chosen_ids", "rejected_ids")]
    trainer_tokenizer.pad_token = pooling_pad_token(tokenizer, sequences)
    model = load_reward_model_for_training(base_model_path, config)
    checkpoints = hooks.checkpoint_dir
    trainer_class = in_given_order(RewardTrainer) if difficulty is not None else RewardTrainer
    with tempfile.TemporaryDirectory(prefix="reward-") as scratch:
        args = trl_config(
            config,
            output_dir=checkpoints or Path(scratch),
            save=checkpoints is not None,
        )
        bridge = run_bridge(hooks)
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=rows_dataset([examples[i] for i in train_rows], args, name="train"),
            processing_class=trainer_tokenizer,
            peft_config=reward_lora_config(config),
            callbacks=[bridge],
        )
        evaluation = (
            rows_dataset([examples[i] for i in held_out], args, name="held-out")
            if held_out
            else None
        )
        before = trainer.evaluate(evaluation) if evaluation is not None else {}
        loop = train_with_bridge(trainer, bridge, hooks=hooks, what="Reward model training")
        final = loop.last
        if evaluation is not None:
            final.update(step_metrics(trainer.evaluate(evaluation)))
            final["eval_pairs"] = float(len(held_out))
            final["eval_accuracy_before"] = float(before["eval_accuracy"])
            final["eval_loss_before"] = float(before["eval_loss"])
        final["train_loss"] = loop.mean("loss")
        final["pairs"] = float(len(train_rows))

        hooks.check_stop("reward training")
        model = trainer.model
        model.eval()
        _set_pad_token_id(model, tokenizer.pad_token_id)
        prompts = _unique_prompts(rows, sorted(train_rows), config.normalization_prompts)
        hooks.say(f"normalising rewards on the base policy's replies to {len(prompts)} prompts")
        scorer = RewardScorer(
            model,
            tokenizer,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            device=pick_device(),
        )
        normalization = _base_policy_normalization(scorer, prompts, config, base_model_path)
        final["reward_mean_raw"] = normalization["mean"]
        final["reward_std_raw"] = normalization["std"]
        final["train_seconds"] = time.perf_counter() - started

        hooks.check_stop("reward training")
        record = training_record(
            method="reward", config=config, loop=loop, metrics=final, base_model=base_model_path
        )
        if is_main_process():
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(output_dir) / NORMALIZATION_FILE, normalization)
        save_trained(trainer, tokenizer, output_dir, record)
    return RewardResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
