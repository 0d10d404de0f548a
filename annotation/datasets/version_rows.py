"""The rows a dataset version can hold, read from a project's current judgments and prompts
(the shape is in annotation/datasets/writers.py's docstring): the candidates curation then
filters.

Which judgments: current ones (not superseded, not rejected in review) of the sources asked
for: ``labelers`` (people's judgments and reviewers' corrections), ``ai`` (AI judges'), and
imports by their source name. ``ai`` narrows further as in the exports: ``exclude``,
``only``, ``trusted`` or ``include`` (annotation/judges/trust.py).

By kind:
- preference: a comparison with a winner gives [winner, loser] (ties and "both bad" give
  no preference and are left out); a ranking gives its responses best first (all bad: left
  out). ``scores`` are the responses' mean rating where every response of the row has one
  (imported UltraFeedback and Stack Exchange ratings; labelers' ratings), else null.
- sft: demonstrations (the text written, or the imported ideal answer).
- kto: imported labels (desirable or not), and from comparisons with a winner the winner
  as desirable and the loser as not; "both bad" gives both as undesirable.
- prompts: the labeling pool's prompts; ``labelers`` selects those typed in or loaded by
  the prompt file import, a source name those of that dataset import.
Rows come earliest first, so deduplication keeps the earliest copy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from statistics import fmean

from django.db.models import Q

from annotation.datasets.selectors import ai_selection, current_judgments, trusted_labels
from annotation.datasets.writers import batched
from annotation.models import Judgment, Project, Prompt, Response, TaskKind
from annotation.projects.pseudonyms import iso_utc, judgment_labeler

LABELERS, AI = "labelers", "ai"
CHUNK = 2000


def source_filter(project: Project, sources: list[str] | None, ai: str | None) -> Q:
    """Judgments of ``sources`` (None: every source) under the ``ai`` choice."""
    S = Judgment.Source
    wanted = Q(pk__in=[]) if sources else ~Q(pk__in=[])
    for source in sources or []:
        if source == LABELERS:
            wanted |= Q(source__in=[S.HUMAN, S.REVIEW])
        elif source == AI:
            wanted |= Q(source=S.AI)
        else:
            wanted |= Q(source=S.IMPORT, source_import__source=source)
    selection = ai_selection(project, ai)
    is_ai = Q(source=S.AI)
    if selection.ai == "exclude":
        return wanted & ~is_ai
    if selection.ai == "only":
        return wanted & is_ai
    if selection.ai == "trusted":
        return wanted & (~is_ai | trusted_labels(selection.judges))
    return wanted


def _current(project: Project, kinds: list[str], where: Q):
    return current_judgments(project, kinds).filter(where)


def _source_name(source: str, import_source: str | None) -> str:
    if source == Judgment.Source.IMPORT:
        return import_source or "import"
    return AI if source == Judgment.Source.AI else LABELERS


def _conversation(prompt_text: str, context: list[dict]) -> list[dict]:
    return [*context, {"role": "user", "content": prompt_text}]


def _base(row_id: str, kind: str, values: dict) -> dict:
    return {
        "id": row_id,
        "kind": kind,
        "prompt": _conversation(values["prompt__text"], values["prompt__context"]),
        "source": values["source"],
        "source_name": _source_name(values["source"], values["source_import__source"]),
        "language": "",
        "prompt_id": values["prompt_id"],
        "external_id": values["prompt__external_id"],
        "labeler": judgment_labeler(
            source=values["source"],
            project_id=values["project_id"],
            user_id=values["labeler_id"],
            judge_name=values["judge__name"],
            import_source=values["source_import__source"],
        ),
        "judged_at": iso_utc(values["created_at"]),
        "meta": {"judgment": values["id"], "prompt": values["prompt_id"]},
    }


FIELDS = (
    "id",
    "kind",
    "source",
    "source_import__source",
    "prompt_id",
    "prompt__external_id",
    "project_id",
    "labeler_id",
    "judge__name",
    "created_at",
    "prompt__text",
    "prompt__context",
    "choice",
    "soft_label",
    "response_a_id",
    "response_b_id",
    "ranking",
    "all_bad",
    "rated_response_id",
    "text",
    "import_details",
)


def _chunked_values(queryset) -> Iterator[list[dict]]:
    return batched(queryset.values(*FIELDS).iterator(chunk_size=CHUNK), CHUNK)


def _texts(response_ids: set[int]) -> dict[int, str]:
    """Texts of the alive responses among ``response_ids`` (a task-less imported ranking
    names its responses only in JSON: a row missing one is dropped)."""
    return dict(Response.objects.alive().filter(pk__in=response_ids).values_list("id", "text"))


def _ordered_ids(values: dict) -> list[int] | None:
    """The responses best first, or None when the judgment states no preference."""
    if values["kind"] == TaskKind.RANKING:
        return None if values["all_bad"] or len(values["ranking"]) < 2 else values["ranking"]
    a, b = values["response_a_id"], values["response_b_id"]
    return {"a": [a, b], "b": [b, a]}.get(values["choice"])


def mean_ratings(project: Project, where: Q) -> dict[int, float]:
    """Each rated response's mean score (over its current ratings' numeric criteria)."""
    totals: dict[int, list[float]] = defaultdict(list)
    ratings = _current(project, [TaskKind.RATING], where).values_list("rated_response_id", "scores")
    for response_id, scores in ratings.iterator(chunk_size=CHUNK):
        numbers = [v for v in (scores or {}).values() if isinstance(v, int | float)]
        if numbers:
            totals[response_id].append(fmean(numbers))
    return {response_id: fmean(values) for response_id, values in totals.items()}


def preference_rows(project: Project, where: Q) -> Iterator[dict]:
    ratings = mean_ratings(project, where)
    kinds = [TaskKind.COMPARISON, TaskKind.RANKING]
    for chunk in _chunked_values(_current(project, kinds, where)):
        orders = [(values, _ordered_ids(values)) for values in chunk]
        texts = _texts({pk for _, ids in orders if ids for pk in ids})
        for values, ids in orders:
            if not ids or any(pk not in texts for pk in ids):
                continue
            row = _base(f"j:{values['id']}", "preference", values)
            row["responses"] = [texts[pk] for pk in ids]
            scores = [ratings.get(pk) for pk in ids]
            row["scores"] = None if None in scores else scores
            row["soft_label"] = _soft_label(values, ids)
            row["meta"]["responses"] = ids
            yield row


def _soft_label(values: dict, ids: list[int]) -> float | None:
    if values["source"] != Judgment.Source.AI or values["soft_label"] is None or len(ids) != 2:
        return None
    return values["soft_label"] if ids[0] == values["response_a_id"] else 1 - values["soft_label"]


def sft_rows(project: Project, where: Q) -> Iterator[dict]:
    for chunk in _chunked_values(_current(project, [TaskKind.DEMONSTRATION], where)):
        for values in chunk:
            if values["text"].strip():
                row = _base(f"j:{values['id']}", "sft", values)
                row["completion"] = values["text"]
                yield row


def kto_rows(project: Project, where: Q) -> Iterator[dict]:
    kinds = [TaskKind.COMPARISON, TaskKind.RATING]
    for chunk in _chunked_values(_current(project, kinds, where)):
        labelled = [(values, _kto_labels(values)) for values in chunk]
        texts = _texts({pk for _, labels in labelled for pk, _ in labels})
        for values, labels in labelled:
            for pk, label in labels:
                if pk not in texts:
                    continue
                row = _base(f"j:{values['id']}:{pk}", "kto", values)
                row["completion"] = texts[pk]
                row["label"] = label
                row["meta"]["response"] = pk
                yield row


def _kto_labels(values: dict) -> list[tuple[int, bool]]:
    if values["kind"] == TaskKind.RATING:
        label = (values["import_details"] or {}).get("label")
        return [] if label is None else [(values["rated_response_id"], bool(label))]
    a, b = values["response_a_id"], values["response_b_id"]
    return {
        "a": [(a, True), (b, False)],
        "b": [(b, True), (a, False)],
        "both_bad": [(a, False), (b, False)],
    }.get(values["choice"], [])


def prompt_rows(project: Project, sources: list[str] | None) -> Iterator[dict]:
    prompts = Prompt.objects.labeling().alive().filter(project=project)
    if sources:
        wanted = Q(pk__in=[])
        names = [s for s in sources if s not in (LABELERS, AI)]
        if names:
            wanted |= Q(source_import__source__in=names)
        if LABELERS in sources:
            # Typed into the pool or loaded by the prompt file import (no source name).
            wanted |= Q(source_import__isnull=True) | Q(source_import__source="")
        prompts = prompts.filter(wanted)
    fields = ("id", "text", "context", "source_import__source", "external_id")
    for values in prompts.order_by("created_at", "id").values(*fields).iterator(chunk_size=CHUNK):
        imported = values["source_import__source"]
        yield {
            "id": f"p:{values['id']}",
            "kind": "prompts",
            "prompt": _conversation(values["text"], values["context"]),
            "source": Judgment.Source.IMPORT if imported else Judgment.Source.HUMAN,
            "source_name": imported or LABELERS,
            "language": "",
            "prompt_id": values["id"],
            "external_id": values["external_id"],
            "labeler": "",
            "judged_at": "",
            "meta": {"prompt": values["id"], "external_id": values["external_id"]},
        }


def candidate_rows(
    project: Project, kind: str, sources: list[str] | None, ai: str | None
) -> Iterator[dict]:
    """The rows of ``kind`` that ``sources`` and ``ai`` select, earliest first."""
    if kind == "prompts":
        return prompt_rows(project, sources)
    where = source_filter(project, sources, ai)
    return {"preference": preference_rows, "sft": sft_rows, "kto": kto_rows}[kind](project, where)
