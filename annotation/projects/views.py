"""Pages of projects: the list of one's projects, a project's front page and its guidelines."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotation.projects import selectors, services
from annotation.projects.forms import (
    MemberAddForm,
    MemberRemoveForm,
    MemberRoleForm,
    ProjectCriteriaForm,
    ProjectGuidelinesForm,
    ProjectNameForm,
)
from annotation.projects.guidelines import MAX_GUIDELINES_CHARS, guidelines_publish
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    may_create_project,
    page_capabilities,
    project_for,
    projects_visible_to,
    workspaces_administered_by,
)
from config.errors import ServiceError


@login_required
def home(request):
    projects = (
        projects_visible_to(request.user)
        .select_related("workspace")
        .order_by("workspace__name", "workspace__slug", "name")
    )
    context = {"projects": projects, "may_create_project": may_create_project(request.user)}
    return render(request, "annotation/projects/home.html", context)


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


# --- the new-project wizard -------------------------------------------------------------
# Stateless: each step posts the earlier steps' answers again as hidden fields, so nothing
# is kept between requests and only the last step stores anything.

STEP_TITLES = ("Name and workspace", "Kinds and criteria", "Guidelines")


def _wizard_forms(request) -> list:
    data = request.POST if request.method == "POST" else None
    workspaces = workspaces_administered_by(request.user).order_by("name")
    return [
        ProjectNameForm(
            data, workspaces=workspaces, may_create_workspace=request.user.is_superuser
        ),
        ProjectCriteriaForm(data),
        ProjectGuidelinesForm(data),
    ]


def _posted_step(request) -> int:
    try:
        return min(max(int(request.POST.get("step", 1)), 1), len(STEP_TITLES))
    except ValueError:
        return 1


def _wizard_page(request, forms, step, *, error="", status=200):
    context = {
        "forms": forms,
        "form": forms[step - 1],
        "step": step,
        "steps": STEP_TITLES,
        "error": error,
    }
    return render(request, "annotation/projects/project_create.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request):
    """Create a project in three steps: name and workspace, criteria, guidelines."""
    if not may_create_project(request.user):
        raise PermissionDenied("Only an admin of a workspace may create a project.")
    forms = _wizard_forms(request)
    if request.method == "GET":
        return _wizard_page(request, forms, 1)
    step = _posted_step(request)
    if request.POST.get("back"):
        return _wizard_page(request, forms, max(step - 1, 1))
    for number, form in enumerate(forms[:step], start=1):
        if not form.is_valid():
            return _wizard_page(request, forms, number, status=400)
    if step < len(STEP_TITLES):
        return _wizard_page(request, forms, step + 1)
    first = forms[0].cleaned_data
    try:
        project = services.project_create(
            user=request.user,
            name=first["name"],
            slug=first["slug"],
            workspace_slug=first["workspace"],
            new_workspace=first.get("new_workspace", ""),
            criteria=forms[1].criteria(),
            task_kinds=forms[1].cleaned_data["task_kinds"],
            guidelines=forms[2].cleaned_data["guidelines"],
        )
    except ServiceError as refused:
        return _wizard_page(request, forms, step, error=refused.message, status=refused.status_code)
    messages.success(request, f"Project {project.name} created. Invite its members.")
    return redirect("members", slug=project.slug)


# --- members ------------------------------------------------------------------------------


def _member_action(request, project) -> str:
    """Carry out the posted add, role or remove; what was done, for the message."""
    action = request.POST.get("action")
    if action == "add":
        form = MemberAddForm(request.POST)
        if not form.is_valid():
            raise ServiceError("Give the username or e-mail of an existing user and a role.")
        membership = services.member_add(
            project=project, identifier=form.cleaned_data["user"], role=form.cleaned_data["role"]
        )
        return f"{membership.user.username} added as {membership.role}."
    if action in ("role", "remove"):
        form = MemberRoleForm(request.POST) if action == "role" else MemberRemoveForm(request.POST)
        if not form.is_valid():
            raise ServiceError("Choose a member (and, to change it, a role).")
        user_id = form.cleaned_data["member"]
        if action == "remove":
            services.member_remove(project=project, user_id=user_id)
            return "Member removed."
        membership = services.member_set_role(
            project=project, user_id=user_id, role=form.cleaned_data["role"]
        )
        return f"{membership.user.username} is now {membership.role}."
    raise ServiceError("Choose what to do: add a member, change a role or remove a member.")


@login_required
@require_http_methods(["GET", "POST"])
def members(request, slug):
    """Admin: the project's members and their roles; invite, change a role, remove."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    add_form, error, status = MemberAddForm(), "", 200
    if request.method == "POST":
        try:
            messages.success(request, _member_action(request, project))
            return redirect("members", slug=project.slug)
        except ServiceError as refused:
            error, status = refused.message, refused.status_code
            if request.POST.get("action") == "add":
                add_form = MemberAddForm(request.POST)
    context = {
        "project": project,
        "members": selectors.project_members(project=project),
        "add_form": add_form,
        "roles": MemberRoleForm.base_fields["role"].choices,
        "error": error,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/projects/members.html", context, status=status)
