"""Proximal Policy Optimization (PPO) from a reward function, with a LoRA adapter.

TRL no longer ships PPO, so this is PPO on plain torch following
"The N Implementation Details of RLHF with PPO" (Huang et al. 2023,
https://huggingface.co/blog/the_n_implementation_details_of_rlhf_with_ppo), which
reproduces OpenAI's lm-human-preferences (Ziegler et al. 2019,
https://arxiv.org/abs/1909.08593), and TRL's former ``PPOTrainer``/``PPOv2Trainer``:

- one *step* is one rollout plus its update: ``rollout_batch_size`` prompts, one sampled
  reply each (pure temperature sampling: no top-k, no top-p), scored by ``score``;
- per-token reward ``-kl_coef * (log pi - log ref)`` on every reply token, plus the score
  on the reply's last token only; replies that never emit EOS lose
  ``missing_eos_penalty`` from their score;
- log-probabilities always come from logits divided by the sampling temperature, so the
  ratio and the KL are taken on the distribution the replies were drawn from;
- the reference policy is the base model itself (the LoRA adapter disabled), so no
  second copy is held in memory; the value head is a separate ``Linear(hidden, 1)`` on
  the policy's last hidden states, initialised to zero;
- GAE advantages computed once per rollout and whitened over all its valid reply tokens
  (as PPOv2; the old ``PPOTrainer`` whitened per mini-batch); clipped policy and value
  losses over ``ppo_epochs`` passes of shuffled mini-batches. Scores are used as given:
  the reward model normalises them (OpenAI's reward gain/bias);
- the KL coefficient adapts as in Ziegler et al. (proportional error clipped to
  [-0.2, 0.2]) unless ``adaptive_kl`` is off;
- dropout stays off (the model is kept in eval mode) so the rollout's log-probs and the
  update's first log-probs agree exactly.

Every piece of arithmetic is a small pure function, tested on its own. Nothing here
imports Django; ``training/tasks.py`` is the bridge. The reward function is passed in:
in production ``training.methods.reward.RewardScorer.load(path).score``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models_registry.engine.ml import checked_rewards
from training.methods.common import (
    Hooks,
    LoopResult,
    Optimisation,
    TrainingCancelled,
    TrainingConfig,
    autocast_for,
    chat_prompt_ids,
    holdout_split,
    library_versions,
    load_causal_lm_for_training,
    pick_device,
    prepare_tokenizer,
    prompt_key,
    read_prompts,
    require,
    save_artifact,
    seed_everything,
    trainable_parameters,
    training_record,
)

__all__ = [
    "PPOConfig",
    "PPOResult",
    "ScoreFunction",
    "TrainingCancelled",
    "train_ppo",
]

# score(prompts, replies) -> one float per reply; prompts are chat messages, replies text.
ScoreFunction = Callable[[list[list[dict]], list[str]], Sequence[float]]

VALUE_HEAD_FILE = "value_head.safetensors"
MAX_GRAD_NORM = 1.0
# PyTorch's Adam applies epsilon differently from the TF1 Adam OpenAI used; the larger
# epsilon (CleanRL's PPO default) damps the aggressive first updates the N-details blog
# reports for PyTorch.
ADAM_EPS = 1e-5
WHITEN_EPS = 1e-8


@dataclass
class PPOConfig(TrainingConfig):
    """Hyperparameters of a LoRA PPO run; invalid values raise ``ValueError``.

    Progress is counted in rollouts: one step = sample ``rollout_batch_size`` replies,
    score them, then ``ppo_epochs`` passes over them in mini-batches of
    ``mini_batch_size`` replies (one optimizer step each, forwarded ``batch_size`` at a
    time). Prompts are drawn from successive shuffled passes over the training prompts,
    so ``epochs`` is how often each prompt is sampled: a run has
    ``ceil(epochs * prompts / rollout_batch_size)`` steps, capped by ``max_steps``.
    ``warmup_ratio`` and the linear decay apply to the optimizer steps of the whole run.

    Defaults, for LoRA on a ~100M-parameter instruct model (SmolLM2-135M) and a reward
    model whose scores are normalised to mean 0, std 1 on the base policy's replies:

    - ``learning_rate=3e-5``: TRL's LoRA PPO examples (stack-llama) used 1.4e-5 and
      OpenAI used 1e-5 for full weights; LoRA on a small model moves less per step, and
      the clip range and KL penalty bound what one rollout can change, so 2x that.
    - ``temperature=0.7``: what lm-human-preferences and TRL's PPOv2 sample with, and
      the serving default (``GenerationParams``), so the policy is trained on the
      distribution it is served with.
    - ``init_kl_coef=0.05`` (PPOv2's default), ``kl_target=6``, ``kl_horizon=10000``
      (Ziegler et al.), ``gamma=1``, ``lam=0.95``, ``cliprange=0.2``,
      ``cliprange_value=0.2``, ``vf_coef=0.1``, ``ppo_epochs=4``: the N-details values.
    - ``missing_eos_penalty=1.0``: one standard deviation of the normalised reward.
    - ``eval_samples=4`` replies per held-out prompt, sampled like the training replies
      rather than greedy: PPO optimises the sampled policy's expected score, and a greedy
      reply can keep a token whose sampling probability training has driven to zero.
    - ``rollout_batch_size=16``, ``mini_batch_size=8``: two optimizer steps per PPO epoch;
      16 replies of 64 tokens keep a step to seconds on a GPU.
    """

    method_name = "PPO"

    learning_rate: float = 3e-5
    batch_size: int = 8
    rollout_batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.7
    init_kl_coef: float = 0.05
    adaptive_kl: bool = True
    kl_target: float = 6.0
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    missing_eos_penalty: float = 1.0
    eval_samples: int = 4

    def validate(self) -> None:
        super().validate()
        require(self.lora_r >= 1, "lora_r must be >= 1 (PPO's reference is the base model)")
        require(
            self.gradient_accumulation_steps == 1,
            "gradient_accumulation_steps must be 1 for PPO (an optimizer step covers "
            "mini_batch_size replies, forwarded batch_size at a time)",
        )
        require(self.curriculum is None, "curriculum must be null for PPO (prompts are sampled)")
        require(
            self.lora_dropout == 0,
            "lora_dropout must be 0 for PPO (the rollout's and the update's log-probs must agree)",
        )
        require(self.rollout_batch_size >= 1, "rollout_batch_size must be >= 1")
        require(
            1 <= self.mini_batch_size <= self.rollout_batch_size,
            "mini_batch_size must be >= 1 and <= rollout_batch_size",
        )
        require(self.ppo_epochs >= 1, "ppo_epochs must be >= 1")
        require(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        require(
            self.max_prompt_length + self.max_new_tokens <= self.max_length,
            "max_prompt_length + max_new_tokens must be <= max_length",
        )
        require(self.temperature > 0, "temperature must be > 0")
        require(self.init_kl_coef >= 0, "init_kl_coef must be >= 0")
        require(self.kl_target > 0, "kl_target must be > 0")
        require(self.kl_horizon >= 1, "kl_horizon must be >= 1")
        require(0 <= self.gamma <= 1, "gamma must be in [0, 1]")
        require(0 <= self.lam <= 1, "lam must be in [0, 1]")
        require(self.cliprange > 0, "cliprange must be > 0")
        require(self.cliprange_value > 0, "cliprange_value must be > 0")
        require(self.vf_coef >= 0, "vf_coef must be >= 0")
        require(self.missing_eos_penalty >= 0, "missing_eos_penalty must be >= 0")
        require(self.eval_samples >= 1, "eval_samples must be >= 1")


@dataclass
class PPOResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


# --- The PPO arithmetic: small pure functions -----------------------------------------
# Tensors are (batch, reply tokens); ``mask`` is True on real reply tokens (up to and
# including EOS) and False on padding, always a prefix of each row.


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true (0 where nothing is). ``torch.where`` rather
    than a product, so NaN or inf at masked positions cannot leak in."""
    mask = mask.bool()
    total = torch.where(mask, values, 0.0)
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` shifted and scaled to mean 0 and (unbiased) std 1 over the masked
    positions, as TRL's ``masked_whiten``; masked-out positions become 0."""
    mask = mask.bool()
    mean = masked_mean(values, mask)
    centred = values - mean
    count = mask.sum()
    variance = masked_mean(centred**2, mask)
    if count > 1:
        variance = variance * count / (count - 1)  # Bessel's correction
    return torch.where(mask, centred * torch.rsqrt(variance + WHITEN_EPS), 0.0)


def reply_mask(
    response_ids: torch.Tensor, eos_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, finished)`` for generated reply tokens.

    ``mask`` is True up to and including each row's first EOS (everything after it is
    padding or junk); ``finished`` is True for rows that emitted EOS at all.
    """
    is_eos = torch.isin(response_ids, torch.tensor(list(eos_ids), device=response_ids.device))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()
    return eos_before == 0, is_eos.any(dim=1)


def penalize_missing_eos(
    scores: torch.Tensor, finished: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Scores with ``penalty`` taken off every reply that never emitted EOS (it ran into
    ``max_new_tokens``), as TRL's ``missing_eos_penalty``."""
    return torch.where(finished.bool(), scores, scores - penalty)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True position in each row (0 for an all-False row)."""
    width = mask.shape[1]
    return width - 1 - mask.bool().flip(dims=[1]).int().argmax(dim=1)


def kl_penalty_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``(rewards, kl)``.

    ``kl = logprobs - ref_logprobs`` on reply tokens (the sampled-token estimate of the
    KL to the reference), ``rewards = -kl_coef * kl`` with each reply's score added at its
    last reply token only (Ziegler et al. 2019, Eq. 2). Both are 0 on padding.
    """
    mask = mask.bool()
    kl = torch.where(mask, logprobs - ref_logprobs, 0.0)
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, kl


def next_kl_coef(kl_coef: float, *, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """The adaptive KL controller of Ziegler et al. 2019 (Sec. 2.2): the proportional error
    ``kl / target - 1`` clipped to [-0.2, 0.2] moves the coefficient by
    ``error * n_steps / horizon``, where ``n_steps`` is the number of replies (episodes)
    the KL was measured on."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


class ValueHead(nn.Module):
    """``Linear(hidden, 1)`` mapping each hidden state to a value; weights and bias start
    at zero, so every value is exactly 0 before training and the first value targets are
    the plain returns."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden_states).squeeze(-1)


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each reply.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` is 0 after the last reply token),
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(advantages, returns)`` with
    ``returns = advantages + values``, both 0 on padding. With ``gamma = lam = 1`` the
    advantages are the rewards-to-go minus the values.
    """
    mask = mask.bool()
    rewards = torch.where(mask, rewards, 0.0)
    values = torch.where(mask, values, 0.0)
    width = rewards.shape[1]
    next_advantage = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        reversed_advantages.append(next_advantage)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = advantages + values
    return torch.where(mask, advantages, 0.0), torch.where(mask, returns, 0.0)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, Eq. 7) as a loss to minimise:
    the token mean of ``max(-A * r, -A * clip(r, 1 - eps, 1 + eps))`` with
    ``r = exp(logprobs - old_logprobs)``. Returns ``(loss, clipfrac)``, clipfrac being the
    share of tokens where the clipped term is the larger (the gradient is cut there)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss as in OpenAI's baselines and TRL: half the token mean of
    ``max((V - R)^2, (V_clipped - R)^2)`` where ``V_clipped`` stays within
    ``cliprange_value`` of the rollout's value. Returns ``(loss, clipfrac)``."""
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities of ``tokens`` under ``softmax(logits / temperature)``: the
    distribution the replies were sampled from (N-details: without the division the KL
    and the ratio are measured on the wrong distribution)."""
    logits = logits.float() / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` at every position."""
    logits = logits.float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def sampling_kwargs(
    *, max_new_tokens: int, temperature: float, eos_ids: Sequence[int], pad_id: int
) -> dict[str, Any]:
    """``generate`` arguments for sampling from exactly ``softmax(logits / temperature)``:
    top-k and top-p off (``top_k=0``, ``top_p=1.0``; transformers' own default is
    ``top_k=50``), because the log-probs PPO optimises come from the temperature-scaled
    logits alone. Other logits processors stay off through ``neutral_generation_config``.
    """
    return {
        "do_sample": True,
        "temperature": temperature,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": max_new_tokens,
        "eos_token_id": list(eos_ids),
        "pad_token_id": pad_id,
    }


