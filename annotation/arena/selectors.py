"""Reads of the arena: the contestants, the pair counts that balance the draw, and the
labeler's own battles (anyone else's is BattleNotFound, never told apart from a missing one).
"""

import uuid
from collections import Counter

from django.http import Http404

from annotation.labeling.inputs import whole_number_or_none
from annotation.models import ArenaBattle, Judgment, Project, Prompt
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

# A battle still waiting for its replies; the page polls while it is in one of these.
WAITING = (ArenaBattle.Status.QUEUED, ArenaBattle.Status.RUNNING)


class BattleNotFound(ServiceError):
    """Unknown battle, or one that belongs to someone else (the two are not told apart)."""

    status_code = 404


def arena_versions(*, project: Project):
    """The contestants in ``project``: policy versions not retired there, that is the
    project's serving ones and candidates. Candidates battle on purpose: a candidate must
    have met the serving versions in the arena before an admin can judge its promotion on
    its record."""
    return registry_selectors.servable_versions(
        project=project, kind=ModelVersion.Kind.POLICY
    ).order_by("id")


def arena_pair_counts(*, project: Project) -> Counter:
    """Battles so far in the project per unordered pair of versions, keyed (low id, high id);
    every battle counts whatever its status (a failed one is retried, not replaced)."""
    counts: Counter = Counter()
    rows = ArenaBattle.objects.filter(project=project).values_list("version_a_id", "version_b_id")
    for a, b in rows.iterator():
        counts[(min(a, b), max(a, b))] += 1
    return counts


def arena_battles_for(*, project: Project, labeler, limit: int = 20):
    """The labeler's battles in the project, newest first."""
    return (
        ArenaBattle.objects.filter(project=project, labeler=labeler)
        .select_related("prompt", "version_a", "version_b", "judgment")
        .order_by("-created_at", "-id")[:limit]
    )


def arena_battle_for(*, project: Project, labeler, battle_id) -> ArenaBattle:
    """The labeler's own battle in the project; BattleNotFound for anyone else's."""
    battle = (
        ArenaBattle.objects.select_related(
            "prompt", "version_a", "version_b", "response_a", "response_b", "judgment"
        )
        .filter(pk=whole_number_or_none(battle_id), project=project, labeler=labeler)
        .first()
    )
    if battle is None:
        raise BattleNotFound("No such battle.")
    return battle


def arena_battle_page_for(*, project: Project, labeler, battle_id) -> ArenaBattle:
    """As arena_battle_for, for pages: a 404 instead of an error message."""
    try:
        return arena_battle_for(project=project, labeler=labeler, battle_id=battle_id)
    except BattleNotFound:
        raise Http404("No such battle.") from None


def arena_judgment_exists(*, client_id: uuid.UUID) -> bool:
    return Judgment.objects.filter(client_id=client_id).exists()


def arena_pool_size(*, project: Project) -> int:
    return Prompt.objects.labeling().filter(project=project).count()
