"""Ratings math: Bradley-Terry, bootstrap intervals, online Elo, win rates. No database."""

import math

import numpy as np
import pytest

from annotation.leaderboard import ratings_math
from annotation.leaderboard.ratings_math import A_WINS, B_WINS, BOTH_BAD, TIE, Battles

TRUE_8 = np.array([1240.0, 1150.0, 1080.0, 1020.0, 960.0, 900.0, 850.0, 800.0])


def _zermelo(wins: np.ndarray, iterations: int = 3000) -> np.ndarray:
    """Plain Bradley-Terry MLE by Zermelo's / Hunter's MM iterations, on the Elo scale
    with mean 1000: an independent check of the Newton solver."""
    games = wins + wins.T
    strength = np.ones(len(wins))
    for _ in range(iterations):
        strength = wins.sum(axis=1) / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        strength /= np.exp(np.log(strength).mean())
    return 1000 + ratings_math.ELO_PER_UNIT * np.log(strength)


# --- Bradley-Terry -----------------------------------------------------------------------


def test_bradley_terry_recovers_known_strengths():
    battles = ratings_math.simulate(TRUE_8, 20_000, seed=7)

    fitted = ratings_math.bradley_terry(ratings_math.pair_counts(battles).wins())

    assert np.abs(fitted - TRUE_8).max() < 15
    assert list(np.argsort(-fitted)) == list(range(8))
    assert fitted.mean() == pytest.approx(1000)


def test_bradley_terry_is_the_maximum_likelihood_fit():
    battles = ratings_math.simulate(TRUE_8, 3_000, seed=3, tie_rate=0.2)
    wins = ratings_math.pair_counts(battles).wins()

    fitted = ratings_math.bradley_terry(wins, ridge=1e-9)

    np.testing.assert_allclose(fitted, _zermelo(wins), atol=1e-3)


def test_bradley_terry_counts_a_draw_as_half_a_win_each_way():
    # x beat y twice, y beat x once, one tie and one both-bad: 3 to 2 for x.
    with_draws = Battles.from_records(
        [
            ("x", "y", "a"),
            ("y", "x", "b"),
            ("x", "y", "b"),
            ("x", "y", "tie"),
            ("y", "x", "both_bad"),
        ]
    )
    wins = ratings_math.pair_counts(with_draws).wins()

    fitted = ratings_math.bradley_terry(wins, ridge=1e-9)

    np.testing.assert_allclose(wins, [[0, 3], [2, 0]])
    assert fitted[0] - fitted[1] == pytest.approx(400 * math.log10(3 / 2), abs=1e-3)


def test_bradley_terry_anchor_puts_the_named_model_at_its_rating():
    wins = ratings_math.pair_counts(ratings_math.simulate(TRUE_8, 5_000, seed=1)).wins()
    centred = ratings_math.bradley_terry(wins)

    anchored = ratings_math.bradley_terry(wins, anchor=3, anchor_rating=1114)

    assert anchored[3] == pytest.approx(1114)
    np.testing.assert_allclose(anchored - anchored[3], centred - centred[3], atol=1e-9)


def test_bradley_terry_does_not_depend_on_screen_sides():
    battles = ratings_math.simulate(TRUE_8, 2_000, seed=5, tie_rate=0.1)
    swapped_outcome = np.select(
        [battles.outcome == A_WINS, battles.outcome == B_WINS], [B_WINS, A_WINS], battles.outcome
    )
    swapped = Battles.of(battles.models, battles.model_b, battles.model_a, swapped_outcome)

    first = ratings_math.bootstrap(battles, rounds=20, seed=0)
    second = ratings_math.bootstrap(swapped, rounds=20, seed=0)

    np.testing.assert_allclose(first.rating, second.rating)
    np.testing.assert_allclose(first.samples, second.samples)


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_intervals_cover_the_truth_at_about_their_nominal_rate():
    covered = []
    for dataset in range(150):
        rng = np.random.default_rng(dataset)
        truth = rng.normal(0, 150, 8)
        truth += 1000 - truth.mean()
        battles = ratings_math.simulate(truth, 2_000, seed=rng)

        result = ratings_math.bootstrap(battles, rounds=200, seed=rng)

        covered.extend((result.lower <= truth) & (truth <= result.upper))
    coverage = np.mean(covered)
    assert 0.88 <= coverage <= 0.99, coverage


