"""Writes of projects and memberships: creating them and changing a project's settings."""

import math

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from annotation.models import (
    AiLabelPolicy,
    CandidatePolicy,
    Guidelines,
    Membership,
    Project,
    Role,
    Task,
    TaskKind,
    Workspace,
    _free_workspace_slug,
    all_task_kinds,
    default_criteria,
)
from annotation.projects.permissions import workspaces_administered_by
from config.errors import Conflict, NotFound, ServiceError


def ensure_project(
    *, slug: str, name: str, description: str = "", overlap_target: int = 1, workspace=None
):
    """The project called ``slug``, created in ``workspace`` (a new workspace of its own
    when None) if missing."""
    defaults = {"name": name, "description": description, "overlap_target": overlap_target}
    if workspace is not None:
        defaults["workspace"] = workspace
    project, _ = Project.objects.get_or_create(slug=slug, defaults=defaults)
    return project


def ensure_workspace(*, slug: str, name: str) -> Workspace:
    workspace, _ = Workspace.objects.get_or_create(slug=slug, defaults={"name": name})
    return workspace


def ensure_membership(*, project: Project, user, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


# --- project settings -------------------------------------------------------------------

SETTINGS_FIELDS = (
    "candidate_policy",
    "overlap_target",
    "pending_limit",
    "gold_rate",
    "skip_flag_threshold",
    "criteria",
    "task_kinds",
    "ai_labels",
    "ai_min_kappa",
    "ai_min_compared",
)
MAX_AI_MIN_COMPARED = 100_000
MAX_CRITERIA = 8


def _checked_criteria(criteria) -> list[str]:
    if not isinstance(criteria, list) or not 1 <= len(criteria) <= MAX_CRITERIA:
        raise ServiceError(f"Give 1 to {MAX_CRITERIA} criteria.")
    names = [str(name).strip().lower() for name in criteria]
    if any(not name.replace("_", "").isalnum() or len(name) > 30 for name in names):
        raise ServiceError("Criteria are short words: letters, digits and underscores.")
    if len(set(names)) != len(names):
        raise ServiceError("Criteria must differ from each other.")
    return names


def _checked_task_kinds(kinds) -> list[str]:
    if not isinstance(kinds, list) or not kinds:
        raise ServiceError("Choose at least one kind of task.")
    unknown = [kind for kind in kinds if kind not in TaskKind.values]
    if unknown:
        raise ServiceError(
            f"Unknown kind of task {unknown[0]!r}: one of {', '.join(TaskKind.values)}."
        )
    return [kind for kind in TaskKind.values if kind in kinds]


def _check_ai_label_settings(fields: dict) -> None:
    if "ai_labels" in fields and fields["ai_labels"] not in AiLabelPolicy.values:
        raise ServiceError(f"ai_labels must be one of {', '.join(AiLabelPolicy.values)}.")
    if "ai_min_kappa" in fields:
        kappa = fields["ai_min_kappa"]
        if (
            isinstance(kappa, bool)
            or not isinstance(kappa, int | float)
            or not math.isfinite(kappa)
            or not -1 <= kappa <= 1
        ):
            raise ServiceError("ai_min_kappa must be a number between -1 and 1.")
    if "ai_min_compared" in fields:
        needed = fields["ai_min_compared"]
        if isinstance(needed, bool) or not isinstance(needed, int):
            raise ServiceError(
                f"ai_min_compared must be a whole number from 1 to {MAX_AI_MIN_COMPARED}."
            )
        if not 1 <= needed <= MAX_AI_MIN_COMPARED:
            raise ServiceError(
                f"ai_min_compared must be a whole number from 1 to {MAX_AI_MIN_COMPARED}."
            )


@transaction.atomic
def project_settings_update(*, project: Project, **fields) -> Project:
    """Change how the project's queue works. A new overlap target applies to new tasks and
    to existing ones that are not already assigned beyond it."""
    unknown = set(fields) - set(SETTINGS_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    if "criteria" in fields:
        fields["criteria"] = _checked_criteria(fields["criteria"])
    if "task_kinds" in fields:
        fields["task_kinds"] = _checked_task_kinds(fields["task_kinds"])
    if "gold_rate" in fields and not 0 <= float(fields["gold_rate"]) <= 1:
        raise ServiceError("gold_rate must be between 0 and 1.")
    if "candidate_policy" in fields and fields["candidate_policy"] not in CandidatePolicy.values:
        raise ServiceError(f"candidate_policy must be one of {', '.join(CandidatePolicy.values)}.")
    for name in ("overlap_target", "pending_limit", "skip_flag_threshold"):
        if name in fields and not 1 <= int(fields[name]) <= 100:
            raise ServiceError(f"{name} must be between 1 and 100.")
    _check_ai_label_settings(fields)
    for name, value in fields.items():
        setattr(project, name, value)
    project.save(update_fields=list(fields))
    if "overlap_target" in fields:
        Task.objects.filter(
            project=project, is_gold=False, assigned_count__lte=project.overlap_target
        ).update(overlap_target=project.overlap_target)
    return project


# --- creating a project -----------------------------------------------------------------

MAX_NAME_CHARS = 200
MAX_GUIDELINES_CHARS = 50_000


def _checked_name(name) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or "\x00" in name or len(name) > MAX_NAME_CHARS:
        raise ServiceError(f"Give the project a name of 1 to {MAX_NAME_CHARS} characters.")
    return name


def _checked_slug(slug, *, name: str) -> str:
    slug = (slug.strip() if isinstance(slug, str) else "") or slugify(name)[:50]
    try:
        validate_slug(slug)
    except ValidationError as invalid:
        raise ServiceError(
            "The slug is letters, digits, hyphens and underscores (it is in the project's "
            "addresses)."
        ) from invalid
    if len(slug) > 50:
        raise ServiceError("The slug is at most 50 characters.")
    if Project.objects.filter(slug=slug).exists():
        raise Conflict(f"A project with the slug {slug!r} exists already; choose another.")
    return slug


def _checked_guidelines(text) -> str:
    if text is None:
        return ""
    if not isinstance(text, str) or "\x00" in text:
        raise ServiceError("The guidelines must be text without NUL characters.")
    text = text.replace("\r\n", "\n").strip()
    if len(text) > MAX_GUIDELINES_CHARS:
        raise ServiceError(f"The guidelines are at most {MAX_GUIDELINES_CHARS} characters.")
    return text


def _workspace_for_new_project(*, user, workspace_slug, new_workspace: str) -> Workspace:
    """The administered workspace named by ``workspace_slug``, or a new one called
    ``new_workspace`` (superusers only)."""
    new_workspace = new_workspace.strip() if isinstance(new_workspace, str) else ""
    if new_workspace:
        if not user.is_superuser:
            raise PermissionDenied("Only a superuser may create a workspace.")
        if len(new_workspace) > MAX_NAME_CHARS or "\x00" in new_workspace:
            raise ServiceError(f"A workspace's name is 1 to {MAX_NAME_CHARS} characters.")
        base = slugify(new_workspace)[:40] or "workspace"
        return Workspace.objects.create(slug=_free_workspace_slug(base), name=new_workspace)
    if not isinstance(workspace_slug, str) or not workspace_slug.strip():
        raise ServiceError("Choose the workspace the project belongs to.")
    workspace = workspaces_administered_by(user).filter(slug=workspace_slug.strip()).first()
    if workspace is None:
        raise PermissionDenied(
            "You may create projects only in a workspace where you are an admin."
        )
    return workspace


@transaction.atomic
def project_create(
    *,
    user,
    name,
    slug="",
    workspace_slug=None,
    new_workspace="",
    criteria=None,
    task_kinds=None,
    guidelines="",
) -> Project:
    """A new project in a workspace the user administers (or, for a superuser, a new
    workspace), with the user as its admin and, when given, guidelines version 1. Bad
    input is refused before anything is stored."""
    name = _checked_name(name)
    slug = _checked_slug(slug, name=name)
    criteria = _checked_criteria(default_criteria() if criteria is None else criteria)
    task_kinds = _checked_task_kinds(all_task_kinds() if task_kinds is None else task_kinds)
    guidelines = _checked_guidelines(guidelines)
    workspace = _workspace_for_new_project(
        user=user, workspace_slug=workspace_slug, new_workspace=new_workspace
    )
    try:
        with transaction.atomic():
            project = Project.objects.create(
                workspace=workspace,
                slug=slug,
                name=name,
                criteria=criteria,
                task_kinds=task_kinds,
            )
            Membership.objects.create(project=project, user=user, role=Role.ADMIN)
            if guidelines:
                Guidelines.objects.create(
                    project=project, version=1, text=guidelines, created_by=user
                )
    except IntegrityError as race:
        raise Conflict(f"A project with the slug {slug!r} exists already.") from race
    return project


# --- members ----------------------------------------------------------------------------


def _checked_role(role) -> str:
    if role not in Role.values:
        raise ServiceError(f"The role is one of {', '.join(Role.values)}.")
    return role


def _user_named(identifier):
    """The user whose username is ``identifier``, or whose e-mail it is."""
    identifier = identifier.strip() if isinstance(identifier, str) else ""
    if not identifier:
        raise ServiceError("Give the username or e-mail of the person to add.")
    users = get_user_model().objects
    user = users.filter(username=identifier).first()
    if user is not None:
        return user
    by_email = list(users.filter(email__iexact=identifier)[:2]) if "@" in identifier else []
    if len(by_email) > 1:
        raise ServiceError(f"Several users have the e-mail {identifier}; give the username.")
    if not by_email:
        raise ServiceError(
            f"No user has the username or e-mail {identifier!r}; they need an account first."
        )
    return by_email[0]


@transaction.atomic
def member_add(*, project: Project, identifier, role) -> Membership:
    """Add an existing user (by username or e-mail) to the project with ``role``."""
    role = _checked_role(role)
    user = _user_named(identifier)
    existing = Membership.objects.filter(project=project, user=user).first()
    if existing is not None:
        raise Conflict(
            f"{user.username} is already a member ({existing.role}); change their role instead."
        )
    return Membership.objects.create(project=project, user=user, role=role)


def _locked_membership(*, project: Project, user_id) -> Membership:
    """The member's row, with every admin row of the project locked, so that two
    concurrent demotions cannot leave the project without an admin."""
    list(Membership.objects.select_for_update().filter(project=project, role=Role.ADMIN))
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(project=project, user_id=user_id)
        .first()
    )
    if membership is None:
        raise NotFound("This user is not a member of the project.")
    return membership


def _refuse_losing_the_last_admin(membership: Membership, *, what: str) -> None:
    if membership.role != Role.ADMIN:
        return
    admins = Membership.objects.filter(project=membership.project_id, role=Role.ADMIN)
    if admins.count() <= 1:
        raise Conflict(
            f"{membership.user.username} is the project's only admin: make another member "
            f"admin before you {what} them."
        )


@transaction.atomic
def member_set_role(*, project: Project, user_id: int, role) -> Membership:
    role = _checked_role(role)
    membership = _locked_membership(project=project, user_id=user_id)
    if role != Role.ADMIN:
        _refuse_losing_the_last_admin(membership, what="demote")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, project: Project, user_id: int) -> None:
    membership = _locked_membership(project=project, user_id=user_id)
    _refuse_losing_the_last_admin(membership, what="remove")
    membership.delete()