def neutral_generation_config(model: Any) -> None:
    """Replace ``model``'s generation config by one holding only its special token ids.

    ``generate`` fills every argument it is not given from the model's
    ``generation_config.json``, which may switch on a repetition penalty, min-p and the
    like; any of those would make the sampled distribution differ from the one PPO
    computes log-probs for.
    """
    from transformers import GenerationConfig

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = base.generation_config
    base.generation_config = GenerationConfig(
        bos_token_id=current.bos_token_id,
        eos_token_id=current.eos_token_id,
        pad_token_id=current.pad_token_id,
    )


def rollout_prompts(step: int, *, prompts: int, batch: int, seed: int) -> list[int]:
    """Indices of the prompts of rollout ``step`` (0-based): positions
    ``[step * batch, (step + 1) * batch)`` of a stream of passes over ``range(prompts)``,
    each pass shuffled by ``seed + pass``. Depends only on its arguments, so a resumed run
    samples the same prompts."""
    indices = []
    for position in range(step * batch, (step + 1) * batch):
        passes, offset = divmod(position, prompts)
        generator = torch.Generator().manual_seed(seed + passes)
        indices.append(int(torch.randperm(prompts, generator=generator)[offset]))
    return indices


# --- Data -----------------------------------------------------------------------------


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


# --- Policy, value head and batches ---------------------------------------------------


