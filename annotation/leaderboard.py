"""Reads for the leaderboard: battles between model versions taken from judgments, and
their ratings (annotation/ratings.py), per project or over the projects a user may see.

A battle is a current comparison or arena judgment between replies of two different model
versions with a choice (a, b, tie, both_bad). Current: not superseded by a correction and
not rejected by a reviewer, as for exports and quality figures. Human judges are labelers
and reviewers' corrections (sources "human" and "review"); AI judges are source "ai".
"""

import hashlib
import math

from django.core.cache import cache
from django.db.models import F, Max, QuerySet

from annotation import ratings
from annotation.errors import ServiceError
from annotation.models import Judgment, Project, Review
from annotation.permissions import CAPABILITIES, VIEW_DATA
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
    """Projects where the user may view data (researcher, admin; all for a superuser)."""
    if user.is_superuser:
        return Project.objects.all()
    roles = [role for role, capabilities in CAPABILITIES.items() if VIEW_DATA in capabilities]
    return Project.objects.filter(memberships__user=user, memberships__role__in=roles).distinct()


def battle_judgments(*, projects, source: str):
    """Current judgments that are battles between two model versions, oldest first."""
    return (
        Judgment.objects.filter(
            project__in=projects,
            kind__in=BATTLE_KINDS,
            source__in=SOURCES[source],
            choice__in=ratings.OUTCOMES,
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


def battles_for(*, projects, source: str) -> tuple[ratings.Battles, list[int]]:
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
    battles = ratings.Battles.of(
        [names[version] for version in version_ids],
        [position[a] for a, _, _ in rows],
        [position[b] for _, b, _ in rows],
        [ratings.OUTCOMES[choice] for _, _, choice in rows],
    )
    return battles, version_ids


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def board_from_battles(
    battles: ratings.Battles,
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
    fit = ratings.bootstrap(battles, rounds=rounds, level=LEVEL, seed=seed)
    elo = ratings.online_elo(battles)
    played, win_rate = ratings.model_totals(battles)
    rates, counts = ratings.win_rate_matrix(battles)
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


# --- plots (server-rendered SVG geometry) ------------------------------------------------

PALETTE = (
    "#2457d6", "#d97706", "#7c3aed", "#059669", "#dc2626",
    "#0891b2", "#be185d", "#65a30d", "#4b5563", "#b45309",
)  # fmt: skip
_NICE_STEPS = (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    step = next((s for s in _NICE_STEPS if (high - low) / s <= count), _NICE_STEPS[-1])
    first = math.ceil(low / step) * step
    return [first + step * index for index in range(int((high - first) // step) + 1)]


def _span(low: float, high: float, minimum: float) -> tuple[float, float]:
    if high - low < minimum:
        middle = (high + low) / 2
        low, high = middle - minimum / 2, middle + minimum / 2
    pad = (high - low) * 0.05
    return low - pad, high + pad


LABEL_CHAR_PX = 7  # about one character of the plot's 12px labels


def ratings_plot(board: dict, *, plot_width: int = 550, row: int = 22) -> dict:
    """Each model's rating as a dot on its interval bar, best at the top. The label column
    is as wide as the longest model name, so no name is cut."""
    models = board["models"]
    if not models:
        return {}
    left = max(170, 20 + LABEL_CHAR_PX * max(len(m["model"]) for m in models))
    width = left + plot_width
    low, high = _span(min(m["lower"] for m in models), max(m["upper"] for m in models), minimum=40)
    right = width - 70
    top, bottom = 10, 10 + row * len(models)

    def x(value):
        return round(left + (value - low) / (high - low) * (right - left), 1)

    return {
        "width": width,
        "height": bottom + 30,
        "left": left,
        "right": right,
        "bottom": bottom,
        "label_x": left - 10,
        "axis_y": bottom + 18,
        "rows": [
            {
                "model": m["model"],
                "y": top + row * index + row / 2,
                "x": x(m["rating"]),
                "x_lower": x(m["lower"]),
                "x_upper": x(m["upper"]),
                "rating": m["rating"],
                "lower": m["lower"],
                "upper": m["upper"],
            }
            for index, m in enumerate(models)
        ],
        "ticks": [{"x": x(value), "label": f"{value:g}"} for value in _ticks(low, high)],
    }


def elo_plot(board: dict, *, width: int = 720, height: int = 300) -> dict:
    """Online Elo after each battle (sampled), one line per model, over battle number."""
    history = [line for line in board["elo_history"] if line["points"]]
    if not history:
        return {}
    left, right, top, bottom = 60, width - 20, 10, height - 30
    values = [value for line in history for _, value in line["points"]]
    low, high = _span(min(values), max(values), minimum=20)
    last = max(board["battles"], 2)

    def x(number):
        return round(left + (number - 1) / (last - 1) * (right - left), 1)

    def y(value):
        return round(bottom - (value - low) / (high - low) * (bottom - top), 1)

    return {
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "y_label_x": left - 6,
        "axis_y": bottom + 18,
        "lines": [
            {
                "model": line["model"],
                "color": PALETTE[index % len(PALETTE)],
                "points": " ".join(f"{x(n)},{y(v)}" for n, v in line["points"]),
            }
            for index, line in enumerate(history)
        ],
        "y_ticks": [{"y": y(value), "label": f"{value:g}"} for value in _ticks(low, high, 5)],
        "x_ticks": [
            {"x": x(number), "label": f"{number:g}"} for number in _ticks(1, last, 6) if number >= 1
        ],
    }


def _cell_colour(rate: float | None) -> str:
    """White at 0.5, green towards 1, red towards 0."""
    if rate is None:
        return ""
    hue = 140 if rate >= 0.5 else 0
    lightness = round(100 - 50 * abs(rate - 0.5) * 2)
    return f"background-color: hsl({hue}, 65%, {lightness}%)"


def win_rate_rows(board: dict) -> list[dict]:
    """The win-rate matrix as table rows, each cell with its colour."""
    matrix = board["win_rates"]
    return [
        {
            "model": model,
            "cells": [
                {
                    "rate": rate,
                    "count": count,
                    "style": _cell_colour(rate),
                    "opponent": opponent,
                    "self": row == column,
                }
                for column, (opponent, rate, count) in enumerate(
                    zip(matrix["models"], matrix["rates"][row], matrix["counts"][row], strict=True)
                )
            ],
        }
        for row, model in enumerate(matrix["models"])
    ]
