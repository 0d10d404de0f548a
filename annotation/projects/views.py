"""Pages of projects: the list of one's projects and a project's front page."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotation.projects import selectors
from annotation.projects.permissions import (
    LABEL,
    page_capabilities,
    project_for,
    projects_visible_to,
)


@login_required
def home(request):
    projects = (
        projects_visible_to(request.user)
        .select_related("workspace")
        .order_by("workspace__name", "workspace__slug", "name")
    )
    return render(request, "annotation/projects/home.html", {"projects": projects})


@login_required
def project_detail(request, slug):
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    context = {
        "project": project,
        "progress": selectors.labeler_progress(project=project, labeler=request.user),
        **page_capabilities(user=request.user, project=project),
    }
    if context["can_view_data"]:
        context["overview"] = selectors.project_overview(project=project)
        context["recent"] = selectors.recent_judgments(project=project)
    return render(request, "annotation/projects/project.html", context)
