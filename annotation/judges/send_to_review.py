"""Sending AI labels to the human review queue.

An AI judgment is flagged with ``needs_review``; the review queue
(annotation/review/selectors.py) lists every flagged AI judgment that has no Review yet, and
the reviewer accepts, corrects or rejects it exactly as a human judgment
(annotation/review/services.py).

``needs_review`` is the one field of a judgment that changes after it is stored, and that
does not break "judgments are append-only": it says where a person should look, not what
the judge said. What the judgment records (who judged, under which constitution version
and principle, what it saw, its choice, soft label and per-order probabilities) never
changes; the outcome of a review is a new Review row (and, for a correction, a new
superseding judgment). The flag is only ever set, never cleared: a Review takes the
judgment out of the queue, and the flag stays as the record that it was sent.
"""

import math
import random

from django.db import transaction

from annotation.judges.selectors import judges_usable
from annotation.models import Judge, Judgment, Project
from config.errors import ServiceError

MODES = ("all", "sample", "unsure", "disagree")
MODE_LABELS = {
    "all": "All AI labels",
    "sample": "A random sample (rate)",
    "unsure": "Unsure: soft label within the threshold of 0.5",
    "disagree": "The two orders disagreed (position bias)",
}
DEFAULT_RATE = 0.1
DEFAULT_THRESHOLD = 0.1


def _number(raw, *, name: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ServiceError(f"{name} must be a number above {low:g} and at most {high:g}.")
    if not low < raw <= high:
        raise ServiceError(f"{name} must be a number above {low:g} and at most {high:g}.")
    return float(raw)


def _judge(judge, project: Project) -> Judge | None:
    """A judge the project's workspace may use (another workspace's reads as unknown)."""
    if judge is None:
        return judge
    if isinstance(judge, Judge):
        judge = judge.pk
    if isinstance(judge, bool) or not isinstance(judge, int):
        raise ServiceError("judge must be the id of a judge.")
    found = judges_usable(workspace=project.workspace).filter(pk=judge).first()
    if found is None:
        raise ServiceError(f"There is no judge {judge}.")
    return found


def reviewable_ai_judgments(*, project: Project, judge: Judge | None = None):
    """AI judgments a reviewer could still decide on: current (not superseded) and with no
    Review yet."""
    rows = Judgment.objects.filter(
        project=project, source=Judgment.Source.AI, superseded_by__isnull=True
    ).filter(reviews__isnull=True)
    if judge is not None:
        rows = rows.filter(judge=judge)
    return rows


def ai_review_queue_fill(
    *,
    project: Project,
    judge=None,
    mode: str,
    rate: float = DEFAULT_RATE,
    threshold: float = DEFAULT_THRESHOLD,
    seed=0,
) -> int:
    """Flag AI judgments of the project (of one judge, or all) for human review; returns
    how many were newly flagged (already flagged and already reviewed ones do not count
    and are not touched).

    - ``all``: every AI judgment not yet reviewed;
    - ``sample``: a seeded random ``rate`` share (at least one when any is left) of those
      not yet flagged, so a second fill adds another share;
    - ``unsure``: ``|soft_label - 0.5| < threshold``;
    - ``disagree``: the two display orders disagreed (``ai_details["agree"]`` is false).

    Bad input (unknown mode, rate outside (0, 1], threshold outside (0, 0.5], unknown
    judge) raises ServiceError and flags nothing.
    """
    if mode not in MODES:
        raise ServiceError(f"mode must be one of {', '.join(MODES)}.")
    rate = _number(rate, name="rate", low=0, high=1)
    threshold = _number(threshold, name="threshold", low=0, high=0.5)
    judge = _judge(judge, project)
    waiting = reviewable_ai_judgments(project=project, judge=judge).filter(needs_review=False)
    if mode == "unsure":
        waiting = waiting.filter(
            soft_label__isnull=False,
            soft_label__gt=0.5 - threshold,
            soft_label__lt=0.5 + threshold,
        )
    elif mode == "disagree":
        waiting = waiting.filter(ai_details__agree=False)
    return flag_for_review(waiting, share=rate if mode == "sample" else None, seed=seed)


def flag_for_review(waiting, *, share: float | None = None, seed: int = 0) -> int:
    """Flag the ``waiting`` judgments for review (with ``share``, a seeded random share of
    them, at least one when any is there); how many were newly flagged."""
    with transaction.atomic():
        ids = sorted(set(waiting.values_list("pk", flat=True)))
        if share is not None and ids:
            count = max(1, round(share * len(ids)))
            ids = sorted(random.Random(seed).sample(ids, count))
        # The filter on needs_review=False keeps the count honest when two fills overlap.
        return Judgment.objects.filter(pk__in=ids, needs_review=False).update(needs_review=True)


def ai_review_waiting(*, project: Project) -> int:
    """How many AI judgments were sent to review and are not decided yet."""
    return reviewable_ai_judgments(project=project).filter(needs_review=True).count()


def ai_review_summary(*, project: Project) -> dict:
    """What the fill form shows: the judges with AI judgments here, how many AI judgments
    there are, and how many wait in the review queue."""
    ai = Judgment.objects.filter(project=project, source=Judgment.Source.AI)
    return {
        "judges": list(
            Judge.objects.filter(judgments__project=project).distinct().order_by("name")
        ),
        "ai_total": ai.count(),
        "ai_waiting": ai_review_waiting(project=project),
        "modes": list(MODE_LABELS.items()),
        "default_rate": DEFAULT_RATE,
        "default_threshold": DEFAULT_THRESHOLD,
    }
