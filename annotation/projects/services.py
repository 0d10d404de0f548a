"""Writes of projects and memberships: creating them and changing a project's settings."""

import math

from django.db import transaction

from annotation.models import (
    AiLabelPolicy,
    CandidatePolicy,
    Membership,
    Project,
    Task,
    Workspace,
)
from config.errors import ServiceError


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
