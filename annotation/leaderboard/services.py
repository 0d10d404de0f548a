"""Promotion and retirement with their record: the version's head-to-head against the
incumbent (selectors.py) is read here and handed to the registry's services, which store
it with the state change. The registry reads nothing of annotation, so the battles are
counted on this side."""

from annotation.leaderboard.selectors import evidence_against_incumbent
from annotation.models import Project
from models_registry import services as registry_services
from models_registry.models import ModelVersion, StateChange


def promote_with_evidence(
    *, version: ModelVersion, project: Project, user=None, note: str = ""
) -> StateChange:
    """Promote ``version`` to serving in ``project`` (the project's new incumbent),
    recording its head-to-head against the incumbent it replaces there."""
    return registry_services.model_version_promote(
        version=version,
        project=project,
        evidence=evidence_against_incumbent(version, project=project),
        user=user,
        note=note,
    )


def retire_with_evidence(
    *, version: ModelVersion, project: Project, user=None, note: str = ""
) -> StateChange:
    """Retire ``version`` in ``project``, recording its head-to-head against the
    project's incumbent (a policy other than the incumbent; nothing otherwise)."""
    return registry_services.model_version_retire(
        version=version,
        project=project,
        evidence=evidence_against_incumbent(version, project=project),
        user=user,
        note=note,
    )
