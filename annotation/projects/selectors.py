"""Reads of a project: its overview, a labeler's progress in it, its latest judgments."""

import difflib

from annotation.models import (
    Assignment,
    Guidelines,
    Judgment,
    Membership,
    Project,
    Prompt,
    Role,
    Task,
    Workspace,
)

# The project's own judgments: labelers', reviewers' and AI judges'. Imported ones (a
# dataset's labels) are counted apart: they are no one's work here, and the export page's
# figures, which read this overview, leave them out.
OWN_SOURCES = (Judgment.Source.HUMAN, Judgment.Source.REVIEW, Judgment.Source.AI)


def project_overview(*, project: Project) -> dict:
    """The project page's counts; ``judgments`` and ``decisive_comparisons`` are of the
    project's own judgments, ``imported_judgments`` counts those imported."""
    tasks = Task.objects.filter(project=project, is_gold=False)
    judgments = Judgment.objects.filter(project=project, source__in=OWN_SOURCES)
    return {
        "prompts": Prompt.objects.labeling().filter(project=project).count(),
        "tasks": tasks.count(),
        "open_tasks": tasks.filter(
            assigned_count__lt=project.overlap_target, flagged=False
        ).count(),
        "flagged_tasks": tasks.filter(flagged=True).count(),
        "judgments": judgments.count(),
        "imported_judgments": Judgment.objects.filter(
            project=project, source=Judgment.Source.IMPORT
        ).count(),
        "decisive_comparisons": judgments.filter(
            kind="comparison", choice__in=[Judgment.Choice.A, Judgment.Choice.B]
        ).count(),
    }


def labeler_progress(*, project: Project, labeler) -> dict:
    # A labeler's change of their own judgment replaces it: one item judged, not two.
    judged = Judgment.objects.filter(project=project, labeler=labeler).exclude(
        supersedes__labeler=labeler
    )
    return {
        "judged": judged.count(),
        "pending": Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.PENDING
        ).count(),
    }


def recent_judgments(*, project: Project, limit: int = 20):
    return (
        Judgment.objects.filter(project=project)
        .select_related("labeler", "prompt", "judge", "source_import", "guidelines")
        .order_by("-created_at")[:limit]
    )


def project_members(*, project: Project):
    """The project's memberships with their users, admins first."""
    order = {Role.ADMIN: 0, Role.RESEARCHER: 1, Role.LABELER: 2}
    rows = list(Membership.objects.filter(project=project).select_related("user"))
    return sorted(rows, key=lambda m: (order.get(m.role, 3), m.user.username))


def workspace_by_slug(slug) -> Workspace | None:
    """The workspace called ``slug``, or None (for sharing with it)."""
    if not isinstance(slug, str) or not slug.strip():
        return None
    return Workspace.objects.filter(slug=slug.strip()).first()


def latest_guidelines(project: Project) -> Guidelines | None:
    """The guidelines version labelers work under now (None before any was written)."""
    return Guidelines.objects.filter(project=project).order_by("-version").first()


def guidelines_history(project: Project) -> list[dict]:
    """Every guidelines version, newest first, each with its unified diff (difflib) to the
    version before it as (kind, line) pairs: kind is "add", "remove", "hunk" or "same"."""
    versions = list(
        Guidelines.objects.filter(project=project).select_related("created_by").order_by("version")
    )
    history, previous = [], ""
    for guidelines in versions:
        history.append({"guidelines": guidelines, "diff": _diff(previous, guidelines.text)})
        previous = guidelines.text
    return history[::-1]


def _diff(before: str, after: str) -> list[tuple[str, str]]:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=2)
    kinds = {"+": "add", "-": "remove", "@": "hunk"}
    return [(kinds.get(line[:1], "same"), line) for line in list(lines)[2:]]
