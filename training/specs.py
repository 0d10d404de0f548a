"""What each training method needs from the product: its config class, the dataset it
trains on, what it produces, and how the worker calls it.

The methods themselves (``training/methods/``) know nothing of runs, versions or
snapshots; this table is the one place that maps a ``TrainingRun.method`` onto them, so
services, forms, the API and the management command all agree.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from training.methods.common import MethodConfig, require


@dataclass
class SoupConfig(MethodConfig):
    """A rewarded soup: ``weight`` is the share of the base version's adapter, the rest is
    the ``mix_with`` version's (Ramé et al. 2023)."""

    method_name = "soup"

    weight: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        require(0 <= self.weight <= 1, "weight must be between 0 and 1")
        require(self.seed >= 0, "seed must be >= 0")


ALL_RUNTIME_SETTINGS = ("mixed_precision", "gradient_checkpointing", "qlora")
RUNTIME_DEFAULTS = {"mixed_precision": "auto", "gradient_checkpointing": False, "qlora": False}


@dataclass(frozen=True)
class MethodSpec:
    method: str
    label: str
    module: str
    config_name: str
    dataset: str | None  # snapshot dataset (services.DATASETS); None: soups
    produces: str  # ModelVersion kind: "policy" or "reward"
    needs_reward_model: bool = False
    # A reward model may be given (RRHF: it scores the responses instead of people).
    optional_reward_model: bool = False
    mixes_two_versions: bool = False
    help: str = ""
    # The runtime settings that apply: all three on TRL's trainers (trl_runtime), precision
    # and gradient checkpointing on our accelerate loop (RRHF); ``distributable``: it can
    # also run in several processes.
    runtime_settings: tuple[str, ...] = ()
    distributable: bool = False

    def config_class(self) -> type[MethodConfig]:
        if self.method == "soup":
            return SoupConfig
        return getattr(importlib.import_module(self.module), self.config_name)

    def config_from(self, data: dict[str, Any]) -> MethodConfig:
        """Validated config; raises ValueError with a message naming the bad field."""
        return self.config_class().from_dict(data or {})

    def train_function(self):
        return getattr(importlib.import_module(self.module), f"train_{self.method}")


METHODS: dict[str, MethodSpec] = {
    spec.method: spec
    for spec in (
        MethodSpec(
            "sft",
            "SFT",
            "training.methods.sft",
            "SFTConfig",
            dataset="sft",
            produces="policy",
            runtime_settings=ALL_RUNTIME_SETTINGS,
            distributable=True,
            help="Supervised fine-tuning on demonstrations (and chosen replies if asked).",
        ),
        MethodSpec(
            "reward",
            "Reward model",
            "training.methods.reward",
            "RewardConfig",
            dataset="preferences",
            produces="reward",
            runtime_settings=ALL_RUNTIME_SETTINGS,
            distributable=True,
            help="A scalar reward model from comparisons and rankings (pairwise loss).",
        ),
        MethodSpec(
            "dpo",
            "DPO",
            "training.methods.dpo",
            "DPOConfig",
            dataset="preferences",
            produces="policy",
            runtime_settings=ALL_RUNTIME_SETTINGS,
            distributable=True,
            help="Direct preference optimisation on comparisons, with an NLL term on chosen.",
        ),
        MethodSpec(
            "kto",
            "KTO",
            "training.methods.kto",
            "KTOConfig",
            dataset="unpaired",
            produces="policy",
            runtime_settings=ALL_RUNTIME_SETTINGS,
            distributable=True,
            help="Kahneman-Tversky optimisation on single replies marked good or bad: ratings "
            "against a threshold, comparisons' winners and losers, rankings' best and worst.",
        ),
        MethodSpec(
            "rrhf",
            "RRHF",
            "training.methods.rrhf",
            "RRHFConfig",
            dataset="rankings",
            produces="policy",
            runtime_settings=("mixed_precision", "gradient_checkpointing"),
            distributable=True,
            optional_reward_model=True,
            help="Rank each prompt's scored responses (rankings, comparisons, ratings, "
            "demonstrations) by length-normalised log-probability, plus SFT on the best. "
            "With a reward model, every response of each prompt (all model versions' "
            "candidates, imported ones, demonstrations) is scored by it instead, in one "
            "process.",
        ),
        MethodSpec(
            "ppo",
            "PPO",
            "training.methods.ppo",
            "PPOConfig",
            dataset="prompts",
            produces="policy",
            needs_reward_model=True,
            help="PPO on the project's prompts against a trained reward model.",
        ),
        MethodSpec(
            "raft",
            "RAFT",
            "training.methods.raft",
            "RAFTConfig",
            dataset="prompts",
            produces="policy",
            runtime_settings=ALL_RUNTIME_SETTINGS,
            needs_reward_model=True,
            help="Sample k replies per prompt, keep the reward model's best, fine-tune on them.",
        ),
        MethodSpec(
            "soup",
            "Rewarded soup",
            "training.methods.soups",
            "SoupConfig",
            dataset=None,
            produces="policy",
            mixes_two_versions=True,
            help="Interpolate the LoRA weights of two runs from the same base.",
        ),
    )
}


def check_runtime_settings(spec: MethodSpec, config: MethodConfig) -> None:
    """Refuse runtime settings the method's loop would ignore (``ValueError``)."""
    ignored = [
        name
        for name, default in RUNTIME_DEFAULTS.items()
        if name not in spec.runtime_settings and getattr(config, name, default) != default
    ]
    if ignored:
        offered = [s.label for s in METHODS.values() if set(ignored) <= set(s.runtime_settings)]
        raise ValueError(
            f"{', '.join(ignored)}: not offered for {spec.label}, whose loop would ignore it; "
            f"offered for {', '.join(offered)}"
        )


def method_spec(method: str) -> MethodSpec:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}") from None
