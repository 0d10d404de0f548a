"""Reads of the prompt pool: the latest prompts and imports of a project."""

from django.db.models import Count

from annotation.models import Project, Prompt, PromptImport


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
