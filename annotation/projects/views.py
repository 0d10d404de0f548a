"""Pages of projects: the list of one's projects, a project's front page and its guidelines."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotation.projects import selectors
from annotation.projects.guidelines import MAX_GUIDELINES_CHARS, guidelines_publish
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    page_capabilities,
    project_for,
    projects_visible_to,
)
from config.errors import ServiceError


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


GUIDELINES_PAGE = "annotation/projects/guidelines.html"


@login_required
@require_http_methods(["GET", "POST"])
def guidelines(request, slug):
    """Everyone in the project reads the current guidelines here; admins also write the
    next version (with a preview) and see every version with its diff to the one before."""
    if request.method == "POST":
        return _guidelines_post(request, slug)
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    return _guidelines_render(request, project)


def _guidelines_post(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    text = request.POST.get("text", "")
    if request.POST.get("action") == "preview":
        template = f"{GUIDELINES_PAGE}#preview" if request.htmx else GUIDELINES_PAGE
        return _guidelines_render(request, project, draft=text, preview=True, template=template)
    try:
        published = guidelines_publish(project=project, text=text, author=request.user)
    except ServiceError as refused:
        return _guidelines_render(
            request, project, draft=text, error=refused.message, status=refused.status_code
        )
    messages.success(request, f"Published version {published.version} of the guidelines.")
    return redirect("guidelines", slug=project.slug)


def _guidelines_render(
    request, project, *, draft=None, preview=False, error="", status=200, template=GUIDELINES_PAGE
):
    capabilities = page_capabilities(user=request.user, project=project)
    current = selectors.latest_guidelines(project)
    context = {
        "project": project,
        "current": current,
        "draft": draft if draft is not None else (current.text if current else ""),
        "preview": preview,
        "error": error,
        "max_chars": MAX_GUIDELINES_CHARS,
        **capabilities,
    }
    if capabilities["can_manage"]:
        context["history"] = selectors.guidelines_history(project)
    return render(request, template, context, status=status)
