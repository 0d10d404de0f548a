"""Reads for the leaderboard: battles between model versions taken from judgments, and
their ratings (annotation/leaderboard/ratings_math.py), per project or over the projects a
user may see.

A battle is a current comparison or arena judgment between replies of two different model
versions with a choice (a, b, tie, both_bad). Current: not superseded by a correction and
not rejected by a reviewer, as for exports and quality figures. Human judges are labelers
and reviewers' corrections (sources "human" and "review"); AI judges are source "ai".
"""

import hashlib
import math

from django.core.cache import cache
from django.db.models import F, Max, Q, QuerySet

from annotation.leaderboard import ratings_math
from annotation.models import Judgment, Project, Review
from annotation.projects.permissions import CAPABILITIES, VIEW_DATA, workspaces_administered_by
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

SOURCES = {
    "human": (Judgment.Source.HUMAN, Judgment.Source.REVIEW),
    "ai": (Judgment.Source.AI,),
}
SOURCE_LABELS = {"human": "Human judges", "ai": "AI judges"}
BATTLE_KINDS = ("comparison", "arena")
ROUNDS = 200
LEVEL = 0.95
SEED = 0
CACHE_SECONDS = 600


def parse_source(raw) -> str:
    """The judge source a request asks for: "human" (the default) or "ai"."""
    if raw in (None, ""):
        return "human"
    if raw not in SOURCES:
        raise ServiceError(f"Unknown source {str(raw)[:40]!r}: use source=human or source=ai.")
    return raw


def projects_with_data_access(user):
    """Projects where the user may view data (researcher, admin, every project of a
    workspace they administer; all for a superuser)."""
    if user.is_superuser:
        return Project.objects.all()
    roles = [role for role, capabilities in CAPABILITIES.items() if VIEW_DATA in capabilities]
    mine = Project.objects.filter(memberships__user=user, memberships__role__in=roles)
    return Project.objects.filter(
        Q(pk__in=mine.values("pk")) | Q(workspace__in=workspaces_administered_by(user))
    )


def battle_judgments(*, projects, source: str):
    """Current judgments that are battles between two model versions, oldest first."""
    return (
        Judgment.objects.filter(
            project__in=projects,
            kind__in=BATTLE_KINDS,
            source__in=SOURCES[source],
            choice__in=ratings_math.OUTCOMES,
            superseded_by__isnull=True,
            response_a__model_version__isnull=False,
            response_b__model_version__isnull=False,
        )
        .exclude(response_a__model_version=F("response_b__model_version"))
        .exclude(reviews__decision=Review.Decision.REJECTED)
        # A critique-and-revision pair is presumed (revision better), not judged.
        .exclude(ai_details__has_key="presumed")
        .order_by("created_at", "id")
    )


def battle_counts(*, projects) -> dict[str, int]:
    """How many battles each judge source has in the projects."""
    return {
        source: battle_judgments(projects=projects, source=source).count() for source in SOURCES
    }


