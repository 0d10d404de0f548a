"""Rating: one response scored 1 (poor) to 7 (excellent) on each of the project's criteria
(helpful, harmless, honest by default), plus flags from a fixed set and an optional comment.

Every criterion needs a score. Scores come as `score_<criterion>` fields (the page's radio
buttons; JSON bodies may use them too) or, in JSON, as an object `scores`
{criterion: score}. Flags come as the repeated field `flag` (or a JSON list `flags`), by
their machine names below. The comment is stored as the judgment's rationale.
"""

from annotation.labeling.kinds import NO_PROMPTS, KindSpec, TaskBatch, counted, value, values
from annotation.models import Judgment, Prompt, Response, TaskKind
from config.errors import ServiceError

MIN_SCORE = 1
MAX_SCORE = 7
MAX_RATIONALE = 5000
# Machine name -> (label on the page, key that toggles it).
FLAGS = {
    "pii": ("PII", "p"),
    "unsafe": ("Unsafe", "u"),
    "factually_wrong": ("Factually wrong", "f"),
    "off_language": ("Off-language", "l"),
    "spam": ("Spam", "m"),
}
# A judgment agrees with a gold rating when every gold score is within this many points:
# labelers disagree by one step on a 7-point scale all the time, rarely by two.
GOLD_TOLERANCE = 1


def _score(raw, *, criterion: str) -> int:
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not MIN_SCORE <= raw <= MAX_SCORE:
        raise ServiceError(
            f"The score for {criterion} must be a whole number from {MIN_SCORE} to {MAX_SCORE}."
        )
    return raw


def _scores(data, *, criteria: list[str]) -> dict[str, int]:
    given = value(data, "scores")
    if given is not None and not isinstance(given, dict):
        raise ServiceError("scores must be an object {criterion: score}.")
    given = given or {}
    unknown = sorted(set(given) - set(criteria))
    if unknown:
        raise ServiceError(
            f"Unknown criterion {unknown[0]!r}; this project rates {', '.join(criteria)}."
        )
    scores = {}
    for criterion in criteria:
        raw = given.get(criterion, value(data, f"score_{criterion}"))
        if raw in (None, ""):
            raise ServiceError(f"Rate every criterion: {criterion} has no score.")
        scores[criterion] = _score(raw, criterion=criterion)
    return scores


def _flags(data) -> list[str]:
    raised = [*values(data, "flag"), *values(data, "flags")]
    for flag in raised:
        if not isinstance(flag, str) or flag not in FLAGS:
            raise ServiceError(f"Unknown flag {flag!r}; choose from {', '.join(FLAGS)}.")
    return [flag for flag in FLAGS if flag in raised]


def parse(data, *, assignment) -> dict:
    criteria = list(assignment.task.project.criteria)
    scores = _scores(data, criteria=criteria)
    flags = _flags(data)
    rationale = str(value(data, "rationale", "") or "").strip()
    if len(rationale) > MAX_RATIONALE:
        raise ServiceError(f"Keep the comment under {MAX_RATIONALE} characters.")
    (rated_response_id,) = assignment.shown_order
    return {
        "rated_response_id": rated_response_id,
        "scores": scores,
        "flags": flags,
        "rationale": rationale,
    }


def matches_gold(judgment: Judgment, gold_answer: dict) -> bool:
    """Gold answer: {"scores": {criterion: score}} and optionally {"flags": [...]}. It
    matches when every gold score is within GOLD_TOLERANCE points of the judgment's score
    for that criterion, and every gold flag was raised too (extra flags are fine)."""
    gold_scores = gold_answer.get("scores") or {}
    for criterion, gold_score in gold_scores.items():
        score = judgment.scores.get(criterion)
        if score is None or abs(score - gold_score) > GOLD_TOLERANCE:
            return False
    return set(gold_answer.get("flags") or []) <= set(judgment.flags)


def create_tasks(*, project, options) -> TaskBatch:
    """One rating task per response of the project. Returns the new tasks and why other
    responses got none (already rated; or no prompts or responses at all); safe to repeat.
    No options."""
    from annotation.labeling.services import ensure_task

    if not Prompt.objects.labeling().alive().filter(project=project).exists():
        return TaskBatch(TaskKind.RATING, 0, (NO_PROMPTS,))
    created = already = 0
    responses = (
        Response.objects.labeling().alive().filter(prompt__project=project).select_related("prompt")
    )
    for response in responses.order_by("id"):
        _, is_new = ensure_task(
            project=project, kind=TaskKind.RATING, prompt=response.prompt, responses=[response]
        )
        created += int(is_new)
        already += int(not is_new)
    if created + already == 0:
        return TaskBatch(
            TaskKind.RATING,
            0,
            ("no prompt has a candidate answer yet; generate some on Models",),
        )
    reasons = (
        (f"{counted(already, 'answer already has', 'answers already have')} a rating task",)
        if already
        else ()
    )
    return TaskBatch(TaskKind.RATING, created, reasons)


SPEC = KindSpec(
    kind=TaskKind.RATING,
    template="annotation/labeling/kinds/_rating.html",
    parse=parse,
    matches_gold=matches_gold,
    min_responses=1,
    max_responses=1,
    create_tasks=create_tasks,
    create_help=(
        "No options: one task per response of the project, rated 1 to 7 on each of the "
        "project's criteria, with flags."
    ),
)
