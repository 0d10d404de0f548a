"""Stack Exchange questions with their voted answers, as used for StackLLaMA
(https://huggingface.co/blog/stackllama) and HuggingFaceH4/stack-exchange-preferences.

Rows: ``{"question": str, "answers": [{"text": str, "score" or "pm_score": number,
"answer_id", "selected", ...}], "qid", ...}``.

- prompt = ``question``; external_id = ``qid`` (or ``question_id`` or ``id``); responses =
  the answers in file order, external_id = ``answer_id``, other answer fields as metadata.
- score of an answer, as in "A General Language Assistant as a Laboratory for Alignment"
  (Askell et al. 2021, section 5.1) which StackLLaMA follows:
  ``pm_score`` when present is already that score and is taken as is; otherwise from the
  raw vote count ``score``: round(log2(1 + votes)) (halves round up), plus 1 when the answer
  was accepted (``selected``, ``accepted`` or ``is_accepted`` true); an answer with negative
  votes scores -1 whether accepted or not.
- one ``rating`` per answer (key "rating-<index>", scores ``{"score": s}``).
- comparisons for pairs of answers with different scores, the higher wins (key
  "pair-i-j" with i < j, choice "a" or "b"). At most ``MAX_PAIRS`` = 10 per question, as
  StackLLaMA samples at most ten pairs per question; ours are chosen deterministically:
  the pairs with the largest score gaps first, ties by (i, j).

The paired shape of lvwerra/stack-exchange-paired (``question``, ``response_j``,
``response_k``, where response_j is the better answer) is also read: two responses and one
comparison (key "pair-0-1", choice "a").
"""

from __future__ import annotations

import math

from .fields import Row, external_id, field_text, number, rest, row_by_row, text
from .records import ImportedJudgment, ImportedRecord, ImportedResponse, ImportFormatError

MAX_PAIRS = 10
ID_FIELDS = ("qid", "question_id", "id")
ACCEPTED_FIELDS = ("selected", "accepted", "is_accepted")


def answer_score(votes: float, accepted: bool) -> int:
    """The preference score of an answer with ``votes`` net votes."""
    if votes < 0:
        return -1
    return math.floor(math.log2(1 + votes) + 0.5) + (1 if accepted else 0)


def record(row: Row, line: int) -> ImportedRecord:
    record_id, id_field = external_id(row, ID_FIELDS)
    prompt = field_text(row, "question", line)
    if "answers" not in row and "response_j" in row:
        return _paired(row, line, prompt, record_id, id_field)
    answers = row.get("answers")
    if not isinstance(answers, list):
        raise ImportFormatError(
            "missing field 'answers'" if answers is None else "field 'answers' must be a list",
            line=line,
        )
    responses, scores = [], []
    for index, answer in enumerate(answers):
        response, score = _answer(answer, f"answers[{index}]", line)
        responses.append(response)
        scores.append(score)
    ratings = [
        ImportedJudgment(kind="rating", key=f"rating-{index}", response=index, scores={"score": s})
        for index, s in enumerate(scores)
    ]
    return ImportedRecord(
        line=line,
        prompt=prompt,
        external_id=record_id,
        responses=responses,
        judgments=ratings + _comparisons(scores),
        metadata=rest(row, ["question", "answers", id_field]),
    )


def _answer(answer, name: str, line: int) -> tuple[ImportedResponse, float]:
    if not isinstance(answer, dict):
        raise ImportFormatError(f"'{name}' must be an object", line=line)
    if answer.get("pm_score") not in (None, ""):
        score = number(answer["pm_score"], f"{name}.pm_score", line)
    elif answer.get("score") not in (None, ""):
        votes = number(answer["score"], f"{name}.score", line)
        accepted = any(answer.get(field) in (True, "true", "True") for field in ACCEPTED_FIELDS)
        score = answer_score(votes, accepted)
    else:
        raise ImportFormatError(f"missing field '{name}.score' or '{name}.pm_score'", line=line)
    answer_id, id_field = external_id(answer, ["answer_id", "id"])
    response = ImportedResponse(
        text=text(answer.get("text"), f"{name}.text", line),
        external_id=answer_id,
        metadata=rest(answer, ["text", id_field]),
    )
    return response, score


def _comparisons(scores: list[float]) -> list[ImportedJudgment]:
    pairs = [
        (i, j)
        for i in range(len(scores))
        for j in range(i + 1, len(scores))
        if scores[i] != scores[j]
    ]
    pairs.sort(key=lambda pair: (-abs(scores[pair[0]] - scores[pair[1]]), pair))
    return [
        ImportedJudgment(
            kind="comparison",
            key=f"pair-{i}-{j}",
            a=i,
            b=j,
            choice="a" if scores[i] > scores[j] else "b",
        )
        for i, j in pairs[:MAX_PAIRS]
    ]


def _paired(row: Row, line: int, prompt: str, record_id: str, id_field) -> ImportedRecord:
    return ImportedRecord(
        line=line,
        prompt=prompt,
        external_id=record_id,
        responses=[
            ImportedResponse(text=field_text(row, "response_j", line)),
            ImportedResponse(text=field_text(row, "response_k", line)),
        ],
        judgments=[ImportedJudgment(kind="comparison", key="pair-0-1", a=0, b=1, choice="a")],
        metadata=rest(row, ["question", "response_j", "response_k", id_field]),
    )


records = row_by_row(record)
