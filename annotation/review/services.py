"""Writes of quality control: reviewers' decisions on judgments, gold answers, and giving
flagged tasks back to the pool.

A review never changes the reviewed row: accepting or rejecting adds a Review; correcting
adds a new Judgment (source "review", by the reviewer) that supersedes the reviewed one,
and a Review pointing at it. A judgment is reviewed once. Imported judgments sent to review
(annotation/review/imports.py) are decided the same way.
"""

import logging
import math

from django.db import IntegrityError, transaction

from annotation.labeling.kinds import KINDS
from annotation.models import Assignment, Judgment, Project, Review, Task, TaskKind
from annotation.review.imports import imported_review_view
from config.errors import Conflict, ServiceError

logger = logging.getLogger(__name__)

MAX_NOTE = 2000
# Fields a correction may differ in without saying anything new about the responses.
_COMMENT_FIELDS = {"rationale", "edit_diff"}


# --- reviews ---------------------------------------------------------------------------


def _clean_note(note) -> str:
    note = str(note or "").strip()
    if len(note) > MAX_NOTE:
        raise ServiceError(f"Keep the note under {MAX_NOTE} characters.")
    return note


def _locked_reviewable(*, project: Project, judgment_id, reviewer) -> Judgment:
    if isinstance(judgment_id, bool) or not isinstance(judgment_id, int):
        raise ServiceError("judgment_id must be the id of a judgment.")
    judgment = (
        # Lock only the judgment row: its task is a nullable join PostgreSQL cannot lock.
        Judgment.objects.select_for_update(of=("self",))
        .select_related("task", "task__project")
        .filter(pk=judgment_id, project=project)
        .first()
    )
    if judgment is None:
        raise ServiceError(f"There is no judgment {judgment_id} in this project.")
    if judgment.labeler_id == reviewer.pk:
        raise ServiceError("You cannot review your own judgment.")
    if Judgment.objects.filter(supersedes=judgment).exists():
        raise Conflict("This judgment was already corrected.")
    if Review.objects.filter(judgment=judgment).exists():
        raise Conflict("This judgment was already reviewed.")
    return judgment


def judgment_accept(*, project: Project, judgment_id, reviewer, note: str = "") -> Review:
    """The reviewer agrees with the judgment; it leaves the review queue."""
    note = _clean_note(note)
    with transaction.atomic():
        judgment = _locked_reviewable(project=project, judgment_id=judgment_id, reviewer=reviewer)
        return Review.objects.create(
            judgment=judgment, reviewer=reviewer, decision=Review.Decision.ACCEPTED, note=note
        )


def judgment_reject(*, project: Project, judgment_id, reviewer, note: str = "") -> Review:
    """The judgment is unusable (careless, spam): it stays stored, but quality figures
    and exports leave it out."""
    note = _clean_note(note)
    with transaction.atomic():
        judgment = _locked_reviewable(project=project, judgment_id=judgment_id, reviewer=reviewer)
        return Review.objects.create(
            judgment=judgment, reviewer=reviewer, decision=Review.Decision.REJECTED, note=note
        )


def assignment_for_review(*, task: Task, reviewer) -> Assignment:
    """An unsaved assignment showing the task's responses in task order (A first), so a
    kind's own parser reads the reviewer's answer in task terms."""
    order = list(task.links.order_by("position").values_list("response_id", flat=True))
    return Assignment(task=task, labeler=reviewer, shown_order=order)


def _imported(judgment: Judgment) -> bool:
    return judgment.source == Judgment.Source.IMPORT


