"""Quality figures of a project, read only: gold accuracy, agreement, time per item, trends,
the review queue, flagged tasks and a labeler's own page.

Which judgments count: unless said otherwise, the *current human* judgments of a task:
source "human", not superseded by a correction, not rejected by a reviewer (the rows an
export holds). AI judgments, imported ones (a dataset's labels, source "import") and
reviewers' corrections are not anyone's labeling work.

Agreement is Krippendorff's alpha (comparisons, ratings per criterion) and mean pairwise
Kendall's tau (rankings), as annotation/review/agreement_math.py defines them.

Time per item is the median of `time_spent_ms` over judgments that recorded one (0 means a
client sent no timing). Trends give the same figures per ISO week, or per day when the
judgments span less than TREND_DAILY_UNDER_DAYS days; a period's agreement takes the
labeler's judgments made in that period against the others' whenever made, with the
project's D_e.
"""

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import combinations

from django.contrib.auth import get_user_model
from django.utils import timezone

from annotation.labeling.kinds import KINDS
from annotation.labeling.kinds.ranking import kendall_tau
from annotation.models import Assignment, Judgment, Project, Response, Review, Task, TaskKind
from annotation.review.agreement_math import (
    INTERVAL,
    NOMINAL,
    expected_disagreement,
    krippendorff_alpha,
    labeler_alpha,
    mean_pairwise_tau,
)
from annotation.review.imports import imported_response_ids

# A labeler is low-trust (all their judgments go to review) when their gold accuracy is
# below LOW_TRUST_ACCURACY after at least LOW_TRUST_MIN_GOLD gold judgments.
LOW_TRUST_ACCURACY = 0.7
LOW_TRUST_MIN_GOLD = 3
# Labelers disagree on a rating task when some criterion's scores are this far apart (one
# step on a 7-point scale is ordinary noise), and on a ranking task when two of their
# rankings have Kendall's tau below RANKING_MIN_TAU (more than a quarter of pairs flipped).
RATING_DISAGREEMENT_POINTS = 2
RANKING_MIN_TAU = 0.5
TREND_DAILY_UNDER_DAYS = 14
RECENT_LIMIT = 20


# --- figures of time and trend (plain Python, no database) ----------------------------


def median_seconds(milliseconds: Iterable[int]) -> float | None:
    """Median time in seconds over the judgments that recorded a time (> 0)."""
    timed = [ms for ms in milliseconds if ms and ms > 0]
    return statistics.median(timed) / 1000 if timed else None


def streak_days(days: Iterable[date], *, today: date) -> int:
    """Consecutive days with at least one judgment, counted back from today; a streak
    that reached yesterday still counts while today has none yet."""
    active = set(days)
    day = today if today in active else today - timedelta(days=1)
    streak = 0
    while day in active:
        streak += 1
        day -= timedelta(days=1)
    return streak


def period_of(day: date, *, daily: bool) -> tuple[str, date]:
    """(label, first day) of the day's period: the day itself, or its ISO week."""
    if daily:
        return day.isoformat(), day
    year, week, weekday = day.isocalendar()
    return f"{year}-W{week:02d}", day - timedelta(days=weekday - 1)


