"""What a reader makes of one record of an imported file: a prompt (with the conversation
before it), the responses to it and the judgments the file holds about them.

Judgments point at responses by their index in ``ImportedRecord.responses``:

- ``comparison``: ``a`` and ``b`` with ``choice`` "a", "b" or "tie";
- ``ranking``: ``order``, response indices best first;
- ``rating``: ``response`` with ``scores`` ({aspect: number});
- ``label``: ``response`` with ``label`` True (desirable) or False (KTO's unpaired rows);
- ``demonstration``: ``response`` is an ideal answer (SFT rows).

``key`` names the judgment within its record ("pair-0-1", "rating-2", ...), so that the same
file imported twice gives the same judgments (their ids derive from source, record and key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

JudgmentKind = Literal["comparison", "ranking", "rating", "label", "demonstration"]


class ImportFormatError(ValueError):
    """A record the reader cannot take; ``line`` is its 1-based line (JSONL), row (CSV,
    counting the header as line 1) or row index + 1 (Parquet)."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(f"Line {line}: {message}" if line else message)
        self.message = message
        self.line = line


@dataclass
class ImportedResponse:
    text: str
    external_id: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class ImportedJudgment:
    kind: JudgmentKind
    key: str
    a: int | None = None
    b: int | None = None
    choice: str = ""
    order: list[int] = field(default_factory=list)
    response: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    label: bool | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class ImportedRecord:
    line: int
    prompt: str
    external_id: str = ""
    context: list[dict[str, str]] = field(default_factory=list)
    responses: list[ImportedResponse] = field(default_factory=list)
    judgments: list[ImportedJudgment] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