def judgment_correct(
    *, project: Project, judgment_id, reviewer, data, note: str = "", time_spent_ms: int = 0
) -> Review:
    """Store the reviewer's answer as a new judgment that supersedes the reviewed one.
    `data` holds the kind's own fields, as a labeler would send them, with the responses in
    task order (for comparisons "left" is A). An imported judgment (of no task) is
    corrected against the responses it names, in its own order
    (annotation/review/imports.py). The reviewed row is not changed."""
    note = _clean_note(note)
    try:
        with transaction.atomic():
            judgment = _locked_reviewable(
                project=project, judgment_id=judgment_id, reviewer=reviewer
            )
            task = judgment.task
            if judgment.kind not in KINDS or (task is None and not _imported(judgment)):
                raise ServiceError("Only judgments of tasks can be corrected here.")
            if task is None:
                view = imported_review_view(judgment=judgment)
            else:
                view = assignment_for_review(task=task, reviewer=reviewer)
            fields = KINDS[judgment.kind].parse(data, assignment=view)
            if all(
                getattr(judgment, name) == value
                for name, value in fields.items()
                if name not in _COMMENT_FIELDS
            ):
                raise ServiceError("That is what the labeler said: accept it instead.")
            correction = Judgment.objects.create(
                kind=judgment.kind,
                project=project,
                task=task,
                prompt_id=judgment.prompt_id,
                shown_order=view.shown_order,
                context=judgment.context,
                source=Judgment.Source.REVIEW,
                labeler=reviewer,
                time_spent_ms=max(0, min(int(time_spent_ms or 0), 86_400_000)),
                supersedes=judgment,
                **fields,
            )
            return Review.objects.create(
                judgment=judgment,
                reviewer=reviewer,
                decision=Review.Decision.CORRECTED,
                correction=correction,
                note=note,
            )
    except IntegrityError:
        # Another reviewer corrected it between our check and our insert.
        raise Conflict("This judgment was already corrected.") from None


# --- gold ------------------------------------------------------------------------------


def _is_number(raw) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)


def _only_keys(answer: dict, allowed: set[str], kind: str) -> None:
    extra = sorted(set(answer) - allowed)
    if extra:
        raise ServiceError(
            f"A {kind} gold answer holds only {', '.join(sorted(allowed))}; not {extra[0]!r}."
        )


def _check_comparison_gold(answer: dict, task: Task) -> None:
    _only_keys(answer, {"choice"}, "comparison")
    if answer.get("choice") not in Judgment.Choice.values:
        raise ServiceError('A comparison gold answer is {"choice": "a", "b", "tie" or "both_bad"}.')


def _check_ranking_gold(answer: dict, task: Task) -> None:
    _only_keys(answer, {"ranking", "all_bad"}, "ranking")
    all_bad = answer.get("all_bad", False)
    if not isinstance(all_bad, bool):
        raise ServiceError("all_bad must be true or false.")
    ranking = answer.get("ranking")
    if all_bad and ranking is None:
        return
    ids = sorted(task.links.values_list("response_id", flat=True))
    if (
        not isinstance(ranking, list)
        or sorted(ranking) != ids
        or not all(isinstance(item, int) and not isinstance(item, bool) for item in ranking)
    ):
        raise ServiceError(
            f'A ranking gold answer is {{"ranking": [...]}} with each of the task\'s response '
            f'ids {ids} once, best first, or {{"all_bad": true}}.'
        )


def _check_rating_gold(answer: dict, task: Task) -> None:
    from annotation.labeling.kinds.rating import FLAGS, MAX_SCORE, MIN_SCORE

    _only_keys(answer, {"scores", "flags"}, "rating")
    scores = answer.get("scores")
    criteria = list(task.project.criteria)
    if not isinstance(scores, dict) or not scores:
        raise ServiceError('A rating gold answer is {"scores": {criterion: score}, "flags": []}.')
    for criterion, score in scores.items():
        if criterion not in criteria:
            raise ServiceError(
                f"Unknown criterion {criterion!r}; this project rates {', '.join(criteria)}."
            )
        if not _is_number(score) or not MIN_SCORE <= score <= MAX_SCORE:
            raise ServiceError(
                f"The gold score for {criterion} must be from {MIN_SCORE} to {MAX_SCORE}."
            )
    flags = answer.get("flags", [])
    if not isinstance(flags, list) or any(flag not in FLAGS for flag in flags):
        raise ServiceError(f"Gold flags must be a list drawn from {', '.join(FLAGS)}.")


def _check_demonstration_gold(answer: dict, task: Task) -> None:
    _only_keys(answer, {"text", "min_similarity"}, "demonstration")
    text = answer.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ServiceError('A demonstration gold answer is {"text": "...", "min_similarity": 0.8}.')
    threshold = answer.get("min_similarity", 0.8)
    if not _is_number(threshold) or not 0 < threshold <= 1:
        raise ServiceError("min_similarity must be a number above 0 and at most 1.")