def sparkline_points(values: Sequence[float | None], *, width=120, height=24) -> str:
    """SVG polyline points for a small trend line; missing values are left out."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = [
        f"{index * step:.1f},{height - (value - low) / span * height:.1f}"
        for index, value in enumerate(values)
        if value is not None
    ]
    return " ".join(points)


# --- which judgments count -------------------------------------------------------------


def current_human_judgments(*, project: Project):
    """Human judgments of tasks, not superseded and not rejected by a reviewer."""
    return (
        Judgment.objects.filter(
            project=project,
            source=Judgment.Source.HUMAN,
            superseded_by__isnull=True,
            task__isnull=False,
        )
        .exclude(reviews__decision=Review.Decision.REJECTED)
        .order_by("created_at", "id")
    )


ROW_FIELDS = (
    "id", "kind", "task_id", "labeler_id", "choice", "ranking", "all_bad", "scores",
    "time_spent_ms", "created_at", "task__is_gold",
)  # fmt: skip


def _gold_results(rows: list[dict]) -> dict[int, bool]:
    """For each current judgment of a gold task: does it match the gold answer?"""
    gold_ids = [row["id"] for row in rows if row["task__is_gold"]]
    results = {}
    judgments = Judgment.objects.filter(pk__in=gold_ids).select_related("task")
    for judgment in judgments.iterator(chunk_size=500):
        spec = KINDS.get(judgment.kind)
        answer = judgment.task.gold_answer
        if spec is None or not isinstance(answer, dict):
            continue
        results[judgment.pk] = bool(spec.matches_gold(judgment, answer))
    return results


@dataclass
class Agreement:
    """Reliability data of a project: unit -> {labeler: value} per kind (and criterion)."""

    comparison: dict = field(default_factory=lambda: defaultdict(dict))
    rating: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    ranking: dict = field(default_factory=lambda: defaultdict(dict))
    # (kind, labeler) -> {unit: local day of the labeler's judgment}, for trend periods
    unit_day: dict = field(default_factory=lambda: defaultdict(dict))

    def add(self, row: dict) -> None:
        unit, coder, kind = row["task_id"], row["labeler_id"], row["kind"]
        if kind == TaskKind.COMPARISON and row["choice"]:
            self.comparison[unit][coder] = row["choice"]
        elif kind == TaskKind.RANKING and len(row["ranking"] or []) >= 2:
            self.ranking[unit][coder] = list(row["ranking"])
        elif kind == TaskKind.RATING:
            for criterion, score in (row["scores"] or {}).items():
                if isinstance(score, int | float) and not isinstance(score, bool):
                    self.rating[criterion][unit][coder] = score
        else:
            return
        self.unit_day[(kind, coder)][unit] = timezone.localtime(row["created_at"]).date()

    def expected(self) -> dict:
        return {
            TaskKind.COMPARISON: expected_disagreement(
                (u.values() for u in self.comparison.values()), level=NOMINAL
            ),
            **{
                (TaskKind.RATING, criterion): expected_disagreement(
                    (u.values() for u in units.values()), level=INTERVAL
                )
                for criterion, units in self.rating.items()
            },
        }

    def units_in(self, kind: str, coder, days: set[date] | None) -> set | None:
        if days is None:
            return None
        return {unit for unit, day in self.unit_day[(kind, coder)].items() if day in days}

    def for_labeler(self, coder, *, expected: dict, days: set[date] | None = None) -> dict:
        """{kind: figure} for one labeler; a kind they have no paired data for is left out."""
        figures = {}
        comparison = labeler_alpha(
            self.comparison,
            coder=coder,
            level=NOMINAL,
            only_units=self.units_in(TaskKind.COMPARISON, coder, days),
            expected=expected[TaskKind.COMPARISON],
        )
        if comparison is not None:
            figures["comparison"] = comparison
        rating_units = self.units_in(TaskKind.RATING, coder, days)
        per_criterion = [
            labeler_alpha(
                units,
                coder=coder,
                level=INTERVAL,
                only_units=rating_units,
                expected=expected[(TaskKind.RATING, criterion)],
            )
            for criterion, units in self.rating.items()
        ]
        per_criterion = [alpha for alpha in per_criterion if alpha is not None]
        if per_criterion:
            figures["rating"] = sum(per_criterion) / len(per_criterion)
        ranking = mean_pairwise_tau(
            self.ranking, coder=coder, only_units=self.units_in(TaskKind.RANKING, coder, days)
        )
        if ranking is not None:
            figures["ranking"] = ranking
        return figures


def _agreement(rows: list[dict]) -> Agreement:
    agreement = Agreement()
    for row in rows:
        agreement.add(row)
    return agreement


def _count_pairable(units: Mapping) -> int:
    return sum(1 for by_coder in units.values() if len(by_coder) >= 2)


def project_agreement(*, project: Project) -> list[dict]:
    """One line per kind (ratings: per criterion): the figure, its measure and how many
    units had two or more labelers."""
    rows = list(current_human_judgments(project=project).values(*ROW_FIELDS))
    return _project_agreement_lines(_agreement(rows))


def _project_agreement_lines(agreement: Agreement) -> list[dict]:
    lines = []
    if agreement.comparison:
        lines.append(
            {
                "kind": "comparison",
                "criterion": "",
                "measure": "Krippendorff's α (nominal)",
                "value": krippendorff_alpha(
                    (u.values() for u in agreement.comparison.values()), level=NOMINAL
                ),
                "units": _count_pairable(agreement.comparison),
            }
        )
    for criterion, units in sorted(agreement.rating.items()):
        lines.append(
            {
                "kind": "rating",
                "criterion": criterion,
                "measure": "Krippendorff's α (interval)",
                "value": krippendorff_alpha((u.values() for u in units.values()), level=INTERVAL),
                "units": _count_pairable(units),
            }
        )
    if agreement.ranking:
        lines.append(
            {
                "kind": "ranking",
                "criterion": "",
                "measure": "mean pairwise Kendall's τ",
                "value": mean_pairwise_tau(agreement.ranking),
                "units": _count_pairable(agreement.ranking),
            }
        )
    return lines


# --- gold accuracy ---------------------------------------------------------------------


def gold_accuracy(*, project: Project, labeler) -> tuple[int, int]:
    """(correct, judged) over the labeler's current gold judgments in the project."""
    rows = list(
        current_human_judgments(project=project)
        .filter(labeler=labeler, task__is_gold=True)
        .values(*ROW_FIELDS)
    )
    results = _gold_results(rows)
    return sum(results.values()), len(results)


