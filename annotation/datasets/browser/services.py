"""Soft delete and restore of prompts and responses. Nothing is removed for real: the row
keeps who deleted it, when and why, and a restore brings it back as it was. Deleting a
prompt also expires its pending assignments, so nobody is handed it again."""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Assignment, Prompt, Response, Task
from config.errors import ServiceError


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why it is deleted: a reason is required.")
    if len(reason) > 500:
        raise ServiceError("The reason is longer than 500 characters.")
    return reason


def _mark_deleted(row, *, by, reason: str) -> None:
    if row.is_deleted:
        raise ServiceError(f"This {type(row).__name__.lower()} is already deleted.")
    row.deleted_at, row.deleted_by, row.delete_reason = timezone.now(), by, _reason(reason)
    row.save(update_fields=["deleted_at", "deleted_by", "delete_reason"])


def _mark_restored(row) -> None:
    if not row.is_deleted:
        raise ServiceError(f"This {type(row).__name__.lower()} is not deleted.")
    row.deleted_at, row.deleted_by, row.delete_reason = None, None, ""
    row.save(update_fields=["deleted_at", "deleted_by", "delete_reason"])


@transaction.atomic
def prompt_delete(*, prompt: Prompt, by, reason: str) -> int:
    """Delete the prompt softly; answers how many pending assignments were expired."""
    prompt = Prompt.objects.select_for_update().get(pk=prompt.pk)
    _mark_deleted(prompt, by=by, reason=reason)
    pending = list(
        Assignment.objects.select_for_update()
        .filter(task__prompt=prompt, status=Assignment.Status.PENDING)
        .values_list("pk", "task_id")
    )
    Assignment.objects.filter(pk__in=[pk for pk, _ in pending]).update(
        status=Assignment.Status.EXPIRED
    )
    for task_id in {task_id for _, task_id in pending}:  # as an expiry does: free the slots
        held = sum(1 for _, task in pending if task == task_id)
        Task.objects.filter(pk=task_id, is_gold=False).update(
            assigned_count=F("assigned_count") - held
        )
    return len(pending)


@transaction.atomic
def prompt_restore(*, prompt: Prompt) -> None:
    """Bring the prompt back; expired assignments stay expired (its tasks are handed out
    afresh)."""
    _mark_restored(Prompt.objects.select_for_update().get(pk=prompt.pk))


@transaction.atomic
def response_delete(*, response: Response, by, reason: str) -> None:
    _mark_deleted(Response.objects.select_for_update().get(pk=response.pk), by=by, reason=reason)


@transaction.atomic
def response_restore(*, response: Response) -> None:
    _mark_restored(Response.objects.select_for_update().get(pk=response.pk))
