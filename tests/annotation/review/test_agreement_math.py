"""Agreement measures: Krippendorff's alpha against its canonical example and the
`krippendorff` package, a labeler's alpha, and Kendall's tau against scipy. No database."""

import random

import krippendorff
import numpy as np
import pytest
from scipy.stats import kendalltau

from annotation.labeling.kinds.ranking import kendall_tau
from annotation.review import agreement_math

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders,
# 12 units, values 1..5, missing as None. Nominal alpha 0.743, interval 0.849.
CANONICAL = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _units(coders: list[list]) -> list[list]:
    """Coder-major reliability data -> the values of each unit."""
    return [
        [row[unit] for row in coders if row[unit] is not None] for unit in range(len(coders[0]))
    ]


def _package_alpha(coders: list[list], level: str) -> float:
    data = [[np.nan if v is None else v for v in row] for row in coders]
    return krippendorff.alpha(reliability_data=data, level_of_measurement=level)


def test_nominal_alpha_reproduces_krippendorffs_canonical_example():
    alpha = agreement_math.krippendorff_alpha(_units(CANONICAL), level=agreement_math.NOMINAL)

    assert round(alpha, 3) == 0.743
    assert alpha == pytest.approx(_package_alpha(CANONICAL, "nominal"), abs=1e-12)


def test_interval_alpha_reproduces_the_canonical_example_and_the_package_on_random_data():
    assert round(agreement_math.krippendorff_alpha(_units(CANONICAL), level="interval"), 3) == 0.849
    rng = random.Random(7)
    for _ in range(20):
        coders = [[rng.choice([None, 1, 2, 3, 4, 5, 6, 7]) for _ in range(15)] for _ in range(4)]
        ours = agreement_math.krippendorff_alpha(_units(coders), level="interval")
        if ours is None:
            continue
        assert ours == pytest.approx(_package_alpha(coders, "interval"), abs=1e-9)
        nominal = agreement_math.krippendorff_alpha(_units(coders), level="nominal")
        assert nominal == pytest.approx(_package_alpha(coders, "nominal"), abs=1e-9)


def test_alpha_is_undefined_without_paired_values_or_without_variation():
    assert agreement_math.krippendorff_alpha([["a"], ["b"]]) is None
    assert agreement_math.krippendorff_alpha([["a", "a"], ["a", "a"]]) is None
    assert agreement_math.krippendorff_alpha([["a", "a"], ["b", "b"]]) == 1.0


def test_a_labelers_alpha_equals_the_project_alpha_when_two_labelers_judged():
    units = {1: {"x": "a", "y": "a"}, 2: {"x": "b", "y": "a"}, 3: {"x": "b", "y": "b"}}
    project_alpha = agreement_math.krippendorff_alpha([u.values() for u in units.values()])

    assert agreement_math.labeler_alpha(units, coder="x") == pytest.approx(project_alpha)
    assert agreement_math.labeler_alpha(units, coder="y") == pytest.approx(project_alpha)


def test_a_labelers_alpha_counts_only_the_pairs_they_take_part_in():
    # Pooled values: a x5, b x3 -> D_e = (64 - 25 - 9) / 56. L differs from the other
    # labeler on one of its three units -> D_o = 1/3, alpha = 1 - 56/90 = 17/45.
    units = {
        1: {"L": "a", "M": "a"},
        2: {"L": "b", "M": "b"},
        3: {"L": "a", "N": "b"},
        4: {"M": "a", "N": "a"},
    }

    assert agreement_math.labeler_alpha(units, coder="L") == pytest.approx(17 / 45)
    assert agreement_math.labeler_alpha(units, coder="L", only_units={1, 2}) == pytest.approx(1.0)
    assert agreement_math.labeler_alpha(units, coder="Z") is None


def test_kendall_tau_matches_scipy_on_random_rankings():
    rng = random.Random(3)
    for k in (2, 3, 4, 7):
        for _ in range(10):
            first = list(range(k))
            second = first[:]
            rng.shuffle(second)
            expected = kendalltau(
                [first.index(i) for i in range(k)], [second.index(i) for i in range(k)]
            ).statistic
            assert kendall_tau(first, second) == pytest.approx(expected)


def test_kendall_tau_uses_the_shared_items_only():
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 9], [1, 2, 3]) == 1.0
    assert kendall_tau([1], [1]) is None


def test_mean_pairwise_tau_over_all_pairs_and_for_one_labeler():
    units = {
        1: {"x": [1, 2, 3], "y": [1, 2, 3], "z": [3, 2, 1]},  # taus: 1, -1, -1
        2: {"x": [4, 5, 6], "y": [4, 6, 5]},  # tau 1/3
    }

    assert agreement_math.mean_pairwise_tau(units) == pytest.approx((1 - 1 - 1 + 1 / 3) / 4)
    assert agreement_math.mean_pairwise_tau(units, coder="z") == -1.0
    assert agreement_math.mean_pairwise_tau(units, coder="x") == pytest.approx((1 - 1 + 1 / 3) / 3)