def _share(correct: int, judged: int) -> float | None:
    return correct / judged if judged else None


def _percent(correct: int, judged: int) -> int | None:
    return round(100 * correct / judged) if judged else None


def is_low_trust(correct: int, judged: int) -> bool:
    return judged >= LOW_TRUST_MIN_GOLD and correct / judged < LOW_TRUST_ACCURACY


def low_trust_labeler_ids(*, project: Project, rows: list[dict] | None = None) -> set[int]:
    if rows is None:
        rows = list(
            current_human_judgments(project=project).filter(task__is_gold=True).values(*ROW_FIELDS)
        )
    results = _gold_results(rows)
    tally = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["id"] in results:
            tally[row["labeler_id"]][0] += results[row["id"]]
            tally[row["labeler_id"]][1] += 1
    return {labeler for labeler, (right, judged) in tally.items() if is_low_trust(right, judged)}


# --- the per-labeler table with trends -------------------------------------------------


def _figures(rows: list[dict], gold: dict[int, bool]) -> dict:
    gold_rows = [row for row in rows if row["id"] in gold]
    correct = sum(gold[row["id"]] for row in gold_rows)
    return {
        "judgments": len(rows),
        "gold_correct": correct,
        "gold_judged": len(gold_rows),
        "gold_accuracy": _share(correct, len(gold_rows)),
        "gold_percent": _percent(correct, len(gold_rows)),
        "median_seconds": median_seconds(row["time_spent_ms"] for row in rows),
    }


def _periods(rows: list[dict]) -> tuple[bool, list[tuple[str, date]]]:
    days = sorted({timezone.localtime(row["created_at"]).date() for row in rows})
    if not days:
        return True, []
    daily = (days[-1] - days[0]).days < TREND_DAILY_UNDER_DAYS
    return daily, sorted({period_of(day, daily=daily) for day in days}, key=lambda p: p[1])


