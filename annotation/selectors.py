"""Reads for the annotation pages and API."""

from django.db.models import Count, F, Q

from annotation.models import Assignment, Judgment, Project, Prompt, PromptImport, Task


def project_overview(*, project: Project) -> dict:
    tasks = Task.objects.filter(project=project, is_gold=False)
    judgments = Judgment.objects.filter(project=project)
    return {
        "prompts": Prompt.objects.labeling().filter(project=project).count(),
        "tasks": tasks.count(),
        "open_tasks": tasks.filter(
            assigned_count__lt=project.overlap_target, flagged=False
        ).count(),
        "flagged_tasks": tasks.filter(flagged=True).count(),
        "judgments": judgments.count(),
        "decisive_comparisons": judgments.filter(
            kind="comparison", choice__in=[Judgment.Choice.A, Judgment.Choice.B]
        ).count(),
    }


def labeler_progress(*, project: Project, labeler) -> dict:
    judged = Judgment.objects.filter(project=project, labeler=labeler)
    return {
        "judged": judged.count(),
        "pending": Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.PENDING
        ).count(),
    }


def recent_judgments(*, project: Project, limit: int = 20):
    return (
        Judgment.objects.filter(project=project)
        .select_related("labeler", "prompt")
        .order_by("-created_at")[:limit]
    )


def prompts_page(*, project: Project, limit: int = 50):
    return (
        Prompt.objects.labeling()
        .filter(project=project)
        .annotate(
            response_count=Count("responses", distinct=True),
            judgment_count=Count("judgments", distinct=True),
        )
        .order_by("-created_at", "-id")[:limit]
    )


def prompt_imports(*, project: Project, limit: int = 10):
    """The latest imports, newest first, with how many prompts each added."""
    return (
        PromptImport.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-created_at", "-id")[:limit]
    )


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
