"""Anthropic's HH-RLHF rows: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...",
"rejected": "..."}``, each a whole conversation that differs only in its last turn.

- Each text is split into turns at ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"`` (the first
  may stand at the very start without the blank line); a turn's text is stripped of the
  surrounding whitespace. Text before the first marker is an error, as is an empty turn.
- Both conversations must end with an Assistant turn, and their turns before it must be the
  same: otherwise the pair does not compare two answers to one prompt, and the record is
  refused.
- The turn before the last must be a Human turn: it is the prompt; the turns before it are
  the context (Human -> "user", Assistant -> "assistant").
- The two last Assistant turns are the responses (chosen index 0, rejected index 1) and a
  ``comparison`` judgment (key "pair-0-1") says chosen wins (choice "a").
- When the two last turns are the same text the labeler's choice cannot be about the
  answer, so the comparison is a tie (choice "tie") with ``{"identical_responses": true}``
  in its metadata; both responses are kept so the record still has the usual shape.

Id: ``id`` if present; other fields go to the metadata.
"""

from __future__ import annotations

import re

from .fields import Row, external_id, field_text, rest, row_by_row, text
from .records import ImportedJudgment, ImportedRecord, ImportedResponse, ImportFormatError

TURN_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}


def turns_of(conversation: str, name: str, line: int) -> list[dict[str, str]]:
    """The conversation as ``{"role", "content"}`` turns."""
    pieces = TURN_MARKER.split(conversation)
    if pieces[0].strip() or len(pieces) == 1:
        raise ImportFormatError(
            f"'{name}' must start with a 'Human:' or 'Assistant:' turn", line=line
        )
    return [
        {"role": ROLES[marker], "content": text(content.strip(), f"{name} turn {index}", line)}
        for index, (marker, content) in enumerate(zip(pieces[1::2], pieces[2::2], strict=True))
    ]


def record(row: Row, line: int) -> ImportedRecord:
    chosen = turns_of(field_text(row, "chosen", line), "chosen", line)
    rejected = turns_of(field_text(row, "rejected", line), "rejected", line)
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise ImportFormatError(f"'{name}' must end with an Assistant turn", line=line)
    if chosen[:-1] != rejected[:-1]:
        raise ImportFormatError(
            "chosen and rejected differ before their last Assistant turn", line=line
        )
    if len(chosen) < 2 or chosen[-2]["role"] != "user":
        raise ImportFormatError("the last Assistant turn must follow a Human turn", line=line)
    record_id, id_field = external_id(row, ["id"])
    return ImportedRecord(
        line=line,
        prompt=chosen[-2]["content"],
        external_id=record_id,
        context=chosen[:-2],
        responses=[
            ImportedResponse(text=chosen[-1]["content"]),
            ImportedResponse(text=rejected[-1]["content"]),
        ],
        judgments=[_comparison(chosen[-1] == rejected[-1])],
        metadata=rest(row, ["chosen", "rejected", id_field]),
    )


def _comparison(identical: bool) -> ImportedJudgment:
    if identical:
        return ImportedJudgment(
            kind="comparison",
            key="pair-0-1",
            a=0,
            b=1,
            choice="tie",
            metadata={"identical_responses": True},
        )
    return ImportedJudgment(kind="comparison", key="pair-0-1", a=0, b=1, choice="a")


records = row_by_row(record)