def labeler_quality(*, project: Project) -> dict:
    """The quality page's figures: a row per labeler (judgments, gold accuracy, agreement
    per kind, median seconds, skips, review outcomes, and the same per period), the
    project's agreement per kind, and whether periods are days or ISO weeks."""
    rows = list(current_human_judgments(project=project).values(*ROW_FIELDS))
    gold = _gold_results(rows)
    agreement = _agreement(rows)
    expected = agreement.expected()
    daily, periods = _periods(rows)
    by_labeler = defaultdict(list)
    for row in rows:
        by_labeler[row["labeler_id"]].append(row)
    skips = Counter(
        Assignment.objects.filter(
            task__project=project, status=Assignment.Status.SKIPPED
        ).values_list("labeler_id", flat=True)
    )
    reviewed = Counter(
        Review.objects.filter(
            judgment__project=project, judgment__source=Judgment.Source.HUMAN
        ).values_list("judgment__labeler_id", "decision")
    )
    users = get_user_model().objects.in_bulk(set(by_labeler) | set(skips))
    table = []
    for labeler_id, user in sorted(users.items(), key=lambda item: item[1].username):
        mine = by_labeler.get(labeler_id, [])
        trend = []
        for label, start in periods:
            days = {start} if daily else {start + timedelta(days=i) for i in range(7)}
            in_period = [
                row for row in mine if timezone.localtime(row["created_at"]).date() in days
            ]
            trend.append(
                {
                    "period": label,
                    **_figures(in_period, gold),
                    "agreement": agreement.for_labeler(labeler_id, expected=expected, days=days),
                }
            )
        figures = _figures(mine, gold)
        table.append(
            {
                "labeler": user,
                **figures,
                "by_kind": dict(Counter(row["kind"] for row in mine)),
                "agreement": agreement.for_labeler(labeler_id, expected=expected),
                "skips": skips.get(labeler_id, 0),
                "corrected": reviewed.get((labeler_id, Review.Decision.CORRECTED), 0),
                "rejected": reviewed.get((labeler_id, Review.Decision.REJECTED), 0),
                "low_trust": is_low_trust(figures["gold_correct"], figures["gold_judged"]),
                "trend": trend,
                "sparkline": sparkline_points([p["judgments"] for p in trend]),
            }
        )
    return {
        "labelers": table,
        "project_agreement": _project_agreement_lines(agreement),
        "daily": daily,
        "periods": [label for label, _ in periods],
    }


# --- flagged and gold tasks ------------------------------------------------------------


def flagged_tasks(*, project: Project) -> list[Task]:
    """Tasks skipped by many, each with `skips`: (labeler, reason) of every skip."""
    tasks = list(
        Task.objects.filter(project=project, flagged=True)
        .select_related("prompt")
        .order_by("-skip_count", "id")
    )
    skips = defaultdict(list)
    skipped = Assignment.objects.filter(
        task__in=tasks, status=Assignment.Status.SKIPPED
    ).select_related("labeler")
    for assignment in skipped.order_by("assigned_at", "id"):
        skips[assignment.task_id].append((assignment.labeler, assignment.skip_reason))
    for task in tasks:
        task.skips = skips[task.pk]
    return tasks


def gold_tasks(*, project: Project, limit: int = 100) -> list[Task]:
    """The newest gold tasks, each with `answer_json`: its gold answer as JSON text."""
    tasks = list(
        Task.objects.filter(project=project, is_gold=True)
        .select_related("prompt")
        .order_by("-id")[:limit]
    )
    for task in tasks:
        task.answer_json = json.dumps(task.gold_answer, ensure_ascii=False)
    return tasks


def gold_task_for(*, project: Project, task_id) -> tuple[Task, list[Response]] | None:
    """The project's task of that id with its responses in task order, or None."""
    task = (
        Task.objects.filter(project=project, pk=task_id).select_related("prompt", "project").first()
        if isinstance(task_id, int)
        else None
    )
    if task is None:
        return None
    links = task.links.select_related("response").order_by("position")
    return task, [link.response for link in links]


# --- review queue ----------------------------------------------------------------------


def _ratings_disagree(values: list[dict]) -> bool:
    criteria = {criterion for scores in values for criterion in scores}
    for criterion in criteria:
        scores = [s[criterion] for s in values if isinstance(s.get(criterion), int | float)]
        if scores and max(scores) - min(scores) >= RATING_DISAGREEMENT_POINTS:
            return True
    return False


