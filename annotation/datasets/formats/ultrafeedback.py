"""UltraFeedback, in openbmb/UltraFeedback's shape and in the binarized one.

openbmb shape, ``{"source", "instruction", "completions": [{"model", "response",
"annotations": {aspect: {"Rating": "4", "Rationale": ...}}, "fine-grained_score",
"overall_score", "critique", ...}]}``:

- prompt = ``instruction``; responses = the completions' ``response`` texts, in file order;
  each response keeps ``model`` and its other fields (annotations included) as metadata.
- one ``rating`` judgment per completion (key "rating-<index>") whose scores are the
  aspects' ratings as numbers (an aspect may also be a one-element list of such a dict, as
  in some releases); "N/A" and missing ratings are skipped. A numeric ``overall_score`` is
  added as the score "overall". A completion with no score at all gets no rating.
- comparisons, deterministic: for every pair i < j of completions that both have aspect
  ratings, the one with the higher mean aspect rating wins (key "pair-i-j", a=i, b=j,
  choice "a" or "b"); pairs with equal means give none. With UltraFeedback's four
  completions that is at most six comparisons.
- id: ``id`` or ``prompt_id``; ``source`` and other fields go to the record's metadata.

binarized shape (HuggingFaceH4/ultrafeedback_binarized: ``prompt``, ``chosen``,
``rejected``, ``score_chosen``, ``score_rejected``, ...): read as a TRL preference row
(see trl.py), plus a ``rating`` per response (keys "rating-0", "rating-1", scores
``{"overall": score}``) when the scores are present.
"""

from __future__ import annotations

from statistics import fmean

from . import trl
from .fields import (
    Row,
    external_id,
    field_text,
    number,
    rest,
    row_by_row,
    text,
)
from .records import ImportedJudgment, ImportedRecord, ImportedResponse, ImportFormatError

NOT_RATED = ("", "N/A", None)


def record(row: Row, line: int) -> ImportedRecord:
    if "completions" not in row and "chosen" in row:
        return _binarized(row, line)
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise ImportFormatError(
            "missing field 'completions'"
            if completions is None
            else "field 'completions' must be a list",
            line=line,
        )
    responses, ratings = [], []
    for index, completion in enumerate(completions):
        response, scores = _completion(completion, index, line)
        responses.append(response)
        ratings.append(scores)
    record_id, id_field = external_id(row, ["id", "prompt_id"])
    return ImportedRecord(
        line=line,
        prompt=field_text(row, "instruction", line),
        external_id=record_id,
        responses=responses,
        judgments=_ratings(ratings) + _comparisons(ratings),
        metadata=rest(row, ["instruction", "completions", id_field]),
    )


def _completion(completion, index: int, line: int) -> tuple[ImportedResponse, dict]:
    name = f"completions[{index}]"
    if not isinstance(completion, dict):
        raise ImportFormatError(f"'{name}' must be an object", line=line)
    response = ImportedResponse(
        text=text(completion.get("response"), f"{name}.response", line),
        metadata=rest(completion, ["response"]),
    )
    return response, _scores(completion, name, line)


def _scores(completion: dict, name: str, line: int) -> dict[str, float]:
    annotations = completion.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ImportFormatError(f"'{name}.annotations' must be an object", line=line)
    scores = {}
    for aspect, annotation in annotations.items():
        if isinstance(annotation, list) and len(annotation) == 1:
            annotation = annotation[0]
        rating = annotation.get("Rating") if isinstance(annotation, dict) else None
        if rating not in NOT_RATED:
            scores[aspect] = number(rating, f"{name}.annotations.{aspect}.Rating", line)
    overall = completion.get("overall_score")
    if overall not in NOT_RATED:
        scores["overall"] = number(overall, f"{name}.overall_score", line)
    return scores


def _aspect_mean(scores: dict[str, float]) -> float | None:
    aspects = [value for aspect, value in scores.items() if aspect != "overall"]
    return fmean(aspects) if aspects else None


def _ratings(ratings: list[dict]) -> list[ImportedJudgment]:
    return [
        ImportedJudgment(kind="rating", key=f"rating-{index}", response=index, scores=scores)
        for index, scores in enumerate(ratings)
        if scores
    ]


def _comparisons(ratings: list[dict]) -> list[ImportedJudgment]:
    means = [_aspect_mean(scores) for scores in ratings]
    judgments = []
    for i, mean_i in enumerate(means):
        for j in range(i + 1, len(means)):
            mean_j = means[j]
            if mean_i is None or mean_j is None or mean_i == mean_j:
                continue
            judgments.append(
                ImportedJudgment(
                    kind="comparison",
                    key=f"pair-{i}-{j}",
                    a=i,
                    b=j,
                    choice="a" if mean_i > mean_j else "b",
                    metadata={"mean_a": mean_i, "mean_b": mean_j},
                )
            )
    return judgments


def _binarized(row: Row, line: int) -> ImportedRecord:
    result = trl.record(row, line)
    for index, name in enumerate(("score_chosen", "score_rejected")):
        if row.get(name) not in NOT_RATED:
            result.judgments.append(
                ImportedJudgment(
                    kind="rating",
                    key=f"rating-{index}",
                    response=index,
                    scores={"overall": number(row[name], name, line)},
                )
            )
            result.metadata.pop(name, None)
    return result


records = row_by_row(record)