@dataclass
class Batch:
    """Left-padded prompts followed by right-padded replies, ready for a forward pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.response_ids.shape[1]


def left_pad(queries: Sequence[Sequence[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of prompts padded on the left (to generate from)."""
    width = max(len(q) for q in queries)
    ids = torch.full((len(queries), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(queries), width), dtype=torch.long)
    for row, query in enumerate(queries):
        if query:
            ids[row, width - len(query) :] = torch.tensor(query)
            mask[row, width - len(query) :] = 1
    return ids, mask


def pack_batch(
    queries: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_id: int,
    device: str | torch.device,
) -> Batch:
    """Pack prompt and reply token lists; positions count real tokens only, as in
    ``generate`` with left padding, so the log-probs match the sampling."""
    prompt_ids, prompt_mask = left_pad(queries, pad_id=pad_id)
    reply_width = max(len(r) for r in responses)
    response_ids = torch.full((len(responses), reply_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(responses), reply_width), dtype=torch.long)
    for row, response in enumerate(responses):
        response_ids[row, : len(response)] = torch.tensor(response)
        response_mask[row, : len(response)] = 1
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1).to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        response_ids=response_ids.to(device),
        response_mask=response_mask.bool().to(device),
    )


class PolicyWithValueHead(nn.Module):
    """The LoRA-wrapped policy and its value head as one module, so the trainable weights
    of both (and nothing else) go into checkpoints."""

    def __init__(self, policy: Any):
        super().__init__()
        self.policy = policy
        neutral_generation_config(policy)
        self.value_head = ValueHead(policy.config.get_text_config().hidden_size)
        self.value_head.to(next(policy.parameters()).device)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)`` at the positions that predict each reply token: raw logits
        (batch, reply, vocab) and the value of the state before each reply token."""
        width = batch.response_ids.shape[1]
        start = batch.prompt_width - 1
        output = self.policy(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=width + 1,
        )
        hidden = output.hidden_states[-1][:, start : start + width]
        return output.logits[:, :-1], self.value_head(hidden).float()

    def reference_logits(self, batch: Batch) -> torch.Tensor:
        """Logits of the base model (the adapter disabled) at the reply positions."""
        with self.policy.disable_adapter():
            output = self.policy(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
                logits_to_keep=batch.response_ids.shape[1] + 1,
            )
        return output.logits[:, :-1]


def pad_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack 1-D tensors, right-padded with zeros to ``width``."""
    out = torch.zeros((len(rows), width), dtype=rows[0].dtype, device=rows[0].device)
    for index, row in enumerate(rows):
        out[index, : row.shape[0]] = row
    return out