def _rankings_disagree(rows: list[dict]) -> bool:
    if len({row["all_bad"] for row in rows}) > 1:
        return True
    for first, second in combinations([row["ranking"] or [] for row in rows], 2):
        tau = kendall_tau(first, second)
        if tau is not None and tau < RANKING_MIN_TAU:
            return True
    return False


def labelers_disagree(kind: str, rows: list[dict]) -> bool:
    """Whether the current human judgments of one task disagree. Free text
    (demonstrations) is never compared."""
    if len(rows) < 2:
        return False
    if kind == TaskKind.COMPARISON:
        return len({row["choice"] for row in rows}) > 1
    if kind == TaskKind.RANKING:
        return _rankings_disagree(rows)
    if kind == TaskKind.RATING:
        return _ratings_disagree([row["scores"] or {} for row in rows])
    return False


@dataclass(frozen=True)
class QueueEntry:
    judgment_id: int
    task_id: int | None
    reasons: tuple[str, ...]


def _ai_queue(*, project: Project, reviewed: set[int]) -> list[QueueEntry]:
    """AI judgments sent to review (annotation/judges/send_to_review.py) that no one has decided on,
    by task then id; an AI judgment of no task (a revision pair) comes last."""
    rows = Judgment.objects.filter(
        project=project,
        source=Judgment.Source.AI,
        needs_review=True,
        superseded_by__isnull=True,
    ).values_list("id", "task_id", "ai_details")
    entries = []
    for judgment_id, task_id, details in rows:
        if judgment_id in reviewed:
            continue
        reasons = ["AI label sent for review"]
        if isinstance(details, dict) and details.get("agree") is False:
            reasons.append("the two orders disagreed")
        entries.append(QueueEntry(judgment_id, task_id, tuple(reasons)))
    return sorted(entries, key=lambda e: (e.task_id is None, e.task_id or 0, e.judgment_id))


def _import_queue(*, project: Project, reviewed: set[int]) -> list[QueueEntry]:
    """Imported judgments sent to review (annotation/review/imports.py) that no one has
    decided on, oldest import first, then by id."""
    rows = (
        Judgment.objects.filter(
            project=project,
            source=Judgment.Source.IMPORT,
            needs_review=True,
            superseded_by__isnull=True,
        )
        .order_by("source_import_id", "id")
        .values_list("id", "source_import_id")
    )
    return [
        QueueEntry(judgment_id, None, (f"imported label sent for review (import {batch})",))
        for judgment_id, batch in rows
        if judgment_id not in reviewed
    ]


def review_queue(*, project: Project, reviewer) -> list[QueueEntry]:
    """Judgments waiting for review, grouped by task: every unreviewed current human
    judgment of a task whose labelers disagree, and every unreviewed one by a low-trust
    labeler; then the AI judgments sent to review, then the imported ones. Gold tasks are
    scored automatically and never queued for disagreement; nor are the reviewer's own
    judgments."""
    rows = list(
        current_human_judgments(project=project).filter(task__is_gold=False).values(*ROW_FIELDS)
    )
    gold_rows = list(
        current_human_judgments(project=project).filter(task__is_gold=True).values(*ROW_FIELDS)
    )
    low_trust = low_trust_labeler_ids(project=project, rows=gold_rows)
    reviewed = set(
        Review.objects.filter(judgment__project=project).values_list("judgment_id", flat=True)
    )
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task_id"]].append(row)
    entries = []
    for task_id in sorted(by_task):
        task_rows = by_task[task_id]
        disagree = labelers_disagree(task_rows[0]["kind"], task_rows)
        for row in task_rows:
            if row["id"] in reviewed or row["labeler_id"] == reviewer.pk:
                continue
            reasons = []
            if disagree:
                reasons.append("labelers disagree")
            if row["labeler_id"] in low_trust:
                reasons.append("low-trust labeler")
            if reasons:
                entries.append(QueueEntry(row["id"], task_id, tuple(reasons)))
    return (
        entries
        + _ai_queue(project=project, reviewed=reviewed)
        + _import_queue(project=project, reviewed=reviewed)
    )


