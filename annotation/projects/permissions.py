"""Who may do what in a project. Every view and API endpoint asks here, on the server."""

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.shortcuts import get_object_or_404
from rest_framework.permissions import BasePermission

from annotation.models import Membership, Project, Role, Workspace

LABEL = "label"
VIEW_DATA = "view_data"  # browse all judgments, export preference data
MANAGE = "manage"  # import prompts, generate candidates, train, promote

CAPABILITIES = {
    Role.LABELER: {LABEL},
    Role.RESEARCHER: {LABEL, VIEW_DATA},
    Role.ADMIN: {LABEL, VIEW_DATA, MANAGE},
}


def project_role(*, user, project: Project) -> str | None:
    """The user's role in the project: their membership's, or admin where they administer
    the project's workspace (an admin of any of its projects)."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    roles = Membership.objects.filter(user=user, project__workspace_id=project.workspace_id)
    roles = roles.filter(Q(project=project) | Q(role=Role.ADMIN)).values_list("role", flat=True)
    found = set(roles)
    if Role.ADMIN in found:
        return Role.ADMIN
    return found.pop() if found else None


def can(*, user, project: Project, capability: str) -> bool:
    role = project_role(user=user, project=project)
    return role is not None and capability in CAPABILITIES[role]


def project_for(*, user, slug: str, capability: str) -> Project:
    """The project, if the user holds the capability in it; PermissionDenied otherwise
    (404 when there is no such project). One query on the common path: the membership
    with its project."""
    if not user.is_authenticated:
        get_object_or_404(Project, slug=slug)
        raise PermissionDenied("Log in first.")
    if user.is_superuser:
        return get_object_or_404(Project, slug=slug)
    # The user's memberships in the project and the admin ones in its workspace.
    memberships = list(
        Membership.objects.select_related("project")
        .filter(user=user, project__workspace__projects__slug=slug)
        .filter(Q(project__slug=slug) | Q(role=Role.ADMIN))
    )
    own = next((m for m in memberships if m.project.slug == slug), None)
    if any(m.role == Role.ADMIN for m in memberships):
        return own.project if own else get_object_or_404(Project, slug=slug)
    if own is None:
        get_object_or_404(Project, slug=slug)
        raise PermissionDenied("You are not a member of this project.")
    if capability not in CAPABILITIES[own.role]:
        raise PermissionDenied(f"Your role in this project ({own.role}) does not allow this.")
    return own.project


def projects_visible_to(user):
    """The user's projects and every project of a workspace they administer."""
    if user.is_superuser:
        return Project.objects.all()
    mine = Membership.objects.filter(user=user)
    return Project.objects.filter(
        Q(pk__in=mine.values("project_id"))
        | Q(workspace_id__in=mine.filter(role=Role.ADMIN).values("project__workspace_id"))
    )


def page_capabilities(*, user, project: Project) -> dict:
    """The flags a page's template reads to show or hide what the user may do."""
    return {
        "can_manage": can(user=user, project=project, capability=MANAGE),
        "can_view_data": can(user=user, project=project, capability=VIEW_DATA),
    }


# --- workspaces ---------------------------------------------------------------------------
# A workspace has no members of its own: its members are those of its projects, and an admin
# of any of its projects administers what the workspace owns (its judges, constitutions and
# model versions, and with whom they are shared).


def workspaces_of(user):
    """The workspaces the user works in (every one, for a superuser)."""
    if not user.is_authenticated:
        return Workspace.objects.none()
    if user.is_superuser:
        return Workspace.objects.all()
    return Workspace.objects.filter(projects__memberships__user=user).distinct()


def workspaces_administered_by(user):
    """The workspaces in which the user is an admin of a project (every one, for a
    superuser): where they may create projects and administer every project."""
    if not user.is_authenticated:
        return Workspace.objects.none()
    if user.is_superuser:
        return Workspace.objects.all()
    return Workspace.objects.filter(
        projects__memberships__user=user, projects__memberships__role=Role.ADMIN
    ).distinct()


def may_create_project(user) -> bool:
    """Superusers and the admins of a workspace create projects (in their workspaces)."""
    return user.is_authenticated and workspaces_administered_by(user).exists()


def is_workspace_member(*, user, workspace: Workspace) -> bool:
    return workspaces_of(user).filter(pk=workspace.pk).exists()


class KeyScopedToItsWorkspace(BasePermission):
    """DRF: a request made with an API key reaches only the projects of the key's workspace
    (``/api/projects/<slug>/...``); a session, or a route without a project, is not
    limited here. The role checks (``project_for``) still follow."""

    message = "This API key is scoped to another workspace."

    def has_permission(self, request, view) -> bool:
        workspace_id = getattr(request.auth, "workspace_id", None)
        slug = view.kwargs.get("slug") if hasattr(view, "kwargs") else None
        if workspace_id is None or slug is None:
            return True
        return Project.objects.filter(slug=slug, workspace_id=workspace_id).exists()
