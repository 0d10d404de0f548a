"""What soft deletion takes out of labeling and training: a deleted prompt or response
(``deleted_at`` set) leaves the labeling queue, task creation, candidate generation, the
judges' inputs, the exports, dataset versions and training snapshots; restoring it (clearing
``deleted_at``) brings it all back, since nothing is removed for real.

Prompts and responses: ``Prompt.objects.alive()``, ``Response.objects.alive()``. Tasks and
judgments: the filters here, which every consumer applies to its own queryset.
"""

from django.db.models import Exists, OuterRef, QuerySet

from annotation.models import TaskResponse


def _deleted_link(task_field: str) -> Exists:
    """Whether the task in ``task_field`` shows a deleted response."""
    return Exists(
        TaskResponse.objects.filter(task=OuterRef(task_field), response__deleted_at__isnull=False)
    )


def alive_tasks(tasks: QuerySet) -> QuerySet:
    """Tasks whose prompt and every response are alive."""
    return tasks.filter(prompt__deleted_at__isnull=True).exclude(_deleted_link("pk"))


def alive_assignments(assignments: QuerySet) -> QuerySet:
    """Assignments of alive tasks."""
    return assignments.filter(task__prompt__deleted_at__isnull=True).exclude(
        _deleted_link("task_id")
    )


def alive_judgments(judgments: QuerySet) -> QuerySet:
    """Judgments whose prompt, judged responses (a, b, rated) and task's responses are
    alive. A task-less ranking (an import) names its responses only in JSON: its readers
    read the texts through ``Response.objects.alive()`` and drop a row missing one."""
    # ``__deleted_at__isnull=True`` through a nullable key joins LEFT OUTER: an empty key
    # (a comparison has no rated response) passes.
    return judgments.filter(
        prompt__deleted_at__isnull=True,
        response_a__deleted_at__isnull=True,
        response_b__deleted_at__isnull=True,
        rated_response__deleted_at__isnull=True,
    ).exclude(_deleted_link("task_id"))