def battles_for(*, projects, source: str) -> tuple[ratings_math.Battles, list[int]]:
    """The battles in order, with models named by version name, and the version ids in
    the same order as `Battles.models`."""
    rows = list(
        battle_judgments(projects=projects, source=source).values_list(
            "response_a__model_version_id", "response_b__model_version_id", "choice"
        )
    )
    version_ids = sorted({version for a, b, _ in rows for version in (a, b)})
    names = dict(ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", "name"))
    position = {version: index for index, version in enumerate(version_ids)}
    battles = ratings_math.Battles.of(
        [names[version] for version in version_ids],
        [position[a] for a, _, _ in rows],
        [position[b] for _, b, _ in rows],
        [ratings_math.OUTCOMES[choice] for _, _, choice in rows],
    )
    return battles, version_ids


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def board_from_battles(
    battles: ratings_math.Battles,
    version_ids: list[int],
    *,
    source: str,
    rounds: int = ROUNDS,
    seed: int = SEED,
) -> dict:
    """Everything the page and the API show, as plain JSON-ready values: per model (best
    first) the Bradley-Terry rating with its bootstrap interval and rank, online Elo,
    battles and win rate; each model's online Elo over time; the win-rate matrix."""
    board = {
        "source": source,
        "battles": len(battles),
        "rounds": rounds,
        "level": LEVEL,
        "models": [],
        "elo_history": [],
        "win_rates": {"models": [], "rates": [], "counts": []},
    }
    if not len(battles):
        return board
    fit = ratings_math.bootstrap(battles, rounds=rounds, level=LEVEL, seed=seed)
    elo = ratings_math.online_elo(battles)
    played, win_rate = ratings_math.model_totals(battles)
    rates, counts = ratings_math.win_rate_matrix(battles)
    order = [int(model) for model in fit.order()]
    board["models"] = [
        {
            "rank": int(fit.rank[model]),
            "model": battles.models[model],
            "version_id": version_ids[model],
            "rating": _number(fit.rating[model]),
            "lower": _number(fit.lower[model]),
            "upper": _number(fit.upper[model]),
            "elo": _number(elo.ratings[model]),
            "battles": int(played[model]),
            "win_rate": _number(win_rate[model]),
        }
        for model in order
    ]
    board["elo_history"] = [
        {
            "model": battles.models[model],
            "points": [
                [int(number), _number(value)]
                for number, value in zip(*elo.history[model], strict=True)
            ],
        }
        for model in order
    ]
    board["win_rates"] = {
        "models": [battles.models[model] for model in order],
        "rates": [[_number(rates[row, column]) for column in order] for row in order],
        "counts": [[int(counts[row, column]) for column in order] for row in order],
    }
    return board


def _cache_key(projects, source: str, rounds: int) -> str:
    project_ids = sorted(projects.values_list("pk", flat=True))
    latest = Judgment.objects.filter(project__in=project_ids).aggregate(
        judgment=Max("id"), review=Max("reviews__id")
    )
    scope = hashlib.sha256(",".join(map(str, project_ids)).encode()).hexdigest()[:16]
    return (
        f"leaderboard:v1:{scope}:{source}:{rounds}:{latest['judgment'] or 0}:"
        f"{latest['review'] or 0}"
    )


def leaderboard(*, projects, source: str, rounds: int = ROUNDS) -> dict:
    """The board of the projects for one judge source, cached until a judgment or a
    review is added in them (or for CACHE_SECONDS, which bounds a renamed version)."""
    if not isinstance(projects, QuerySet):
        projects = Project.objects.filter(pk__in=[project.pk for project in projects])
    key = _cache_key(projects, source, rounds)
    board = cache.get(key)
    if board is None:
        battles, version_ids = battles_for(projects=projects, source=source)
        board = board_from_battles(battles, version_ids, source=source, rounds=rounds)
        cache.set(key, board, CACHE_SECONDS)
    return board


def project_leaderboard(*, project: Project, source: str) -> dict:
    return leaderboard(projects=Project.objects.filter(pk=project.pk), source=source)


# --- a version against the incumbent (its page, promotion, retirement) ------------------

HEAD_TO_HEAD_ROUNDS = 2000
HEAD_TO_HEAD_SEED = 0
HEAD_TO_HEAD_SOURCE = "human"


def head_to_head_evidence(
    version: ModelVersion, incumbent: ModelVersion | None, *, workspace
) -> dict:
    """How often ``version`` beat ``incumbent`` in battles judged by people, over the
    projects of ``workspace`` (another workspace's judgments are its own), with a 95%
    interval: ``{"incumbent", "incumbent_name", "win_rate", "low",
    "high", "battles", "source"}``, rates None without battles; ``{}`` without an
    incumbent. JSON-ready: it is stored with a promotion as the evidence the admin saw.

    A battle is what the leaderboard counts (``battle_judgments``): a current comparison
    or arena judgment between replies of the two versions; a tie or both-bad counts half.
    The interval is ``ratings_math.head_to_head``'s (seeded, so the page and the stored
    record agree)."""
    if incumbent is None:
        return {}
    evidence = {
        "incumbent": incumbent.pk,
        "incumbent_name": incumbent.name,
        "win_rate": None,
        "low": None,
        "high": None,
        "battles": 0,
        "source": HEAD_TO_HEAD_SOURCE,
    }
    if incumbent.pk == version.pk:
        return evidence
    pair = Q(response_a__model_version=version, response_b__model_version=incumbent) | Q(
        response_a__model_version=incumbent, response_b__model_version=version
    )
    rows = list(
        battle_judgments(
            projects=Project.objects.filter(workspace=workspace), source=HEAD_TO_HEAD_SOURCE
        )
        .filter(pair)
        .values_list("response_a__model_version_id", "choice")
    )
    if not rows:
        return evidence
    battles = ratings_math.Battles.of(
        [version.name, incumbent.name],
        [0 if first == version.pk else 1 for first, _ in rows],
        [1 if first == version.pk else 0 for first, _ in rows],
        [ratings_math.OUTCOMES[choice] for _, choice in rows],
    )
    win_rate, low, high, n = ratings_math.head_to_head(
        battles, 0, 1, rounds=HEAD_TO_HEAD_ROUNDS, seed=HEAD_TO_HEAD_SEED
    )
    evidence.update(
        win_rate=round(float(win_rate), 4),
        low=round(float(low), 4),
        high=round(float(high), 4),
        battles=int(n),
    )
    return evidence


def evidence_against_incumbent(version: ModelVersion, *, project: Project) -> dict:
    """The record a promotion or retirement of ``version`` in ``project`` keeps, and its
    page there shows: the head-to-head against the project's incumbent when ``version`` is
    a policy other than the incumbent; ``{}`` otherwise."""
    incumbent = registry_selectors.incumbent(project=project)
    if version.kind != ModelVersion.Kind.POLICY or incumbent is None or incumbent == version:
        return {}
    return head_to_head_evidence(version, incumbent, workspace=project.workspace)
