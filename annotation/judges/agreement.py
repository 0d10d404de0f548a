"""How far an AI judge agrees with the people: per (judge, constitution version), on the
response pairs that both the judge and a human majority decided.

- A *pair* is the unordered pair of responses of a comparison; every judgment of it is
  read in one orientation (the task order: A is the task's first response), whatever order
  its judge saw.
- The *human majority* of a pair comes from its current human judgments (source "human",
  not superseded, not rejected; annotation.review.selectors.current_human_judgments): the
  outcome (A wins, B wins, tie, both bad) with more votes than any other. Pairs whose majority is
  a tie or both-bad, and pairs with no single top outcome (1 A vs 1 B), have no winner and
  are left out of accuracy and kappa; the report counts them.
- The *AI choice* is the judgment's choice (a or b), or, when it stored none, the side its
  soft label favours; a soft label of exactly 0.5 with no choice is "undecided" and is
  left out (counted too).
- Every AI comparison of the judge counts, reviewed or not: a reviewer's correction or
  rejection says the judge was wrong, and must not make it look better. Left out: the
  presumed comparisons of critique-and-revision (``ai_details["presumed"]``: "the
  revision is better" is assumed, not judged).
- Accuracy is the share of compared AI judgments that pick the majority's winner; Cohen's
  kappa is over the two categories A wins / B wins
  (https://en.wikipedia.org/wiki/Cohen%27s_kappa): (p_o - p_e) / (1 - p_e), None when p_e
  is 1 (both sides always said the same category).
- The position-bias rate is the share of the judge's AI comparisons (all of them, matched
  to humans or not) whose two display orders disagreed (``ai_details["agree"]`` false),
  over those that record it; confidence is the mean |soft_label - 0.5| over those with a
  soft label (0 unsure, 0.5 certain).
"""

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from annotation.models import Constitution, Judge, Judgment, Project, TaskKind
from annotation.review.selectors import current_human_judgments