def review_item(*, project: Project, reviewer, judgment_id: int | None = None) -> dict | None:
    """The next item to review (or the queued one asked for): the judgment, why it is
    queued, its task with the responses in task order, and every current judgment of
    the task. None when the queue is empty (or the asked one is not in it)."""
    queue = review_queue(project=project, reviewer=reviewer)
    entry = next((e for e in queue if judgment_id is None or e.judgment_id == judgment_id), None)
    if entry is None:
        return None
    judgment = Judgment.objects.select_related(
        "labeler", "task", "task__prompt", "prompt", "judge", "constitution", "source_import"
    ).get(pk=entry.judgment_id)
    task = judgment.task
    if task is not None:
        others = Judgment.objects.filter(task=task, superseded_by__isnull=True)
        responses = task.ordered_responses()
    elif judgment.source == Judgment.Source.IMPORT:
        # An imported judgment belongs to no task: itself, about the responses it names.
        others = Judgment.objects.filter(pk=judgment.pk)
        by_id = Response.objects.in_bulk(imported_response_ids(judgment))
        responses = [by_id[pk] for pk in imported_response_ids(judgment) if pk in by_id]
    else:
        # An AI judgment of no task (a revision, or original vs revision): only itself.
        others = Judgment.objects.filter(pk=judgment.pk)
        shown = (judgment.response_a, judgment.response_b, judgment.edited_from)
        responses = [r for r in shown if r is not None]
    others = (
        others.select_related("labeler", "judge", "constitution", "source_import")
        .prefetch_related("reviews")
        .order_by("created_at", "id")
    )
    return {
        "judgment": judgment,
        "who": judgment_author(judgment),
        "ai": ai_summary(judgment, responses) if judgment.source == Judgment.Source.AI else None,
        "imported": imported_summary(judgment),
        "reasons": entry.reasons,
        "task": task,
        "kind": judgment.kind,
        "prompt": task.prompt if task is not None else judgment.prompt,
        "context": task.context if task is not None else judgment.context,
        "responses": responses,
        "judgments": [_with_author(_described(j, responses)) for j in others],
        "remaining": len(queue),
    }


# --- showing a judgment ----------------------------------------------------------------

CHOICE_WORDS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
# The chat page shows its two replies side by side as "Left" and "Right".
CHAT_CHOICE_WORDS = {**CHOICE_WORDS, "a": "Left is better", "b": "Right is better"}
STRENGTH_WORDS = {1: "marginally", 2: "slightly", 3: "", 4: "much"}


def judgment_summary(judgment: Judgment, responses: Sequence | None = None) -> str:
    """A short plain-text account of what the judgment says, in task terms."""
    if judgment.kind in (TaskKind.COMPARISON, TaskKind.CHAT):
        choice = judgment.choice
        if _swapped(judgment, responses):
            choice = {"a": "b", "b": "a"}.get(choice, choice)
        in_chat = judgment.kind == TaskKind.CHAT or judgment.chat_session_id is not None
        vocabulary = CHAT_CHOICE_WORDS if in_chat else CHOICE_WORDS
        words = vocabulary.get(choice, choice or "—")
        strength = STRENGTH_WORDS.get(judgment.strength or 3, "")
        if choice in ("a", "b") and strength:
            words = words.replace(" better", f" {strength} better")
        return words
    if judgment.kind == TaskKind.RANKING:
        if responses is None:
            responses = judgment.task.ordered_responses() if judgment.task_id else []
        if not judgment.ranking:
            return "all bad"
        letters = {r.pk: chr(ord("A") + i) for i, r in enumerate(responses)}
        order = " > ".join(letters.get(pk, f"#{pk}") for pk in judgment.ranking)
        return f"{order} (all bad)" if judgment.all_bad else order
    if judgment.kind == TaskKind.RATING:
        scores = ", ".join(f"{k} {v}" for k, v in judgment.scores.items())
        flags = f"; flags: {', '.join(judgment.flags)}" if judgment.flags else ""
        return scores + flags
    text = " ".join((judgment.text or "").split())
    return text[:120] + ("…" if len(text) > 120 else "")


