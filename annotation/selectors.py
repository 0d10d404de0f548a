"""Reads for the annotation pages and API not yet in a feature package (project reads are in
annotation/projects/selectors.py, the prompt pool's in annotation/prompts/selectors.py)."""

from django.db.models import Count, F, Q

from annotation.models import Project, Prompt, Task


def candidate_counts_by_version(*, project: Project) -> dict[int, int]:
    rows = (
        Prompt.objects.labeling()
        .filter(project=project)
        .values("responses__model_version")
        .annotate(n=Count("responses", filter=Q(responses__isnull=False)))
    )
    return {row["responses__model_version"]: row["n"] for row in rows if row["n"]}


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
