"""Who may do what in a project. Every view and API endpoint asks here, on the server."""

from django.core.exceptions import PermissionDenied
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
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(project=project, user=user).only("role").first()
    return membership.role if membership else None


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
    membership = (
        Membership.objects.select_related("project").filter(project__slug=slug, user=user).first()
    )
    if membership is None:
        get_object_or_404(Project, slug=slug)
        raise PermissionDenied("You are not a member of this project.")
    if capability not in CAPABILITIES[membership.role]:
        raise PermissionDenied(
            f"Your role in this project ({membership.role}) does not allow this."
        )
    return membership.project


def projects_visible_to(user):
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


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
