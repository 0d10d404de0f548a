"""Reads for the annotation pages and API."""

from django.db.models import Count, Q

from annotation.models import Assignment, Comparison, ComparisonTask, Project, Prompt


def project_overview(*, project: Project) -> dict:
    tasks = ComparisonTask.objects.filter(project=project)
    return {
        "prompts": Prompt.objects.filter(project=project).count(),
        "tasks": tasks.count(),
        "open_tasks": tasks.filter(assigned_count__lt=project.overlap_target).count(),
        "comparisons": Comparison.objects.filter(project=project).count(),
        "decisive_comparisons": Comparison.objects.filter(
            project=project, choice__in=[Comparison.Choice.A, Comparison.Choice.B]
        ).count(),
    }


def labeler_progress(*, project: Project, labeler) -> dict:
    judged = Comparison.objects.filter(project=project, labeler=labeler)
    return {
        "judged": judged.count(),
        "pending": Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.PENDING
        ).count(),
    }


def recent_comparisons(*, project: Project, limit: int = 20):
    return (
        Comparison.objects.filter(project=project)
        .select_related("labeler", "prompt")
        .order_by("-created_at")[:limit]
    )


def prompts_page(*, project: Project, limit: int = 50):
    return (
        Prompt.objects.filter(project=project)
        .annotate(response_count=Count("responses"), judgment_count=Count("comparisons"))
        .order_by("-created_at", "-id")[:limit]
    )


def candidate_counts_by_version(*, project: Project) -> dict[int, int]:
    rows = (
        Prompt.objects.filter(project=project)
        .values("responses__model_version")
        .annotate(n=Count("responses", filter=Q(responses__isnull=False)))
    )
    return {row["responses__model_version"]: row["n"] for row in rows if row["n"]}


def comparison_exists_for_client(*, client_id) -> bool:
    return Comparison.objects.filter(client_id=client_id).exists()
