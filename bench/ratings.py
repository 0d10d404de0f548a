"""Bradley-Terry with 200 bootstrap rounds on 1,000,000 simulated battles between 50 models.

Simulates battles between uniformly drawn pairs of 50 models with known Elo-scale strengths
(Bradley-Terry outcomes, no ties), then times
`annotation.leaderboard.ratings_math.bootstrap`: counting the raw battle arrays into (pair,
outcome) cells, the full-data fit, 200 multinomial resamples of the cell table and their
fits. Side by side it times the textbook way, resampling the battles themselves each round
(same fitter), and prints the ratio. Prints the top models
(true vs fitted rating, interval, rank), how often the intervals hold the true rating, and
the time of online Elo over the same battles.

    .venv/bin/python bench/ratings.py

Last line: RESULT seconds=N battles=1000000 models=50 bootstrap=200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from annotation.leaderboard import ratings_math  # noqa: E402


def cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def resample_battles(battles: ratings_math.Battles, rounds: int, seed: int) -> np.ndarray:
    """The textbook bootstrap: draw the battles with replacement, count, fit; per round."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        pick = rng.integers(0, len(battles), len(battles))
        sample = ratings_math.Battles(
            battles.models, battles.model_a[pick], battles.model_b[pick], battles.outcome[pick]
        )
        samples.append(ratings_math.bradley_terry(ratings_math.pair_counts(sample).wins()))
    return np.asarray(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-textbook", action="store_true", help="no side-by-side run")
    parser.add_argument(
        "--coverage-datasets", type=int, default=20, help="fresh datasets for the coverage figure"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    truth = rng.normal(0, 200, args.models)
    truth += 1000 - truth.mean()
    battles = ratings_math.simulate(truth, args.battles, seed=rng)
    print(
        f"Bradley-Terry bootstrap on {cores()} CPU cores: {len(battles):,} simulated battles "
        f"between {args.models} models (true ratings normal, sd 200, mean 1000; uniform "
        f"pairs; no ties), {args.rounds} rounds, 95% percentile intervals, numpy "
        f"{np.__version__}.\nLoad average at start: {os.getloadavg()[0]:.2f} (above "
        f"{cores()}, other processes compete for the cores and the times mean little).\n",
        flush=True,
    )

    _, count_s, _ = timed(ratings_math.pair_counts, battles)
    runs = []
    for repeat in range(args.repeats):
        result, wall, cpu = timed(
            ratings_math.bootstrap, battles, rounds=args.rounds, seed=args.seed + repeat
        )
        runs.append((wall, cpu))
        print(f"  run {repeat + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    seconds = float(np.median([wall for wall, _ in runs]))
    print(f"  of which counting the battles into cells: {count_s:.3f} s\n")

    order = result.order()
    print(
        f"{'rank':>4} {'model':<9} {'true':>7} {'fitted':>7} {'error':>6} "
        f"{'95% interval':>17} {'width':>6} {'holds':>5}"
    )
    covered = (result.lower <= truth) & (truth <= result.upper)
    shown = list(order[:10]) + list(order[-3:])
    for position, model in enumerate(shown):
        if position == 10:
            print(f"{'...':>4}")
        print(
            f"{result.rank[model]:>4} {result.models[model]:<9} {truth[model]:>7.1f} "
            f"{result.rating[model]:>7.1f} {result.rating[model] - truth[model]:>+6.1f} "
            f"{result.lower[model]:>8.1f}-{result.upper[model]:<8.1f} "
            f"{result.upper[model] - result.lower[model]:>6.1f} "
            f"{'yes' if covered[model] else 'NO':>5}"
        )
    widths = result.upper - result.lower
    above = truth[:, None] > truth[None, :]
    in_order = (result.rating[:, None] > result.rating[None, :])[above].mean()
    print(
        f"\nIntervals holding the true rating: {covered.sum()} of {args.models} "
        f"({covered.mean():.0%}; nominal 95%). Width: median {np.median(widths):.1f}, max "
        f"{widths.max():.1f} Elo points. Largest error of the point fit: "
        f"{np.abs(result.rating - truth).max():.1f} points. Pairs of models in their true "
        f"order: {in_order:.1%}."
    )
    if args.coverage_datasets:
        held = []
        for dataset in range(args.coverage_datasets):
            fresh = np.random.default_rng([args.seed, dataset + 1])
            fresh_truth = fresh.normal(0, 200, args.models)
            fresh_truth += 1000 - fresh_truth.mean()
            fit = ratings_math.bootstrap(
                ratings_math.simulate(fresh_truth, args.battles, seed=fresh),
                rounds=args.rounds,
                seed=fresh,
            )
            held.extend((fit.lower <= fresh_truth) & (fresh_truth <= fit.upper))
        coverage = float(np.mean(held))
        margin = 1.96 * np.sqrt(0.95 * 0.05 / len(held))
        print(
            f"Over {args.coverage_datasets} more datasets of the same size: {coverage:.1%} of "
            f"{len(held)} intervals hold the true rating (nominal 95%; were the intervals "
            f"independent, chance alone would give {0.95 - margin:.1%}-{0.95 + margin:.1%})."
        )

    if not args.skip_textbook:
        samples, textbook_s, _ = timed(resample_battles, battles, args.rounds, args.seed)
        tail_lower, tail_upper = np.quantile(samples, [0.025, 0.975], axis=0)
        spread = np.median((tail_upper - tail_lower) / widths)
        print(
            f"\nSide by side, resampling the battles themselves each round (same fitter): "
            f"{textbook_s:.1f} s, {textbook_s / seconds:.0f}x the time; its interval widths "
            f"are {spread:.2f}x ours (median over models; 1 means the same distribution)."
        )

    elo, elo_s, _ = timed(ratings_math.online_elo, battles)
    correlation = np.corrcoef(elo.ratings, truth)[0, 1]
    print(
        f"Online Elo (K 4) over the same battles: {elo_s:.2f} s; correlation with the "
        f"true ratings {correlation:.3f}."
    )
    print(f"\nLoad average at end: {os.getloadavg()[0]:.2f}.\n")
    print(
        f"RESULT seconds={seconds:.2f} battles={len(battles)} models={args.models} "
        f"bootstrap={args.rounds}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