TIE_OR_BOTH_BAD = "tie_or_both_bad"
NO_MAJORITY = "no_majority"


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (plain Python). None when
    there are no items or chance agreement is already certain (p_e = 1)."""
    if len(first) != len(second):
        raise ValueError("Both raters must label the same items.")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(first_counts[c] * second_counts[c] for c in first_counts) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def majority(outcomes: Sequence[Hashable]) -> Hashable | None:
    """The outcome with more votes than every other one, or None when two share the top."""
    ranked = Counter(outcomes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _winner(choice: str, response_a: int, response_b: int):
    """The winning response id, or the choice itself for a tie or both-bad."""
    if choice == Judgment.Choice.A:
        return response_a
    if choice == Judgment.Choice.B:
        return response_b
    return choice or None


def _human_majorities(project: Project) -> tuple[dict, dict]:
    """(pair -> winning response id, or TIE_OR_BOTH_BAD / NO_MAJORITY; pair -> the
    response that is A in task order)."""
    votes = defaultdict(list)
    first_of = {}
    rows = (
        current_human_judgments(project=project)
        .filter(kind=TaskKind.COMPARISON, response_a__isnull=False, response_b__isnull=False)
        .values_list("response_a_id", "response_b_id", "choice")
    )
    for response_a, response_b, choice in rows.iterator(chunk_size=2000):
        pair = frozenset((response_a, response_b))
        first_of.setdefault(pair, response_a)
        outcome = _winner(choice, response_a, response_b)
        if outcome is not None:
            votes[pair].append(outcome)
    majorities = {}
    for pair, outcomes in votes.items():
        top = majority(outcomes)
        if top is None:
            majorities[pair] = NO_MAJORITY
        elif top in pair:
            majorities[pair] = top
        else:
            majorities[pair] = TIE_OR_BOTH_BAD
    return majorities, first_of


def _ai_winner(choice: str, soft_label, response_a: int, response_b: int) -> int | None:
    if choice in (Judgment.Choice.A, Judgment.Choice.B):
        return _winner(choice, response_a, response_b)
    if soft_label is None or soft_label == 0.5:
        return None
    return response_a if soft_label > 0.5 else response_b


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judge_agreement(*, project: Project) -> list[dict]:
    """One row per (judge, constitution version) with AI comparisons in the project: how
    many AI comparisons, how many were compared with a human majority (and on how many
    pairs), accuracy, Cohen's kappa, position-bias rate, mean confidence, and why the
    others were left out. See the module docstring for every definition."""
    majorities, first_of = _human_majorities(project)
    ai_rows = (
        Judgment.objects.filter(
            project=project,
            source=Judgment.Source.AI,
            kind=TaskKind.COMPARISON,
            response_a__isnull=False,
            response_b__isnull=False,
        )
        .order_by("id")
        .values_list(
            "judge_id",
            "constitution_id",
            "response_a_id",
            "response_b_id",
            "choice",
            "soft_label",
            "ai_details",
        )
    )
    groups = defaultdict(
        lambda: {
            "judgments": 0,
            "ai": [],
            "human": [],
            "pairs": set(),
            "bias": [],
            "confidence": [],
            "left_out": Counter(),
        }
    )
    for judge_id, constitution_id, a, b, choice, soft_label, details in ai_rows.iterator(
        chunk_size=2000
    ):
        details = details if isinstance(details, dict) else {}
        if details.get("presumed") is True:
            continue
        group = groups[(judge_id, constitution_id)]
        group["judgments"] += 1
        if isinstance(details.get("agree"), bool):
            group["bias"].append(not details["agree"])
        if soft_label is not None:
            group["confidence"].append(abs(soft_label - 0.5))
        pair = frozenset((a, b))
        truth = majorities.get(pair)
        if truth is None:
            group["left_out"]["no_human_judgment"] += 1
            continue
        if truth in (TIE_OR_BOTH_BAD, NO_MAJORITY):
            group["left_out"][f"human_{truth}"] += 1
            continue
        picked = _ai_winner(choice, soft_label, a, b)
        if picked is None:
            group["left_out"]["ai_undecided"] += 1
            continue
        task_a = first_of[pair]
        group["ai"].append("a" if picked == task_a else "b")
        group["human"].append("a" if truth == task_a else "b")
        group["pairs"].add(pair)

    judges = Judge.objects.in_bulk({judge_id for judge_id, _ in groups if judge_id})
    constitutions = Constitution.objects.in_bulk({c for _, c in groups if c})
    report = []
    for (judge_id, constitution_id), group in groups.items():
        judge, constitution = judges.get(judge_id), constitutions.get(constitution_id)
        compared = len(group["ai"])
        agreed = sum(x == y for x, y in zip(group["ai"], group["human"], strict=True))
        report.append(
            {
                "judge_id": judge_id,
                "judge": judge.name if judge else "",
                "constitution_id": constitution_id,
                "constitution": str(constitution) if constitution else "",
                "constitution_name": constitution.name if constitution else "",
                "constitution_version": constitution.version if constitution else None,
                "judgments": group["judgments"],
                "compared": compared,
                "pairs": len(group["pairs"]),
                "agreed": agreed,
                "accuracy": agreed / compared if compared else None,
                "kappa": cohen_kappa(group["ai"], group["human"]),
                "position_bias_rate": _mean([float(x) for x in group["bias"]]),
                "position_bias_known": len(group["bias"]),
                "mean_confidence": _mean(group["confidence"]),
                "left_out": {
                    key: group["left_out"][key]
                    for key in (
                        "no_human_judgment",
                        f"human_{TIE_OR_BOTH_BAD}",
                        f"human_{NO_MAJORITY}",
                        "ai_undecided",
                    )
                },
            }
        )
    report.sort(
        key=lambda r: (r["judge"], r["constitution_name"], -(r["constitution_version"] or 0))
    )
    return report
