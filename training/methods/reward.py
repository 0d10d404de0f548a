"""Reward model training (Bradley-Terry pairwise loss) and the scorer other methods call.

The model is the base causal LM with a scalar head: ``AutoModelForSequenceClassification``
with ``num_labels=1``, as ``trl.RewardTrainer`` builds it, trained with a LoRA adapter of
task type ``SEQ_CLS`` (peft then trains and saves the ``score`` head through
``modules_to_save``) or, with ``lora_r=0``, with every weight trainable.

Loss, per pair (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155 Eq. 1):
``-log sigma(r_chosen - r_rejected - m)`` where ``m`` is ``margin_scale`` times the row's
``margin`` with ``use_margin`` (Llama 2's margin loss, Touvron et al. 2023,
https://arxiv.org/abs/2307.09288 Eq. 2) and 0 otherwise, plus
``center_rewards_coefficient * mean((r_chosen + r_rejected) ** 2)`` (Eisenstein et al.
2023, https://arxiv.org/abs/2312.09244 Eq. 2; TRL's ``center_rewards_coefficient``).
Metrics are TRL's: loss, accuracy (share of pairs with ``r_chosen > r_rejected``) and
margin (mean ``r_chosen - r_rejected``). Rankings arrive already expanded to pairs and
ties already left out (``annotation.datasets.selectors.training_preference_rows``).

The arithmetic is ``trl.RewardTrainer``'s, but the loop is ours (``common.run_training_loop``)
for the same reasons as in ``dpo.py``: per-step progress callbacks, cooperative
cancellation, resumable checkpoints and little overhead on CPU. One deliberate
difference: the reward is read at the last attended token (the EOS that ends the reply),
found from the attention mask, not by transformers' "last non-pad token" rule, which
skips that EOS whenever the pad token is the EOS token (as in SmolLM2).

After training, the base policy answers up to ``normalization_prompts`` training prompts
and the raw rewards of those replies give the mean and standard deviation that
``RewardScorer.score`` normalises with, so a reply as good as the base policy's typical
one scores 0 and the scale is comparable across reward models.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# The scorer and the scalar head are the engine's (serving and candidate pairing score with
# them too); kept importable from here.
from models_registry.engine.reward import NORMALIZATION_FILE as NORMALIZATION_FILE
from models_registry.engine.reward import RewardScorer as RewardScorer
from models_registry.engine.reward import score_head, sequence_rewards
from training.methods.common import (
    Hooks,
    TrainingCancelled,
    TrainingConfig,
    autocast_for,
    collate,
    curriculum_difficulty,
    holdout_split,
    library_versions,
    lora_config,
    pick_device,
    prepare_tokenizer,
    require,
    run_training_loop,
    save_artifact,
    seed_everything,
    training_record,
    write_json,
)
from training.methods.dpo import PreferencePair, load_preference_pairs

__all__ = [
    "NORMALIZATION_FILE",
    "RewardConfig",
    "RewardResult",
    "RewardScorer",
    "TrainingCancelled",
    "train_reward",
]

# Floor for the normalising standard deviation: a base policy whose replies all score
# alike (e.g. it always says the same thing) must not turn small differences into huge
# normalised rewards.
MIN_REWARD_STD = 1e-3


@dataclass
class RewardConfig(TrainingConfig):
    """Hyperparameters of a reward model run; invalid values raise ``ValueError``.

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


# --- The scalar-head model ------------------------------------------------------------


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