@dataclass
class Rollout:
    """One step's sampled replies and everything the update needs, per reply token."""

    queries: list[list[int]]
    responses: list[list[int]]
    mask: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    metrics: dict[str, float]


def check_scores(values: Any, count: int) -> torch.Tensor:
    """The reward function's output as a float tensor; ``ValueError`` unless it is
    ``count`` finite numbers (the engine's check, which best-of-n sampling uses too)."""
    return torch.tensor(checked_rewards(values, count), dtype=torch.float32)


class _PPO:
    """Rollouts, updates and held-out evaluation for one run."""

    def __init__(
        self,
        config: PPOConfig,
        model: PolicyWithValueHead,
        tokenizer: Any,
        prompts: list[list[dict[str, str]]],
        prompt_ids: list[list[int]],
        score: ScoreFunction,
        hooks: Hooks,
    ):
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.prompts, self.prompt_ids, self.score, self.hooks = prompts, prompt_ids, score, hooks
        self.device = pick_device()
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = _eos_ids(model.policy, tokenizer)

    # -- generation --

    def generate(self, indices: list[int]) -> tuple[list[list[int]], list[bool]]:
        """Sampled replies (token lists up to and including EOS) and whether each ended."""
        config = self.config
        kwargs = sampling_kwargs(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            eos_ids=self.eos_ids,
            pad_id=self.pad_id,
        )
        replies: list[list[int]] = []
        finished: list[bool] = []
        for start in range(0, len(indices), config.batch_size):
            chunk = indices[start : start + config.batch_size]
            input_ids, attention_mask = left_pad(
                [self.prompt_ids[i] for i in chunk], pad_id=self.pad_id
            )
            with torch.no_grad(), autocast_for(self.device):
                output = self.model.policy.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    **kwargs,
                )
            new_tokens = output[:, input_ids.shape[1] :]
            mask, ended = reply_mask(new_tokens, self.eos_ids)
            for row, n in enumerate(mask.sum(dim=1).tolist()):
                replies.append(new_tokens[row, :n].tolist())
            finished.extend(ended.tolist())
        return replies, finished

    def reply_texts(self, replies: list[list[int]]) -> list[str]:
        eos = set(self.eos_ids)
        texts = []
        for reply in replies:
            tokens = reply[:-1] if reply and reply[-1] in eos else reply
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return texts

    def scores_for(self, indices: list[int], replies: list[list[int]]) -> torch.Tensor:
        values = self.score([self.prompts[i] for i in indices], self.reply_texts(replies))
        return check_scores(values, len(indices))

    # -- rollout --

    def collect(self, indices: list[int], kl_coef: float) -> Rollout:
        """Sample, score and evaluate one rollout (no gradients)."""
        config = self.config
        self.model.eval()
        replies, finished_list = self.generate(indices)
        raw_scores = self.scores_for(indices, replies).to(self.device)
        finished = torch.tensor(finished_list, device=self.device)
        queries = [self.prompt_ids[i] for i in indices]
        logprobs, ref_logprobs, values, entropy = self.token_statistics(queries, replies)
        lengths = torch.tensor([len(r) for r in replies], device=self.device)
        mask = torch.arange(logprobs.shape[1], device=self.device)[None, :] < lengths[:, None]

        scores = penalize_missing_eos(raw_scores, finished, config.missing_eos_penalty)
        rewards, kl = kl_penalty_rewards(logprobs, ref_logprobs, scores, mask, kl_coef)
        advantages, returns = gae_advantages(
            rewards, values, mask, gamma=config.gamma, lam=config.lam
        )
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        metrics = {
            "score": float(raw_scores.mean()),
            "reward": float(rewards.sum(dim=1).mean()),
            "kl": float(kl.sum(dim=1).mean()),
            "kl_coef": float(kl_coef),
            "entropy": float(masked_mean(entropy, mask)),
            "reply_length": float(lengths.float().mean()),
            "eos_rate": float(finished.float().mean()),
        }
        return Rollout(queries, replies, mask, logprobs, values, advantages, returns, metrics)

    def token_statistics(
        self, queries: list[list[int]], replies: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per reply token, right-padded with zeros to the longest reply: the policy's and
        the reference's log-probs, the values and the policy's entropy."""
        columns: tuple[list[torch.Tensor], ...] = ([], [], [], [])
        temperature = self.config.temperature
        with torch.no_grad():
            for start in range(0, len(queries), self.config.batch_size):
                stop = start + self.config.batch_size
                batch = pack_batch(
                    queries[start:stop], replies[start:stop], pad_id=self.pad_id, device=self.device
                )
                with autocast_for(self.device):
                    logits, values = self.model(batch)
                    ref_logits = self.model.reference_logits(batch)
                statistics = (
                    token_logprobs(logits, batch.response_ids, temperature),
                    token_logprobs(ref_logits, batch.response_ids, temperature),
                    values,
                    token_entropy(logits, temperature),
                )
                for row, n in enumerate(batch.response_mask.sum(dim=1).tolist()):
                    for column, values_of_batch in zip(columns, statistics, strict=True):
                        column.append(values_of_batch[row, :n])
        width = max(len(r) for r in replies)
        logprobs, ref_logprobs, values, entropy = (pad_rows(c, width) for c in columns)
        return logprobs, ref_logprobs, values, entropy

    # -- update --

    def update(
        self, rollout: Rollout, optimizer: Any, scheduler: Any, step: int
    ) -> dict[str, float]:
        """``ppo_epochs`` passes over the rollout in shuffled mini-batches; returns the
        token-weighted mean losses and statistics, and the last learning rate."""
        config = self.config
        self.model.eval()  # dropout off: see the module docstring
        trainable = trainable_parameters(self.model)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        count = len(rollout.responses)
        sums: dict[str, float] = {}
        total_tokens = 0
        learning_rate = 0.0
        for _ in range(config.ppo_epochs):
            order = torch.randperm(count, generator=generator).tolist()
            for start in range(0, count, config.mini_batch_size):
                mini = order[start : start + config.mini_batch_size]
                mini_tokens = int(rollout.mask[mini].sum())
                for micro_start in range(0, len(mini), config.batch_size):
                    micro = mini[micro_start : micro_start + config.batch_size]
                    loss, stats, tokens = self.micro_batch_loss(rollout, micro)
                    (loss * tokens / mini_tokens).backward()
                    total_tokens += tokens
                    for key, value in stats.items():
                        sums[key] = sums.get(key, 0.0) + value * tokens
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
                learning_rate = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        metrics = {key: value / max(total_tokens, 1) for key, value in sums.items()}
        metrics["learning_rate"] = float(learning_rate)
        return metrics

    def micro_batch_loss(
        self, rollout: Rollout, rows: list[int]
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        config = self.config
        batch = pack_batch(
            [rollout.queries[i] for i in rows],
            [rollout.responses[i] for i in rows],
            pad_id=self.pad_id,
            device=self.device,
        )
        width = batch.response_ids.shape[1]
        index = torch.tensor(rows, device=self.device)
        mask = rollout.mask[index, :width]
        with autocast_for(self.device):
            logits, values = self.model(batch)
        logprobs = token_logprobs(logits, batch.response_ids, config.temperature)
        old_logprobs = rollout.logprobs[index, :width]
        policy_loss, clipfrac = clipped_policy_loss(
            logprobs, old_logprobs, rollout.advantages[index, :width], mask, config.cliprange
        )
        value_loss, value_clipfrac = clipped_value_loss(
            values,
            rollout.values[index, :width],
            rollout.returns[index, :width],
            mask,
            config.cliprange_value,
        )
        with torch.no_grad():
            stats = {
                "policy_loss": float(policy_loss),
                "value_loss": float(value_loss),
                "clipfrac": float(clipfrac),
                "value_clipfrac": float(value_clipfrac),
                "approx_kl": float(0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)),
            }
        return policy_loss + config.vf_coef * value_loss, stats, int(mask.sum())

    # -- evaluation --

    def evaluate(self, indices: list[int], suffix: str) -> dict[str, float]:
        """Mean raw score and EOS rate of ``eval_samples`` replies per held-out prompt,
        sampled as in training from a fixed seed (so before and after see the same random
        numbers); ``{}`` without held-out prompts."""
        if not indices:
            return {}
        self.model.eval()
        seed_everything(self.config.seed)
        rows = [i for i in indices for _ in range(self.config.eval_samples)]
        replies: list[list[int]] = []
        finished: list[bool] = []
        for start in range(0, len(rows), self.config.batch_size):
            self.hooks.check_stop("PPO training")
            chunk_replies, chunk_finished = self.generate(
                rows[start : start + self.config.batch_size]
            )
            replies += chunk_replies
            finished += chunk_finished
        scores = self.scores_for(rows, replies)
        return {
            f"eval_score_{suffix}": float(scores.mean()),
            f"eval_eos_rate_{suffix}": sum(finished) / len(finished),
        }


def total_rollouts(config: PPOConfig, train_prompts: int) -> int:
    """Steps (rollouts) of a run: every prompt sampled ``epochs`` times on average,
    capped by ``max_steps``."""
    steps = math.ceil(config.epochs * train_prompts / config.rollout_batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def _prompt_token_ids(
    tokenizer: Any, prompts: list[tuple[int, list[dict[str, str]]]], max_prompt_length: int
) -> list[list[int]]:
    token_ids = []
    for line, messages in prompts:
        try:
            ids = chat_prompt_ids(tokenizer, messages)
        except Exception as exc:  # template errors surface as jinja/tokenizer exceptions
            raise ValueError(f"line {line}: cannot tokenize: {exc}") from exc
        token_ids.append(ids[-max_prompt_length:])  # keep the end: the generation prompt
    return token_ids


def save_value_head(value_head: ValueHead, output_dir: Path) -> None:
    """Write the value head next to the adapter (resuming PPO needs it; serving does not)."""
    from safetensors.torch import save_file

    output_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}
    save_file(tensors, str(output_dir / VALUE_HEAD_FILE))


def train_ppo(
    config: PPOConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    score: ScoreFunction,
    hooks: Hooks | None = None,
) -> PPOResult:
    """Train a LoRA adapter on ``base_model_path`` with PPO against ``score`` and save it.

    ``dataset_path`` is JSONL whose rows carry a ``prompt`` (messages) or ``messages``
    (see ``read_prompts``); ``eval_fraction`` of the distinct prompts is held out, and the
    mean ``score`` of ``eval_samples`` replies per held-out prompt, sampled as in training
    from a fixed seed, is reported before and after training
    (``eval_score_before``/``eval_score_after``). ``score(prompts, replies)`` returns one
    finite number per reply. Writes the adapter, tokenizer, ``value_head.safetensors`` and
    ``training_result.json`` (per-step history, final and held-out metrics, config, seed,
    library versions) into ``output_dir``. ``hooks`` report progress after every rollout,
    cancel (``TrainingCancelled``, nothing saved) and checkpoint/resume: a resumed run
    continues with the same prompts, samples and KL coefficient as an uninterrupted one.
    """
    from transformers import AutoTokenizer

    hooks = hooks or Hooks()
    started = time.perf_counter()
    seed_everything(config.seed)
    device = pick_device()
    prompts = read_prompts(dataset_path)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    prompt_ids = _prompt_token_ids(tokenizer, prompts, config.max_prompt_length)
    train_rows, held_out = holdout_split(
        [prompt_key(messages) for _, messages in prompts],
        fraction=config.eval_fraction,
        seed=config.seed,
    )
    hooks.say(f"{len(prompts)} prompts: {len(train_rows)} to train on, {len(held_out)} held out")
    model = PolicyWithValueHead(load_causal_lm_for_training(base_model_path, config, device=device))
    ppo = _PPO(config, model, tokenizer, [m for _, m in prompts], prompt_ids, score, hooks)

    total_steps = total_rollouts(config, len(train_rows))
    updates_per_step = config.ppo_epochs * math.ceil(
        config.rollout_batch_size / config.mini_batch_size
    )
    optimisation, step, state = Optimisation.start(
        model,
        learning_rate=config.learning_rate,
        total_updates=total_steps * updates_per_step,
        warmup_ratio=config.warmup_ratio,
        checkpoint_dir=hooks.checkpoint_dir,
        eps=ADAM_EPS,
    )
    history: list[dict[str, float]] = list(state.get("history", []))
    kl_coef = float(state.get("kl_coef", config.init_kl_coef))
    if step:
        hooks.say(f"resumed from the checkpoint at step {step} of {total_steps}")
        eval_before = dict(state.get("eval_before", {}))
    else:
        eval_before = ppo.evaluate(held_out, "before")

    def checkpoint() -> None:
        optimisation.save(
            step=step, state={"history": history, "kl_coef": kl_coef, "eval_before": eval_before}
        )

    while step < total_steps:
        hooks.check_stop("PPO training")
        # Seeded by step, so a resumed run samples what an uninterrupted one would.
        seed_everything(config.seed * 1_000_003 + step)
        indices = [
            train_rows[i]
            for i in rollout_prompts(
                step, prompts=len(train_rows), batch=config.rollout_batch_size, seed=config.seed
            )
        ]
        step_started = time.perf_counter()
        rollout = ppo.collect(indices, kl_coef)
        metrics = {
            **rollout.metrics,
            **ppo.update(rollout, optimisation.optimizer, optimisation.scheduler, step),
        }
        metrics["step_seconds"] = time.perf_counter() - step_started
        if config.adaptive_kl:
            kl_coef = next_kl_coef(
                kl_coef,
                kl=metrics["kl"],
                target=config.kl_target,
                horizon=config.kl_horizon,
                n_steps=len(indices),
            )
        step += 1
        history.append(metrics)
        hooks.step_done(step, total_steps, metrics)
        if step % config.checkpoint_every == 0:
            checkpoint()
    checkpoint()

    loop = LoopResult(steps=step, total_steps=total_steps, history=history)
    final = loop.last
    final.update(eval_before)
    final.update(ppo.evaluate(held_out, "after"))
    final["train_score"] = loop.mean("score")
    final["train_seconds"] = time.perf_counter() - started
    final["prompts"] = float(len(train_rows))
    final["eval_prompts"] = float(len(held_out))

    record = training_record(
        method="ppo", config=config, loop=loop, metrics=final, base_model=base_model_path
    )
    output_dir = Path(output_dir)
    save_value_head(model.value_head, output_dir)
    save_artifact(model.policy, tokenizer, output_dir, record)
    return PPOResult(
        steps=loop.steps,
        metrics=final,
        output_dir=output_dir,
        library_versions=library_versions(),
    )
