"""Evaluation after a run: does the new policy beat the one it started from?

``win_rate`` answers held-out prompts greedily with both policies and lets a scorer (in
production the reward model, ``training.methods.reward.RewardScorer.score``) judge each
pair of replies, as in the pairwise win-rate evaluations of the RLHF and DPO papers
(e.g. Rafailov et al. 2023, https://arxiv.org/abs/2305.18290, section 6), with a
reward model in place of the GPT-4 judge. ``held_out_prompts`` gives exactly the prompts a
run held out of training (``common.holdout_split``), so the policy is judged on prompts it
never saw.

Plain Python: nothing here imports Django; ``training/services.py`` calls it after a run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training.methods.common import holdout_split, prompt_key, read_prompts, require

__all__ = ["WinRate", "behaviour_fraction", "held_out_prompts", "win_rate"]

Messages = list[dict[str, str]]
PathLike = str | os.PathLike[str]
# (base model folder, LoRA adapter folder or None): what models_registry.engine.ml.load_policy
# takes.
Policy = tuple[PathLike, PathLike | None]
# score(prompts, replies) -> one number per reply, higher is better.
Score = Callable[[list[Messages], list[str]], Sequence[float]]


@dataclass
class WinRate:
    """The outcome of a pairwise comparison on ``prompts`` prompts.

    ``win_rate`` is ``(wins + ties / 2) / prompts``: 0.5 means no better and no worse.
    ``examples`` are a few rows for the run page, the most decisive first: ``prompt``
    (messages), ``candidate`` and ``parent`` replies, their scores and ``outcome``
    (``"win"``, ``"tie"`` or ``"loss"``, from the candidate's side).
    """

    wins: int
    ties: int
    losses: int
    prompts: int
    win_rate: float
    candidate_mean_score: float
    parent_mean_score: float
    examples: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (what a run stores as its evaluation)."""
        return asdict(self)


def win_rate(
    *,
    candidate: Policy,
    parent: Policy,
    prompts: list[Messages],
    score: Score,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    tie_margin: float = 0.0,
    examples: int = 3,
) -> WinRate:
    """Greedy replies of ``candidate`` and ``parent`` to ``prompts``, judged by ``score``.

    Each policy is ``(base_path, adapter_path or None)``, loaded with
    ``models_registry.engine.ml.load_policy`` and answering with greedy decoding (deterministic,
    so a rerun gives the same figures). The candidate wins a prompt when its score beats
    the parent's by more than ``tie_margin``, loses when it trails by more, and ties
    otherwise or when both replies are the same text (whatever noise the scorer has).
    Raises ``ValueError`` for no prompts, a malformed prompt, or a scorer that does not
    return one finite number per reply.
    """
    _check_prompts(prompts)
    require(tie_margin >= 0, "tie_margin must be >= 0")
    require(examples >= 0, "examples must be >= 0")
    candidate_replies = _greedy_replies(candidate, prompts, max_new_tokens, batch_size)
    parent_replies = _greedy_replies(parent, prompts, max_new_tokens, batch_size)
    candidate_scores = _scores(score, prompts, candidate_replies, "candidate")
    parent_scores = _scores(score, prompts, parent_replies, "parent")

    rows = []
    for index, prompt in enumerate(prompts):
        difference = candidate_scores[index] - parent_scores[index]
        if candidate_replies[index] == parent_replies[index] or abs(difference) <= tie_margin:
            outcome = "tie"
        else:
            outcome = "win" if difference > 0 else "loss"
        rows.append(
            {
                "prompt": prompt,
                "candidate": candidate_replies[index],
                "parent": parent_replies[index],
                "candidate_score": candidate_scores[index],
                "parent_score": parent_scores[index],
                "outcome": outcome,
            }
        )
    outcomes = [row["outcome"] for row in rows]
    wins, ties, losses = (outcomes.count(kind) for kind in ("win", "tie", "loss"))
    decisive = sorted(
        range(len(rows)), key=lambda i: (-abs(candidate_scores[i] - parent_scores[i]), i)
    )
    return WinRate(
        wins=wins,
        ties=ties,
        losses=losses,
        prompts=len(prompts),
        win_rate=(wins + ties / 2) / len(prompts),
        candidate_mean_score=sum(candidate_scores) / len(prompts),
        parent_mean_score=sum(parent_scores) / len(prompts),
        examples=[rows[i] for i in decisive[:examples]],
    )


def held_out_prompts(dataset_path: PathLike, *, eval_fraction: float, seed: int) -> list[Messages]:
    """The distinct prompts a run on ``dataset_path`` held out of training.

    Prompts are read as the training methods read them (``common.read_prompts``: a row's
    ``prompt``, or its ``messages`` without the final assistant reply) and split with
    ``common.holdout_split`` by prompt key with the run's ``eval_fraction`` and ``seed``,
    so the result is exactly the held-out side of that run, in file order. Empty when
    ``eval_fraction`` is 0. Raises ``ValueError`` naming the first bad line.
    """
    require(0 <= eval_fraction < 1, "eval_fraction must be in [0, 1)")
    prompts = [messages for _, messages in read_prompts(dataset_path)]
    _, held_out = holdout_split(
        [prompt_key(messages) for messages in prompts], fraction=eval_fraction, seed=seed
    )
    return [prompts[i] for i in held_out]


def behaviour_fraction(replies: Sequence[str], predicate: Callable[[str], bool]) -> float:
    """Share of ``replies`` for which ``predicate`` holds (a refusal rate, say)."""
    require(len(replies) > 0, "behaviour_fraction needs at least one reply")
    return sum(1 for reply in replies if predicate(reply)) / len(replies)


# --- Helpers ----------------------------------------------------------------------------


def _check_prompts(prompts: Any) -> None:
    require(isinstance(prompts, list) and len(prompts) > 0, "win_rate needs at least one prompt")
    for index, messages in enumerate(prompts):
        ok = isinstance(messages, list) and len(messages) > 0
        ok = ok and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
        require(ok, f"prompt {index} must be a non-empty list of {{'role', 'content'}} messages")


def _greedy_replies(
    policy: Policy, prompts: list[Messages], max_new_tokens: int, batch_size: int
) -> list[str]:
    from models_registry.engine.ml import GenerationParams, generate_replies, load_policy

    base_path, adapter_path = policy
    model, tokenizer = load_policy(base_path, adapter_path)
    params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    replies = generate_replies(model, tokenizer, prompts, params, batch_size=batch_size)
    return [reply.text for reply in replies]


def _scores(score: Score, prompts: list[Messages], replies: list[str], side: str) -> list[float]:
    values = list(score(prompts, replies))
    require(
        len(values) == len(replies),
        f"score returned {len(values)} values for {len(replies)} {side} replies",
    )
    checked = []
    for value in values:
        number = _as_number(value)
        require(number is not None, f"score returned {value!r} for a {side} reply")
        checked.append(number)
    return checked


def _as_number(value: Any) -> float | None:
    """A finite float from a scorer's value (Python, NumPy or 0-d torch number), else None."""
    if isinstance(value, bool | str | bytes):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
