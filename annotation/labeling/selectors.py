"""Reads of the labeling pages and API: the task queue's counts."""

from django.db.models import Count, F, Q

from annotation.models import Project, Task


def task_counts_by_kind(*, project: Project) -> list[dict]:
    rows = (
        Task.objects.filter(project=project)
        .values("kind")
        .annotate(
            total_tasks=Count("id"),
            gold_tasks=Count("id", filter=Q(is_gold=True)),
            flagged_tasks=Count("id", filter=Q(flagged=True)),
            open_tasks=Count(
                "id",
                filter=Q(is_gold=False, flagged=False, assigned_count__lt=F("overlap_target")),
            ),
        )
        .order_by("kind")
    )
    return list(rows)
