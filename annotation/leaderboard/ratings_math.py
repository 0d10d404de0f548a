"""Ratings of models from pairwise battles: online Elo, Bradley-Terry maximum likelihood,
bootstrap confidence intervals and ranks, win rates. Plain numpy; no Django.

The methods follow Chatbot Arena (Chiang et al. 2024, "Chatbot Arena: An Open Platform for
Evaluating LLMs by Human Preference", https://arxiv.org/abs/2403.04132, and FastChat's
`fastchat/serve/monitor/elo_analysis.py`): the same Elo constants (K 4, base 10, scale 400,
start 1000), ties and both-bad votes counted as half a win each way, Bradley-Terry ratings
on the Elo scale, percentile bootstrap intervals, and a model's rank as one plus the number
of models that are better than it beyond doubt (lower bound above its upper bound).

What is different is the speed. FastChat fits a logistic regression on the battles (ties
duplicated) in every bootstrap round. Here the battles are first counted into a small table
of (pair, outcome) cells; a bootstrap round is a multinomial draw of that table (the same
distribution as resampling the battles with replacement), and every round is fitted at once
by Newton's method on the n x n problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

A_WINS, B_WINS, TIE, BOTH_BAD = 0, 1, 2, 3
OUTCOMES = {"a": A_WINS, "b": B_WINS, "tie": TIE, "both_bad": BOTH_BAD}

ELO_K = 4.0
ELO_BASE = 10.0
ELO_SCALE = 400.0
INIT_RATING = 1000.0
# Natural-log strength units to Elo points: P(i beats j) = 1 / (1 + 10^((r_j - r_i) / 400)).
ELO_PER_UNIT = ELO_SCALE / math.log(ELO_BASE)
DEFAULT_RIDGE = 1e-2
HISTORY_POINTS = 200


# --- battles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Battles:
    """Battles in the order they happened (online Elo reads them in this order).

    `models` names the contestants; `model_a`, `model_b` are integer arrays of positions in
    `models`; `outcome` is an integer array of codes from OUTCOMES (A_WINS: model_a won, B_WINS:
    model_b won, TIE, BOTH_BAD). Build one with `Battles.from_records` or `Battles.of`."""

    models: tuple[str, ...]
    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray

    @classmethod
    def of(cls, models: Sequence[str], model_a, model_b, outcome) -> Battles:
        """Battles from index arrays; checked (a ValueError says what is wrong)."""
        models = tuple(str(name) for name in models)
        if len(set(models)) != len(models):
            raise ValueError("Model names must be distinct.")
        model_a = np.asarray(model_a, dtype=np.int64).ravel()
        model_b = np.asarray(model_b, dtype=np.int64).ravel()
        outcome = np.asarray(outcome, dtype=np.int8).ravel()
        if not len(model_a) == len(model_b) == len(outcome):
            raise ValueError("model_a, model_b and outcome must have the same length.")
        if len(outcome):
            if min(model_a.min(), model_b.min()) < 0 or max(model_a.max(), model_b.max()) >= len(
                models
            ):
                raise ValueError("A model index is outside the list of models.")
            if (model_a == model_b).any():
                raise ValueError("A model cannot battle itself.")
            if outcome.min() < A_WINS or outcome.max() > BOTH_BAD:
                raise ValueError("Outcomes are 0 (a), 1 (b), 2 (tie) or 3 (both_bad).")
        return cls(models, model_a, model_b, outcome)

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, str, str]], *, models: Sequence[str] = ()
    ) -> Battles:
        """Battles from (model_a name, model_b name, outcome) with outcome one of "a", "b",
        "tie", "both_bad". `models` fixes the order of names (others are added as met)."""
        index = {name: position for position, name in enumerate(models)}
        names = list(models)
        model_a, model_b, outcome = [], [], []
        for first, second, result in records:
            for name in (first, second):
                if name not in index:
                    index[name] = len(names)
                    names.append(name)
            if result not in OUTCOMES:
                raise ValueError(f"Unknown outcome {result!r}; use a, b, tie or both_bad.")
            model_a.append(index[first])
            model_b.append(index[second])
            outcome.append(OUTCOMES[result])
        return cls.of(names, model_a, model_b, outcome)

    def __len__(self) -> int:
        return len(self.outcome)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def index(self, model: str | int) -> int:
        if isinstance(model, int | np.integer) and not isinstance(model, bool):
            if not 0 <= model < self.n_models:
                raise ValueError(f"There is no model {model}.")
            return int(model)
        try:
            return self.models.index(model)
        except ValueError:
            raise ValueError(f"There is no model {model!r} in these battles.") from None


@dataclass(frozen=True)
class PairCounts:
    """Battles counted per unordered pair: for pair k, `counts[k]` holds how often `lo[k]`
    won, how often `hi[k]` won, and the draws (ties and both-bad). Only pairs that met."""

    n_models: int
    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray  # (pairs, 3) int64

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def wins(self, counts: np.ndarray | None = None) -> np.ndarray:
        """Wins matrix W[..., i, j]: how often i beat j, a draw counting half to each side.
        `counts` (..., pairs, 3) replaces the table's own counts (bootstrap rounds)."""
        counts = self.counts if counts is None else counts
        counts = np.asarray(counts, dtype=np.float64)
        wins = np.zeros((*counts.shape[:-2], self.n_models, self.n_models))
        half = 0.5 * counts[..., 2]
        wins[..., self.lo, self.hi] = counts[..., 0] + half
        wins[..., self.hi, self.lo] = counts[..., 1] + half
        return wins


