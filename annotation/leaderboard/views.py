"""Leaderboard pages: thin callers of annotation/leaderboard/selectors.py and plots.py."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.leaderboard import plots, selectors
from annotation.models import Project
from annotation.projects.permissions import MANAGE, VIEW_DATA, can, project_for
from config.errors import ServiceError


def _page(request, *, project, projects, scope_label: str):
    context = {
        "project": project,
        "scope_label": scope_label,
        "rounds": selectors.ROUNDS,
        "level_percent": round(selectors.LEVEL * 100),
    }
    if project is not None:
        context["can_manage"] = can(user=request.user, project=project, capability=MANAGE)
        context["can_view_data"] = True
    try:
        source = selectors.parse_source(request.GET.get("source"))
    except ServiceError as error:
        context["error"] = error.message
        return render(request, "annotation/leaderboard/leaderboard.html", context, status=400)
    board = selectors.leaderboard(projects=projects, source=source)
    counts = selectors.battle_counts(projects=projects)
    context.update(
        source=source,
        source_label=selectors.SOURCE_LABELS[source],
        board=board,
        tabs=[
            {"key": key, "label": label, "count": counts[key]}
            for key, label in selectors.SOURCE_LABELS.items()
        ],
        ratings_plot=plots.ratings_plot(board),
        elo_plot=plots.elo_plot(board),
        win_rate_rows=plots.win_rate_rows(board),
    )
    template = "annotation/leaderboard/leaderboard.html"
    return render(request, f"{template}#board" if request.htmx else template, context)


@login_required
@require_GET
def project_leaderboard_page(request, slug):
    """One project's models, rated from its battles; researchers and admins."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    projects = Project.objects.filter(pk=project.pk)
    return _page(request, project=project, projects=projects, scope_label=project.name)


@login_required
@require_GET
def leaderboard_page(request):
    """The models rated from the battles of every project where the user may view data."""
    projects = selectors.projects_with_data_access(request.user)
    count = projects.count()
    if not count:
        raise PermissionDenied(
            "The leaderboard shows the projects where you are a researcher or an admin; "
            "you are neither in any project."
        )
    label = (
        "all projects"
        if request.user.is_superuser
        else f"your {count} project" + ("s" if count != 1 else "")
    )
    return _page(request, project=None, projects=projects, scope_label=label)