def _swapped(judgment: Judgment, responses: Sequence | None) -> bool:
    """Whether a comparison names the responses the other way round from `responses`
    (task order). Human judgments never do; an AI judgment might."""
    return (
        responses is not None
        and len(responses) == 2
        and judgment.response_a_id is not None
        and judgment.response_a_id == responses[1].pk
        and judgment.response_b_id == responses[0].pk
    )


def judgment_author(judgment: Judgment) -> str:
    """Who made the judgment, in words: the labeler, the reviewer, the AI judge, or the
    dataset it was imported from."""
    if judgment.source == Judgment.Source.AI:
        name = judgment.judge.name if judgment.judge_id else "unknown judge"
        return f"AI judge {name}"
    if judgment.source == Judgment.Source.IMPORT:
        batch = judgment.source_import
        name = (batch.source or batch.file_name) if batch is not None else "an unknown file"
        return f"Imported from {name}"
    username = judgment.labeler.username if judgment.labeler_id else "someone"
    if judgment.source == Judgment.Source.REVIEW:
        return f"{username} (reviewer)"
    return username


def imported_summary(judgment: Judgment) -> dict | None:
    """What a reviewer needs to weigh an imported label: the import (dataset name, file,
    format) and where in the file the record was (its id and line), and a KTO label's
    verdict; None for any other judgment."""
    if judgment.source != Judgment.Source.IMPORT:
        return None
    details = judgment.import_details if isinstance(judgment.import_details, dict) else {}
    label = details.get("label")
    return {
        "source_import": judgment.source_import,
        "record_id": details.get("record_id", ""),
        "line": details.get("line"),
        "label": {True: "desirable", False: "undesirable"}.get(label, ""),
    }


def _with_author(judgment: Judgment) -> Judgment:
    judgment.author = judgment_author(judgment)
    return judgment


def _probability(raw) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    return None


# Per-order keys shown in their own words, or not at all (long text, nested values).
_ORDER_KEYS_APART = {"p_a", "p_x", "first", "critique", "verdict_text", "probabilities",
                     "shown_order"}  # fmt: skip


def _order_summary(number: int, order: dict) -> dict:
    """One display order of an AI comparison as annotation/judges/pairwise.py stores it:
    ``first`` ("x" when the judgment's A was shown first), ``p_x`` (P(A better) read from
    that order), the verdict, an optional critique; ``p_a`` is accepted for P(A better)."""
    first = order.get("first")
    extra = {
        key: round(value, 3) if isinstance(value, float) else value
        for key, value in order.items()
        if key not in _ORDER_KEYS_APART
        and value not in (None, "")
        and isinstance(value, str | int | float | bool)
    }
    raw, clamped = extra.pop("p_x_raw", None), _probability(order.get("p_x"))
    if raw is not None and clamped is not None and raw != round(clamped, 3):
        extra["before the chain-of-thought clamp"] = raw
    verdict = extra.pop("verdict", None)
    if verdict in ("A", "B"):
        # The letter names what was shown as (A) in this order; say it in the judgment's terms.
        extra["picked"] = verdict if first != "y" else {"A": "B", "B": "A"}[verdict]
    return {
        "number": number,
        "p_a": _probability(order.get("p_a", order.get("p_x"))),
        "shown_first": {"x": "A", "y": "B"}.get(first, ""),
        "extra": extra,
        "critique": order.get("critique") if isinstance(order.get("critique"), str) else "",
    }