def test_bootstrap_by_table_matches_resampling_the_battles():
    battles = ratings_math.simulate(TRUE_8, 4_000, seed=11, tie_rate=0.15)
    rng = np.random.default_rng(12)
    resampled = []
    for _ in range(300):
        pick = rng.integers(0, len(battles), len(battles))
        sample = Battles.of(
            battles.models, battles.model_a[pick], battles.model_b[pick], battles.outcome[pick]
        )
        resampled.append(ratings_math.bradley_terry(ratings_math.pair_counts(sample).wins()))
    by_battles = np.std(resampled, axis=0)

    by_table = ratings_math.bootstrap(battles, rounds=300, seed=13).samples.std(axis=0)

    # Two independent 300-round estimates of the same spread agree to sampling error.
    np.testing.assert_allclose(by_table, by_battles, rtol=0.2)


def test_bootstrap_ranks_fastchat_style():
    lower = np.array([1100.0, 1050.0, 990.0, 900.0])
    upper = np.array([1200.0, 1120.0, 1060.0, 1000.0])

    ranks = ratings_math.ranks_from_intervals(lower, upper)

    # Model 1 overlaps model 0; model 2 is beaten beyond doubt by 0 only; model 3 by 0 and 1.
    assert list(ranks) == [1, 1, 2, 3]


def test_bootstrap_interval_level_and_rank_of_clear_winner():
    battles = ratings_math.simulate(TRUE_8, 20_000, seed=2)

    result = ratings_math.bootstrap(battles, rounds=100, level=0.9, seed=0)

    assert result.level == 0.9
    assert (result.lower <= result.rating).all() and (result.rating <= result.upper).all()
    assert result.rank[0] == 1
    assert list(result.order()) == list(range(8))
    assert result.samples.shape == (100, 8)


def test_bootstrap_is_reproducible_with_a_seed():
    battles = ratings_math.simulate(TRUE_8, 1_000, seed=4)

    first = ratings_math.bootstrap(battles, rounds=30, seed=9)
    second = ratings_math.bootstrap(battles, rounds=30, seed=9)

    np.testing.assert_array_equal(first.samples, second.samples)


# --- edge cases --------------------------------------------------------------------------


def test_one_battle_gives_finite_ratings_winner_first():
    battles = Battles.from_records([("x", "y", "a")])

    result = ratings_math.bootstrap(battles, rounds=10)

    assert np.isfinite(result.rating).all()
    assert result.rating[0] > result.rating[1]
    assert result.rating.mean() == pytest.approx(1000)


def test_a_model_that_never_lost_stays_finite_and_on_top():
    records = [("champ", "mid", "a")] * 30 + [("low", "champ", "b")] * 30
    records += [("mid", "low", "a")] * 20 + [("mid", "low", "b")] * 10

    result = ratings_math.bootstrap(Battles.from_records(records), rounds=50, seed=0)

    assert np.isfinite(result.samples).all()
    assert result.rating[0] > result.rating[1] > result.rating[2]
    assert result.rating[0] < 1000 + 3000
    assert list(result.rank) == [1, 2, 3]


def test_no_battles_and_idle_models_sit_at_the_mean():
    empty = ratings_math.bootstrap(Battles.from_records([], models=["p", "q"]), rounds=5)
    with_idle = ratings_math.bootstrap(
        Battles.from_records([("x", "y", "a"), ("y", "x", "a")], models=["x", "y", "idle"]),
        rounds=5,
    )

    np.testing.assert_allclose(empty.rating, [1000, 1000])
    assert with_idle.rating[2] == pytest.approx(1000)


def test_battles_refuse_bad_input():
    with pytest.raises(ValueError, match="itself"):
        Battles.of(["x", "y"], [0], [0], [A_WINS])
    with pytest.raises(ValueError, match="outside"):
        Battles.of(["x", "y"], [0], [2], [A_WINS])
    with pytest.raises(ValueError, match="Unknown outcome"):
        Battles.from_records([("x", "y", "draw")])
    with pytest.raises(ValueError, match="no model"):
        ratings_math.head_to_head(Battles.from_records([("x", "y", "a")]), "x", "nobody")


