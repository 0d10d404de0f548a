"""Inter-annotator agreement measures, plain Python with no database: Krippendorff's alpha
of a project and of one labeler against the others, and mean pairwise Kendall's tau of
rankings. annotation/review/selectors.py feeds them the current human judgments.

The measures (https://www.asc.upenn.edu/sites/default/files/2021-03/Computing%20Krippendorff%27s%20Alpha-Reliability.pdf):

- Krippendorff's alpha = 1 - D_o / D_e from the coincidence matrix: every ordered pair of
  values within a unit with m_u values counts 1 / (m_u - 1); D_o is the mean difference of
  pairs within units, D_e the mean difference of all pairable values regardless of unit.
  Comparisons: unit = task, value = choice (a, b, tie, both_bad), nominal differences.
  Ratings: unit = task, one alpha per criterion, interval differences (squared).
- A labeler's alpha is "alpha between the labeler and the others": D_o counts only the
  pairs the labeler takes part in (on each unit they judged with at least one other
  labeler, the mean difference from the others' values; units weigh the same), D_e is the
  whole project's. With two labelers it equals the project's alpha. For ratings it is the
  mean over criteria.
- Rankings: Kendall's tau between two labelers' rankings of the same task, averaged over
  every pair of labelers on every task (a labeler's figure: the pairs they take part in).
"""

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations

from annotation.labeling.kinds.ranking import kendall_tau

NOMINAL = "nominal"
INTERVAL = "interval"


def _pair_difference_sum(values: Sequence, level: str) -> float:
    """Sum of the squared differences over all ordered pairs of `values` (i != j)."""
    m = len(values)
    if level == NOMINAL:
        counts = Counter(values)
        return float(m * m - sum(n * n for n in counts.values()))
    total = sum(values)
    return 2.0 * m * sum(v * v for v in values) - 2.0 * total * total


def _difference(first, second, level: str) -> float:
    if level == NOMINAL:
        return 0.0 if first == second else 1.0
    return float(first - second) ** 2


def _pairable(units: Iterable[Iterable]) -> list[list]:
    return [values for values in (list(unit) for unit in units) if len(values) >= 2]


def expected_disagreement(units: Iterable[Iterable], *, level: str) -> float | None:
    """D_e: the mean difference between any two pairable values, whatever their unit."""
    pooled = [value for values in _pairable(units) for value in values]
    n = len(pooled)
    if n < 2:
        return None
    return _pair_difference_sum(pooled, level) / (n * (n - 1))


def krippendorff_alpha(units: Iterable[Iterable], *, level: str = NOMINAL) -> float | None:
    """Krippendorff's alpha of reliability data given as the values of each unit (missing
    values left out). None when it is undefined: no unit with two values, or no variation
    at all (D_e = 0)."""
    pairable = _pairable(units)
    n = sum(len(values) for values in pairable)
    expected = expected_disagreement(pairable, level=level)
    if not expected:
        return None
    observed = sum(_pair_difference_sum(v, level) / (len(v) - 1) for v in pairable) / n
    return 1.0 - observed / expected


def labeler_alpha(
    units: Mapping[Hashable, Mapping[Hashable, object]],
    *,
    coder: Hashable,
    level: str = NOMINAL,
    only_units: set | None = None,
    expected: float | None = None,
) -> float | None:
    """Alpha between `coder` and the others (see the module docstring); `units` maps each
    unit to {coder: value}. `only_units` limits the units the coder's side is drawn from
    (a trend period); `expected` is the project's D_e when already known."""
    if expected is None:
        expected = expected_disagreement((u.values() for u in units.values()), level=level)
    if not expected:
        return None
    differences = []
    for unit, by_coder in units.items():
        if coder not in by_coder or len(by_coder) < 2:
            continue
        if only_units is not None and unit not in only_units:
            continue
        mine = by_coder[coder]
        others = [v for other, v in by_coder.items() if other != coder]
        differences.append(sum(_difference(mine, v, level) for v in others) / len(others))
    if not differences:
        return None
    return 1.0 - (sum(differences) / len(differences)) / expected


def mean_pairwise_tau(
    units: Mapping[Hashable, Mapping[Hashable, Sequence]],
    *,
    coder: Hashable | None = None,
    only_units: set | None = None,
) -> float | None:
    """Mean Kendall's tau over every pair of coders on every unit; with `coder`, over the
    pairs that coder takes part in."""
    taus = []
    for unit, by_coder in units.items():
        if only_units is not None and unit not in only_units:
            continue
        for (one, first), (other, second) in combinations(by_coder.items(), 2):
            if coder is not None and coder not in (one, other):
                continue
            tau = kendall_tau(first, second)
            if tau is not None:
                taus.append(tau)
    return sum(taus) / len(taus) if taus else None