def ai_summary(judgment: Judgment, responses: Sequence | None = None) -> dict:
    """What a reviewer needs to weigh an AI label: the judge, the constitution version and
    principle, the soft label P(A better) in task terms (A is the task's first response),
    and each display order's P(A better), verdict and critique as the judge stored them in
    ``ai_details`` (in the judgment's own terms). ``swapped`` says the judgment's own A
    is the task's B."""
    details = judgment.ai_details if isinstance(judgment.ai_details, dict) else {}
    swapped = _swapped(judgment, responses)
    soft_label = judgment.soft_label
    if soft_label is not None and swapped:
        soft_label = 1.0 - soft_label
    orders = [
        _order_summary(number, order)
        for number, order in enumerate(details.get("orders") or [], start=1)
        if isinstance(order, dict)
    ]
    return {
        "judge": judgment.judge,
        "constitution": judgment.constitution,
        "principle": judgment.principle,
        "soft_label": soft_label,
        "swapped": swapped,
        "orders": orders,
        "agree": details.get("agree"),
        "method": details.get("method", ""),
        "presumed": details.get("presumed") is True,
    }


def _described(judgment: Judgment, responses: Sequence) -> Judgment:
    judgment.summary = judgment_summary(judgment, responses)
    decisions = [review.decision for review in judgment.reviews.all()]
    judgment.decision = decisions[-1] if decisions else ""
    return judgment


# --- a labeler's own page --------------------------------------------------------------


def _describe_as_shown(judgments: Sequence[Judgment]) -> None:
    """Describe each judgment in the terms its labeler saw: the responses in the order they
    were shown (a comparison's A is the one shown first, whichever the task holds first),
    and a ranking as its responses best first, each with the place it was shown at."""
    ids = {pk for j in judgments for pk in [*(j.shown_order or []), *(j.ranking or [])]}
    by_id = Response.objects.in_bulk(ids)
    for judgment in judgments:
        shown = [by_id[pk] for pk in judgment.shown_order or [] if pk in by_id]
        _described(judgment, shown or None)
        if judgment.kind == TaskKind.RANKING:
            place = {pk: index for index, pk in enumerate(judgment.shown_order or [], 1)}
            judgment.ranked = [
                {"response": by_id.get(pk), "pk": pk, "shown_at": place.get(pk)}
                for pk in judgment.ranking
            ]


def my_work(*, project: Project, labeler, today: date | None = None) -> dict:
    """A labeler's own figures: how much they judged (by kind), their streak, gold
    accuracy, median time, recent judgments with any review decision, and a trend."""
    mine = Judgment.objects.filter(project=project, labeler=labeler, source=Judgment.Source.HUMAN)
    today = today or timezone.localdate()
    moments = mine.values_list("created_at", flat=True)
    days = {timezone.localtime(moment).date() for moment in moments}
    # A change of one's own judgment (annotation/labeling/changes.py) is the same item.
    by_kind = Counter(mine.exclude(supersedes__labeler=labeler).values_list("kind", flat=True))
    correct, judged = gold_accuracy(project=project, labeler=labeler)
    recent = list(
        mine.select_related("prompt", "task")
        .prefetch_related("reviews")
        .order_by("-created_at", "-id")[:RECENT_LIMIT]
    )
    _describe_as_shown(recent)
    rows = list(
        current_human_judgments(project=project).filter(labeler=labeler).values(*ROW_FIELDS)
    )
    gold = _gold_results(rows)
    daily, periods = _periods(rows)
    trend = []
    for label, start in periods:
        span = {start} if daily else {start + timedelta(days=i) for i in range(7)}
        in_period = [r for r in rows if timezone.localtime(r["created_at"]).date() in span]
        trend.append({"period": label, **_figures(in_period, gold)})
    return {
        "judged": sum(by_kind.values()),
        "by_kind": sorted(by_kind.items()),
        "pending": Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.PENDING
        ).count(),
        "skipped": Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.SKIPPED
        ).count(),
        "streak": streak_days(days, today=today),
        "judged_today": today in days,
        "gold_correct": correct,
        "gold_judged": judged,
        "gold_accuracy": _share(correct, judged),
        "gold_percent": _percent(correct, judged),
        "median_seconds": median_seconds(mine.values_list("time_spent_ms", flat=True)),
        "recent": recent,
        "trend": trend,
        "daily": daily,
    }