def load_reward_model_for_training(
    base_model_path: str | Path, config: RewardConfig, *, pad_token_id: int, device: str
) -> Any:
    """The base model with a fresh scalar head in float32 on ``device``, wrapped with a
    LoRA adapter that also trains the head (``lora_r > 0``) or fully trainable."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_model_path), num_labels=1, dtype=torch.float32
    )
    # transformers' own pooling (pipelines, anyone using model(...)) needs the pad id.
    model.config.get_text_config().pad_token_id = pad_token_id
    model.config.pad_token_id = pad_token_id
    _init_score_head(model, config.seed)
    model.to(device)
    if config.lora_r == 0:
        return model
    return get_peft_model(model, lora_config(config, task_type="SEQ_CLS"))


# --- Training -------------------------------------------------------------------------


class _RewardObjective:
    """The pairwise loss and metrics over batches of tokenized preference pairs."""

    def __init__(self, config: RewardConfig, model: Any, pairs: list[PreferencePair], pad_id: int):
        self.config, self.model, self.pairs, self.pad_id = config, model, pairs, pad_id
        self.device = pick_device()
        self.margins = torch.tensor(
            [self._margin(pair) for pair in pairs], dtype=torch.float32, device=self.device
        )

    def _margin(self, pair: PreferencePair) -> float:
        if not self.config.use_margin:
            return 0.0
        return self.config.margin_scale * (pair.row.get("margin") or 0.0)

    def rewards(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        pairs = [self.pairs[i] for i in indices]
        encoded = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        batch = collate(encoded, pad_token_id=self.pad_id, device=self.device)
        with autocast_for(self.device):
            rewards = sequence_rewards(self.model, batch)
        k = len(indices)
        return rewards[:k], rewards[k:], int(batch["attention_mask"].sum())

    def __call__(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, float], int]:
        chosen, rejected, tokens = self.rewards(indices)
        margins = self.margins[torch.tensor(indices, device=self.device)]
        loss = -F.logsigmoid(chosen - rejected - margins).mean()
        if self.config.center_rewards_coefficient:
            centering = torch.mean((chosen + rejected) ** 2)
            loss = loss + self.config.center_rewards_coefficient * centering
        with torch.no_grad():
            metrics = {
                "accuracy": (chosen > rejected).float().mean().item(),
                "margin": (chosen - rejected).mean().item(),
                "chosen_reward": chosen.mean().item(),
                "rejected_reward": rejected.mean().item(),
            }
        return loss, metrics, tokens

    def evaluate(self, indices: list[int]) -> dict[str, float]:
        """Mean ``loss``, ``accuracy`` and ``margin`` over the pairs ``indices``."""
        was_training = self.model.training
        self.model.eval()
        sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
        with torch.no_grad():
            for start in range(0, len(indices), self.config.batch_size):
                batch = indices[start : start + self.config.batch_size]
                loss, metrics, _ = self(batch)
                metrics["loss"] = float(loss)
                for key in sums:
                    sums[key] += metrics[key] * len(batch)
        self.model.train(was_training)
        return {key: value / len(indices) for key, value in sums.items()}


def _unique_prompts(pairs: list[PreferencePair], rows: list[int], limit: int) -> list[list]:
    """The first ``limit`` distinct prompt conversations of ``rows``, in dataset order."""
    seen: dict[str, list] = {}
    for index in rows:
        pair = pairs[index]
        if pair.prompt_key not in seen:
            seen[pair.prompt_key] = pair.row["prompt"]
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
    ``dpo.read_preference_rows``), with optional ``margin`` and ``agreement`` per row.
    Writes the adapter with the score head (``lora_r > 0``) or the full model, the
    tokenizer, ``reward_normalization.json`` and ``training_result.json`` into
    ``output_dir``; the caller gives a private directory and publishes it. Metrics hold
    the last step's, the held-out ones (``eval_loss``, ``eval_accuracy``, ``eval_margin``,
    ``eval_pairs``, and ``eval_accuracy_before``/``eval_loss_before`` of the untrained
    model) and the normalisation (``reward_mean_raw``, ``reward_std_raw``). ``hooks``
    report progress, cancel (``TrainingCancelled``, nothing saved) and checkpoint/resume.
    """
    from transformers import AutoTokenizer

    hooks = hooks or Hooks()
    started = time.perf_counter()
    seed_everything(config.seed)
    device = pick_device()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    pairs = load_preference_pairs(
        dataset_path,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    train_rows, held_out = holdout_split(
        [p.prompt_key for p in pairs], fraction=config.eval_fraction, seed=config.seed
    )
    hooks.say(f"{len(pairs)} pairs: {len(train_rows)} to train on, {len(held_out)} held out")
    model = load_reward_model_for_training(
        base_model_path, config, pad_token_id=tokenizer.pad_token_id, device=device
    )
    objective = _RewardObjective(config, model, pairs, tokenizer.pad_token_id)
    before = objective.evaluate(held_out) if held_out else {}

    loop = run_training_loop(
        model=model,
        config=config,
        rows=train_rows,
        compute=objective,
        hooks=hooks,
        difficulty=curriculum_difficulty(
            config.curriculum, [p.row for p in pairs], [p.tokens for p in pairs]
        ),
    )
    final = loop.last
    if held_out:
        final.update({f"eval_{k}": v for k, v in objective.evaluate(held_out).items()})
        final["eval_pairs"] = float(len(held_out))
        final["eval_accuracy_before"] = before["accuracy"]
        final["eval_loss_before"] = before["loss"]
    final["train_loss"] = loop.mean("loss")
    final["pairs"] = float(len(train_rows))

    hooks.check_stop("reward training")
    model.eval()
    prompts = _unique_prompts(pairs, train_rows, config.normalization_prompts)
    hooks.say(f"normalising rewards on the base policy's replies to {len(prompts)} prompts")
    scorer = RewardScorer(
        model,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        device=device,
    )
    normalization = _base_policy_normalization(scorer, prompts, config, base_model_path)
    final["reward_mean_raw"] = normalization["mean"]
    final["reward_std_raw"] = normalization["std"]
    final["train_seconds"] = time.perf_counter() - started

    hooks.check_stop("reward training")
    record = training_record(
        method="reward", config=config, loop=loop, metrics=final, base_model=base_model_path
    )
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / NORMALIZATION_FILE, normalization)
    save_artifact(model, tokenizer, output_dir, record)
    return RewardResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
