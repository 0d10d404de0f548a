"""Go back: a labeler changes a judgment they just gave. Like a reviewer's correction, the
change is a new judgment that supersedes the old one; the old row is never edited, so
exports and training (which read only judgments nobody superseded) see the new answer.

A labeler may change their own, current human judgment of a (non-gold) labeling task for
``settings.LABEL_CHANGE_WINDOW_HOURS`` hours after giving it: long enough to fix a slip
noticed later in the session, short enough that agreement figures and gold checks made on
the old answer stay meaningful.
"""

from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.labeling.inputs import check_time_spent, parse_client_id
from annotation.labeling.kinds import KINDS
from annotation.labeling.services import store_judgment
from annotation.models import Assignment, Judgment, Project, Review
from config.errors import Conflict, NotFound, ServiceError

ALREADY_SUPERSEDED = "This judgment was already changed or corrected by a reviewer."


def change_deadline(judgment: Judgment):
    """Until when the labeler may change this judgment."""
    return judgment.created_at + timedelta(hours=settings.LABEL_CHANGE_WINDOW_HOURS)


def change_refusal(judgment: Judgment, *, labeler) -> str | None:
    """Why the labeler may not change this judgment now, or None when they may. The
    superseded check is repeated under the row lock by judgment_change."""
    if judgment.labeler_id != labeler.pk or judgment.source != Judgment.Source.HUMAN:
        return "You can only change your own judgments."
    if judgment.task_id is None or judgment.kind not in KINDS:
        return "Only judgments of labeling tasks can be changed."
    if judgment.task.is_gold:
        return "Gold tasks check your answer; they cannot be changed."
    if judgment.prompt.deleted_at is not None:
        return "This prompt was deleted; its judgments cannot be changed."
    if Judgment.objects.filter(supersedes=judgment).exists():
        return ALREADY_SUPERSEDED
    if Review.objects.filter(judgment=judgment).exists():
        return "A reviewer already decided on this judgment; it cannot be changed."
    if timezone.now() > change_deadline(judgment):
        hours = settings.LABEL_CHANGE_WINDOW_HOURS
        return f"Judgments can be changed for {hours} hours; this one is older."
    return None


def view_of(judgment: Judgment) -> Assignment:
    """An unsaved assignment showing the judgment's task as the labeler saw it, so the
    kind's parser and template read a change exactly as they read the first answer."""
    return Assignment(
        task=judgment.task, labeler_id=judgment.labeler_id, shown_order=judgment.shown_order
    )


def _locked_changeable(*, project: Project, labeler, judgment_id) -> Judgment:
    if isinstance(judgment_id, bool) or not isinstance(judgment_id, int):
        raise ServiceError("judgment_id must be the id of a judgment.")
    judgment = (
        # Lock only the judgment row: its task is a nullable join PostgreSQL cannot lock.
        Judgment.objects.select_for_update(of=("self",))
        .select_related("task", "task__project", "prompt")
        .filter(pk=judgment_id, project=project)
        .first()
    )
    if judgment is None:
        raise NotFound(f"There is no judgment {judgment_id} in this project.")
    refusal = change_refusal(judgment, labeler=labeler)
    if refusal == ALREADY_SUPERSEDED:
        raise Conflict(refusal)
    if refusal:
        raise ServiceError(refusal)
    return judgment


def judgment_change(
    *,
    project: Project,
    labeler,
    judgment_id,
    data: Mapping,
    client_id,
    time_spent_ms: int = 0,
) -> tuple[Judgment, bool]:
    """Store the labeler's new answer to a task they judged as a judgment that supersedes
    their old one; `data` holds the kind's own fields in shown order, as for a first
    answer. Sending the same client_id again returns the stored change: (judgment,
    created). Two changes of one judgment cannot both supersede it: the row is locked and
    `supersedes` is unique."""
    client_uuid = parse_client_id(client_id)
    check_time_spent(time_spent_ms)
    existing = Judgment.objects.filter(client_id=client_uuid).first()
    if existing:
        return _same_change_or_conflict(existing, labeler=labeler, judgment_id=judgment_id), False
    try:
        with transaction.atomic():
            old = _locked_changeable(project=project, labeler=labeler, judgment_id=judgment_id)
            new = store_judgment(
                view_of(old),
                data=data,
                client_id=client_uuid,
                time_spent_ms=time_spent_ms,
                supersedes=old,
            )
            return new, True
    except IntegrityError:
        # The same client_id or another change of this judgment was stored first.
        existing = Judgment.objects.filter(client_id=client_uuid).first()
        if existing is None:
            raise Conflict(ALREADY_SUPERSEDED) from None
        return _same_change_or_conflict(existing, labeler=labeler, judgment_id=judgment_id), False


def _same_change_or_conflict(existing: Judgment, *, labeler, judgment_id) -> Judgment:
    if existing.labeler_id != labeler.pk or existing.supersedes_id != judgment_id:
        raise Conflict("This client_id was already used for another judgment.")
    return existing