GOLD_CHECKS = {
    TaskKind.COMPARISON: _check_comparison_gold,
    TaskKind.RANKING: _check_ranking_gold,
    TaskKind.RATING: _check_rating_gold,
    TaskKind.DEMONSTRATION: _check_demonstration_gold,
}


def check_gold_answer(*, task: Task, gold_answer) -> None:
    """ServiceError unless `gold_answer` has the shape the task's kind scores against."""
    check = GOLD_CHECKS.get(task.kind)
    if check is None or task.kind not in KINDS:
        raise ServiceError(f"{task.get_kind_display()} tasks cannot be gold items.")
    if not isinstance(gold_answer, dict):
        raise ServiceError("A gold answer must be a JSON object.")
    check(gold_answer, task)


def task_make_gold(*, task: Task, gold_answer, user) -> Task:
    """Make the task a gold item with this known answer (or replace its answer). Gold tasks
    are mixed into labelers' queues at the project's gold rate and score every current
    human judgment of the task, earlier ones included."""
    check_gold_answer(task=task, gold_answer=gold_answer)
    with transaction.atomic():
        Task.objects.select_for_update().filter(pk=task.pk).update(
            is_gold=True, gold_answer=gold_answer
        )
    task.is_gold, task.gold_answer = True, gold_answer
    logger.info("%s made task %s gold: %r", user, task.pk, gold_answer)
    return task


def gold_answer_from(judgment: Judgment) -> dict:
    """The gold answer that says "this judgment is right"."""
    if judgment.kind == TaskKind.COMPARISON:
        return {"choice": judgment.choice}
    if judgment.kind == TaskKind.RANKING:
        return {"all_bad": True} if judgment.all_bad else {"ranking": list(judgment.ranking)}
    if judgment.kind == TaskKind.RATING:
        answer = {"scores": dict(judgment.scores)}
        if judgment.flags:
            answer["flags"] = list(judgment.flags)
        return answer
    if judgment.kind == TaskKind.DEMONSTRATION:
        return {"text": judgment.text}
    raise ServiceError(f"{judgment.get_kind_display()} judgments cannot be gold answers.")


def task_make_gold_from_judgment(*, project: Project, judgment_id, user) -> Task:
    """Make the judgment's task a gold item whose answer is what the judgment says."""
    if isinstance(judgment_id, bool) or not isinstance(judgment_id, int):
        raise ServiceError("judgment_id must be the id of a judgment.")
    judgment = (
        Judgment.objects.select_related("task", "task__project")
        .filter(pk=judgment_id, project=project, task__isnull=False)
        .first()
    )
    if judgment is None:
        raise ServiceError(f"There is no judgment {judgment_id} of a task in this project.")
    if Judgment.objects.filter(supersedes=judgment).exists():
        raise ServiceError("This judgment was corrected; use the correction instead.")
    if judgment.reviews.filter(decision=Review.Decision.REJECTED).exists():
        raise ServiceError("This judgment was rejected; it cannot be the gold answer.")
    answer = gold_answer_from(judgment)
    check_gold_answer(task=judgment.task, gold_answer=answer)
    if not KINDS[judgment.kind].matches_gold(judgment, answer):
        raise ServiceError("This judgment does not match its own gold answer; set it by hand.")
    return task_make_gold(task=judgment.task, gold_answer=answer, user=user)


# --- flagged tasks ---------------------------------------------------------------------


def task_return_to_pool(*, project: Project, task_id, user) -> Task:
    """Unflag a task skipped by many and count its skips from zero again, so labelers get
    it again (those who skipped it do not: they hold an assignment of it)."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ServiceError("task_id must be the id of a task.")
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(pk=task_id, project=project).first()
        if task is None:
            raise ServiceError(f"There is no task {task_id} in this project.")
        if not task.flagged:
            raise Conflict("This task is not flagged.")
        task.flagged = False
        task.skip_count = 0
        task.save(update_fields=["flagged", "skip_count"])
    logger.info("%s returned flagged task %s to the pool", user, task.pk)
    return task