# --- online Elo --------------------------------------------------------------------------


def test_online_elo_moves_the_right_way():
    battles = Battles.from_records(
        [("x", "y", "a"), ("x", "y", "a"), ("y", "x", "tie"), ("z", "x", "both_bad")]
    )

    result = ratings_math.online_elo(battles)

    # First battle between equals: expected score one half, K 4, so exactly 2 points.
    assert result.history[0][1][0] == pytest.approx(1002)
    assert result.history[1][1][0] == pytest.approx(998)
    # Second win against a weaker model earns less than the first.
    assert result.history[0][1][1] - result.history[0][1][0] < 2
    # A tie against the weaker model costs the stronger one points.
    assert result.history[0][1][2] < result.history[0][1][1]
    assert result.ratings[2] > 1000  # z drew with the leader
    assert result.ratings.sum() == pytest.approx(3000)  # Elo is zero-sum


def test_online_elo_tracks_strengths_and_samples_its_history():
    battles = ratings_math.simulate(TRUE_8, 20_000, seed=8)

    result = ratings_math.online_elo(battles, history_points=50)

    assert result.ratings[0] == result.ratings.max() and result.ratings[-1] == result.ratings.min()
    for model, (numbers, values) in enumerate(result.history):
        assert len(numbers) == 50
        assert (np.diff(numbers) > 0).all()
        assert values[-1] == pytest.approx(result.ratings[model])
        first_battle = np.flatnonzero((battles.model_a == model) | (battles.model_b == model))[0]
        assert numbers[0] == first_battle + 1


# --- win rates ---------------------------------------------------------------------------


def test_win_rate_matrix_counts_ties_half_and_leaves_unmet_pairs_empty():
    battles = Battles.from_records(
        [("x", "y", "a"), ("y", "x", "a"), ("x", "y", "tie"), ("x", "y", "a"), ("y", "z", "b")],
        models=["x", "y", "z"],
    )

    rates, counts = ratings_math.win_rate_matrix(battles)
    played, overall = ratings_math.model_totals(battles)

    assert rates[0, 1] == pytest.approx(2.5 / 4)
    assert rates[1, 0] == pytest.approx(1.5 / 4)
    assert rates[2, 1] == 1.0
    assert math.isnan(rates[0, 2]) and math.isnan(rates[0, 0])
    assert counts.tolist() == [[0, 4, 0], [4, 0, 1], [0, 1, 0]]
    assert list(played) == [4, 5, 1]
    np.testing.assert_allclose(overall, [2.5 / 4, 1.5 / 5, 1.0])


def test_head_to_head_known_case_matches_wilson():
    battles = Battles.from_records(
        [("new", "old", "a")] * 40 + [("old", "new", "b")] * 30 + [("new", "old", "b")] * 30
    )

    win_rate, low, high, n = ratings_math.head_to_head(battles, "new", "old", rounds=4000, seed=1)

    assert (win_rate, n) == (0.7, 100)
    # Wilson score interval for 70 of 100: 0.604 to 0.781.
    assert low == pytest.approx(0.604, abs=0.01)
    assert high == pytest.approx(0.781, abs=0.01)


def test_head_to_head_ties_half_symmetry_and_no_battles():
    battles = Battles.from_records(
        [("a1", "b1", "a"), ("b1", "a1", "b"), ("a1", "b1", "tie"), ("b1", "a1", "both_bad")],
        models=["a1", "b1", "c1"],
    )

    win_rate, low, high, n = ratings_math.head_to_head(battles, "a1", "b1", seed=0)
    other = ratings_math.head_to_head(battles, "b1", "a1", seed=0)
    missing = ratings_math.head_to_head(battles, "a1", "c1")

    assert (win_rate, n) == (0.75, 4)
    assert other[0] == 0.25
    # A one-sided short record still gets a real interval.
    assert 0.3 < low < 0.75 < high < 1.0
    assert math.isnan(missing[0]) and missing[3] == 0


def test_outcome_codes():
    assert ratings_math.OUTCOMES == {"a": A_WINS, "b": B_WINS, "tie": TIE, "both_bad": BOTH_BAD}