def pair_counts(battles: Battles) -> PairCounts:
    """Count the battles into (pair, outcome) cells: one bincount over the battles."""
    n = battles.n_models
    a, b, outcome = battles.model_a, battles.model_b, battles.outcome
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # Cell 0: lo won, 1: hi won, 2: a draw. "a" won means lo won when a < b.
    a_first = a < b
    cell = np.where(outcome >= TIE, 2, np.where((outcome == A_WINS) == a_first, 0, 1)).astype(
        np.int64
    )
    key = (lo * n + hi) * 3 + cell
    table = np.bincount(key, minlength=n * n * 3).reshape(n * n, 3)
    met = np.flatnonzero(table.any(axis=1))
    return PairCounts(n_models=n, lo=met // n, hi=met % n, counts=table[met])


# --- online Elo --------------------------------------------------------------------------


@dataclass(frozen=True)
class EloResult:
    """Final ratings, and each model's rating after each of its battles, sampled down to
    at most `HISTORY_POINTS` points: `history[m]` is (battle numbers, ratings), battle
    numbers counting from 1 over all battles."""

    ratings: np.ndarray
    history: list[tuple[np.ndarray, np.ndarray]]


def online_elo(
    battles: Battles,
    *,
    k: float = ELO_K,
    base: float = ELO_BASE,
    scale: float = ELO_SCALE,
    init: float = INIT_RATING,
    history_points: int = HISTORY_POINTS,
) -> EloResult:
    """Sequential Elo over the battles in their order, as FastChat's `compute_elo`: after
    each battle both ratings move by K times (score - expected score); a tie or both-bad
    scores one half. Depends on the order, unlike Bradley-Terry."""
    ratings = [float(init)] * battles.n_models
    score_of = (1.0, 0.0, 0.5, 0.5)
    after_a = np.empty(len(battles))
    after_b = np.empty(len(battles))
    for number, (a, b, result) in enumerate(
        zip(
            battles.model_a.tolist(),
            battles.model_b.tolist(),
            battles.outcome.tolist(),
            strict=True,
        )
    ):
        ra, rb = ratings[a], ratings[b]
        expected_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        delta = k * (score_of[result] - expected_a)
        ratings[a] = after_a[number] = ra + delta
        ratings[b] = after_b[number] = rb - delta
    history = []
    for model in range(battles.n_models):
        as_a = battles.model_a == model
        played = np.flatnonzero(as_a | (battles.model_b == model))
        values = np.where(as_a, after_a, after_b)[played]
        if len(played) > history_points:
            keep = np.unique(np.linspace(0, len(played) - 1, history_points).round().astype(int))
            played, values = played[keep], values[keep]
        history.append((played + 1, values))
    return EloResult(ratings=np.asarray(ratings), history=history)


# --- Bradley-Terry ---------------------------------------------------------------------


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _objective(theta: np.ndarray, wins: np.ndarray, ridge: float) -> np.ndarray:
    diff = theta[:, :, None] - theta[:, None, :]
    return (wins * _log_sigmoid(diff)).sum(axis=(1, 2)) - 0.5 * ridge * (theta**2).sum(axis=1)


def _fit_strengths(
    wins: np.ndarray, *, ridge: float, start: np.ndarray | None = None, max_iter: int = 100
) -> np.ndarray:
    """Maximise the penalised Bradley-Terry log-likelihood for each of a batch of wins
    matrices (B, n, n); natural-log strengths (B, n). Newton's method with a backtracking
    line search, all matrices at once; the penalty makes the problem strictly concave."""
    batch, n, _ = wins.shape
    games = wins + wins.transpose(0, 2, 1)
    total_wins = wins.sum(axis=2)
    theta = np.zeros((batch, n)) if start is None else np.array(np.broadcast_to(start, (batch, n)))
    objective = _objective(theta, wins, ridge)
    diagonal = np.arange(n)
    for _ in range(max_iter):
        p = _sigmoid(theta[:, :, None] - theta[:, None, :])
        gradient = total_wins - (games * p).sum(axis=2) - ridge * theta
        weight = games * p * (1.0 - p)
        curvature = -weight  # minus the Hessian: positive definite
        curvature[:, diagonal, diagonal] = weight.sum(axis=2) + ridge
        step = np.linalg.solve(curvature, gradient[..., None])[..., 0]
        # Newton decrement: twice the predicted gain; tiny means converged.
        decrement = (gradient * step).sum(axis=1)
        active = decrement > 1e-14 * (1.0 + np.abs(objective))
        if not active.any():
            break
        size = np.where(active, 1.0, 0.0)
        for _ in range(40):
            trial = theta + size[:, None] * step
            trial_objective = _objective(trial, wins, ridge)
            slack = 1e-12 * (1.0 + np.abs(objective))
            good = trial_objective >= objective + 1e-4 * size * decrement - slack
            if good.all():
                break
            size = np.where(good, size, 0.5 * size)
        else:
            size = np.where(good, size, 0.0)
            trial = theta + size[:, None] * step
            trial_objective = _objective(trial, wins, ridge)
        theta, objective = trial, trial_objective
    return theta


def _to_elo(
    theta: np.ndarray, anchor: int | None, anchor_rating: float, models_axis: int = -1
) -> np.ndarray:
    ratings = ELO_PER_UNIT * (theta - theta.mean(axis=models_axis, keepdims=True))
    if anchor is None:
        return ratings + INIT_RATING
    return ratings - np.take(ratings, [anchor], axis=models_axis) + anchor_rating


def bradley_terry(
    wins: np.ndarray,
    *,
    anchor: int | None = None,
    anchor_rating: float = INIT_RATING,
    ridge: float = DEFAULT_RIDGE,
) -> np.ndarray:
    """Bradley-Terry maximum-likelihood ratings on the Elo scale from a wins matrix
    `wins[i, j]` (how often i beat j, draws counting half each way; `PairCounts.wins`).
    A batch (B, n, n) gives (B, n).

    Scale: a difference of d points means P(i beats j) = 1 / (1 + 10^(-d / 400)), i.e.
    400 / ln 10 points per natural-log unit of strength. The mean rating is 1000; with
    `anchor` (a model's position) that model is put at `anchor_rating` instead, as FastChat
    anchors a named model.

    Finite in every case: the log-likelihood is maximised with a Gaussian penalty
    `ridge / 2 * sum(theta**2)` on the natural-log strengths (a prior with standard
    deviation 1 / sqrt(ridge) = 10 units, about 1,700 Elo points, by default). With any
    real amount of data it moves the ratings by a negligible amount (its weight is that
    of about 0.04 battles per model), but a model that never lost gets a large finite
    rating instead of infinity, a model with no battles gets the mean (1000), and
    disconnected groups of models are each centred on the mean instead of drifting.
    Solved by Newton's method with a line search on the n x n problem (a few iterations).
    """
    wins = np.asarray(wins, dtype=np.float64)
    if wins.ndim < 2 or wins.shape[-1] != wins.shape[-2]:
        raise ValueError("wins must be an n x n matrix (or a batch of them).")
    if (wins < 0).any() or not np.isfinite(wins).all():
        raise ValueError("wins must hold finite non-negative counts.")
    if ridge <= 0:
        raise ValueError("ridge must be positive.")
    n = wins.shape[-1]
    flat = wins.reshape(-1, n, n).copy()
    flat[:, np.arange(n), np.arange(n)] = 0.0
    theta = _fit_strengths(flat, ridge=ridge)
    return _to_elo(theta, anchor, anchor_rating).reshape(wins.shape[:-1])


# --- bootstrap ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratings:
    """Per model (in `models` order): the Bradley-Terry rating fitted on all battles, the
    bounds of the bootstrap percentile interval, and the rank (1 + the number of models
    whose lower bound is above this model's upper bound). `samples` holds every round's
    ratings (rounds, n)."""

    models: tuple[str, ...]
    rating: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rank: np.ndarray
    samples: np.ndarray
    level: float

    def order(self) -> np.ndarray:
        """Model positions best first (by rank, then rating)."""
        return np.lexsort((-self.rating, self.rank))


def ranks_from_intervals(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """FastChat's rank: 1 + how many models have a lower bound above this upper bound."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def bootstrap(
    battles: Battles,
    *,
    rounds: int = 200,
    level: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    anchor: str | int | None = None,
    anchor_rating: float = INIT_RATING,
    ridge: float = DEFAULT_RIDGE,
) -> Ratings:
    """Bradley-Terry ratings with percentile bootstrap intervals at `level` and ranks.

    Each round resamples the battles with replacement; it is drawn as one multinomial
    sample of the battle count over the (pair, outcome) cells with their observed
    frequencies, which has exactly the distribution of the counts of a resample of the
    battles, at the cost of the table's size instead of the battles'. All rounds are then
    fitted at once, started from the full-data fit. With no battles every rating is the
    mean (or the anchor's) and the intervals have no width."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1.")
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1.")
    rng = np.random.default_rng(seed)
    anchor_index = None if anchor is None else battles.index(anchor)
    table = pair_counts(battles)
    point_theta = _fit_strengths(table.wins()[None], ridge=ridge)
    if table.total == 0:
        sample_theta = np.repeat(point_theta, rounds, axis=0)
    else:
        shares = table.counts.ravel() / table.total
        drawn = rng.multinomial(table.total, shares, size=rounds).reshape(rounds, -1, 3)
        sample_theta = _fit_strengths(table.wins(drawn), ridge=ridge, start=point_theta)
    rating = _to_elo(point_theta, anchor_index, anchor_rating)[0]
    samples = _to_elo(sample_theta, anchor_index, anchor_rating)
    tail = (1 - level) / 2
    lower, upper = np.quantile(samples, [tail, 1 - tail], axis=0)
    return Ratings(
        models=battles.models,
        rating=rating,
        lower=lower,
        upper=upper,
        rank=ranks_from_intervals(lower, upper),
        samples=samples,
        level=level,
    )


# --- win rates ---------------------------------------------------------------------------


def win_rate_matrix(battles: Battles) -> tuple[np.ndarray, np.ndarray]:
    """(rates, counts): rates[i, j] is i's share of wins against j, a tie or both-bad
    counting half, NaN where the two never met (and on the diagonal); counts[i, j] the
    number of battles between them."""
    table = pair_counts(battles)
    wins = table.wins()
    counts = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(counts > 0, wins / counts, np.nan)
    return rates, counts.astype(np.int64)


def model_totals(battles: Battles) -> tuple[np.ndarray, np.ndarray]:
    """(battles, win rate) per model over all its battles, ties half; NaN with none."""
    rates, counts = win_rate_matrix(battles)
    played = counts.sum(axis=1)
    won = np.nansum(rates * counts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return played, np.where(played > 0, won / played, np.nan)


def head_to_head(
    battles: Battles, a: str | int, b: str | int, rounds: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
    """(win_rate, low, high, n): how often `a` beat `b` over their n battles (either side
    of the screen; a tie or both-bad counts half) with a 95% interval.

    `a` and `b` are model names (or positions) in `battles`. The interval is the central
    95% of `rounds` seeded draws of the win rate from the Dirichlet posterior of the three
    outcome shares (a won, b won, draw) under Jeffreys' prior (one half per outcome). For
    many battles it matches the bootstrap; unlike the bootstrap it stays honest for few
    battles or a one-sided record (3 wins of 3 gives about 0.63-1.0, not 1.0-1.0). With
    no battles between them: (nan, nan, nan, 0)."""
    first, second = battles.index(a), battles.index(b)
    if first == second:
        raise ValueError("Compare two different models.")
    if rounds < 1:
        raise ValueError("rounds must be at least 1.")
    between = ((battles.model_a == first) & (battles.model_b == second)) | (
        (battles.model_a == second) & (battles.model_b == first)
    )
    n = int(between.sum())
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    outcome = battles.outcome[between]
    a_side = battles.model_a[between] == first
    won = int((((outcome == A_WINS) & a_side) | ((outcome == B_WINS) & ~a_side)).sum())
    draws = int((outcome >= TIE).sum())
    lost = n - won - draws
    shares = np.random.default_rng(seed).dirichlet(
        [won + 0.5, lost + 0.5, draws + 0.5], size=rounds
    )
    rates = shares[:, 0] + 0.5 * shares[:, 2]
    low, high = np.quantile(rates, [0.025, 0.975])
    return (won + 0.5 * draws) / n, float(low), float(high), n


def simulate(
    strengths: np.ndarray,
    n_battles: int,
    *,
    seed: int | np.random.Generator | None = 0,
    tie_rate: float = 0.0,
) -> Battles:
    """Battles between uniformly drawn pairs of distinct models with true Elo-scale
    `strengths` (Bradley-Terry outcomes). With `tie_rate`, that share of battles is a tie
    or both-bad (half each), drawn independently of the strengths. For tests and benches."""
    rng = np.random.default_rng(seed)
    strengths = np.asarray(strengths, dtype=np.float64)
    n = len(strengths)
    model_a = rng.integers(0, n, n_battles)
    model_b = (model_a + rng.integers(1, n, n_battles)) % n
    p_a = 1.0 / (1.0 + ELO_BASE ** ((strengths[model_b] - strengths[model_a]) / ELO_SCALE))
    outcome = np.where(rng.random(n_battles) < p_a, A_WINS, B_WINS).astype(np.int8)
    if tie_rate:
        draw = rng.random(n_battles) < tie_rate
        outcome[draw] = np.where(rng.random(int(draw.sum())) < 0.5, TIE, BOTH_BAD)
    names = [f"model-{i:02d}" for i in range(n)]
    return Battles.of(names, model_a, model_b, outcome)
