"""Pairwise comparison on Anthropic's 8-point scale (A much better ... B much better), plus
tie and both-bad, an optional rationale and an optional choice per project criterion."""

from annotation.labeling.kinds import KindSpec, value
from annotation.models import Judgment, TaskKind
from config.errors import ServiceError

SIDES = ("left", "right")
OTHER_CHOICES = ("tie", "both_bad")
STRENGTHS = {1: "marginally", 2: "slightly", 3: "", 4: "much"}
# The 8 buttons left to right, with their keys: 1 = A much better ... 8 = B much better.
SCALE = [("left", 4), ("left", 3), ("left", 2), ("left", 1),
         ("right", 1), ("right", 2), ("right", 3), ("right", 4)]  # fmt: skip
MAX_RATIONALE = 5000


def _split_choice(raw) -> tuple[str, int | None]:
    """'left', 'left-3' or 'tie' -> (side, strength)."""
    text = str(raw or "")
    side, _, strength = text.partition("-")
    if not strength:
        return side, None
    try:
        return side, int(strength)
    except ValueError:
        return text, None


def _strength(raw_from_choice, data) -> int | None:
    raw = raw_from_choice if raw_from_choice is not None else value(data, "strength")
    if raw in (None, ""):
        return None
    try:
        strength = int(raw)
    except (TypeError, ValueError):
        strength = 0
    if strength not in STRENGTHS:
        raise ServiceError("strength must be 1 (marginally), 2 (slightly), 3 (better) or 4 (much).")
    return strength


def _side_to_choice(side: str, *, assignment, task_a: int) -> str:
    if side in OTHER_CHOICES:
        return side
    left_id, right_id = assignment.shown_order
    picked = left_id if side == "left" else right_id
    return Judgment.Choice.A if picked == task_a else Judgment.Choice.B


def _criteria_choices(data, *, assignment, task_a: int) -> dict:
    chosen = {}
    for criterion in assignment.task.project.criteria:
        raw = value(data, f"criterion_{criterion}")
        if raw in (None, ""):
            continue
        if raw not in (*SIDES, "tie"):
            raise ServiceError(f"criterion_{criterion} must be left, right or tie.")
        chosen[criterion] = _side_to_choice(raw, assignment=assignment, task_a=task_a)
    return chosen


def parse(data, *, assignment) -> dict:
    side, strength_in_choice = _split_choice(value(data, "choice"))
    if side not in (*SIDES, *OTHER_CHOICES):
        raise ServiceError("choice must be one of both_bad, left, right, tie.")
    strength = _strength(strength_in_choice, data) if side in SIDES else None
    rationale = str(value(data, "rationale", "") or "").strip()
    if len(rationale) > MAX_RATIONALE:
        raise ServiceError(f"Keep the rationale under {MAX_RATIONALE} characters.")
    task_a, task_b = assignment.task.links.order_by("position").values_list(
        "response_id", flat=True
    )
    return {
        "response_a_id": task_a,
        "response_b_id": task_b,
        "choice": _side_to_choice(side, assignment=assignment, task_a=task_a),
        "strength": strength,
        "rationale": rationale,
        "criteria_choices": _criteria_choices(data, assignment=assignment, task_a=task_a),
    }


def matches_gold(judgment: Judgment, gold_answer: dict) -> bool:
    """Gold answer: {"choice": "a" | "b" | "tie" | "both_bad"}, in task terms."""
    return judgment.choice == gold_answer.get("choice")


SPEC = KindSpec(
    kind=TaskKind.COMPARISON,
    template="annotation/labeling/kinds/_comparison.html",
    parse=parse,
    matches_gold=matches_gold,
    min_responses=2,
    max_responses=2,
)
