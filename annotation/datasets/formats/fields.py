"""Checks every format reader applies to the fields of a raw row: texts are non-empty strings
of at most ``MAX_TEXT_CHARS`` characters, chat turns are ``{"role", "content"}`` dicts, ids
become strings, and the fields a reader did not use are kept, JSON-safe, as metadata.

Each check raises ``ImportFormatError`` naming the field and the row's line, so a bad record
stops an import with a message a person can act on.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Callable, Iterable, Iterator

from .records import ImportedRecord, ImportFormatError

MAX_TEXT_CHARS = 100_000

Row = dict
Rows = Iterable[tuple[int, Row]]


def text(value, name: str, line: int) -> str:
    """``value`` as a text: a non-empty string of at most MAX_TEXT_CHARS characters."""
    if value is None:
        raise ImportFormatError(f"missing field '{name}'", line=line)
    if not isinstance(value, str):
        raise ImportFormatError(
            f"field '{name}' must be text, not {type(value).__name__}", line=line
        )
    if not value.strip():
        raise ImportFormatError(f"field '{name}' is empty", line=line)
    if len(value) > MAX_TEXT_CHARS:
        raise ImportFormatError(
            f"field '{name}' has {len(value)} characters, over the {MAX_TEXT_CHARS} limit",
            line=line,
        )
    return value


def field_text(row: Row, name: str, line: int) -> str:
    return text(row.get(name), name, line)


def first_present(row: Row, names: Iterable[str]) -> str | None:
    """The first of ``names`` that the row holds with a value (None and "" count as absent,
    as CSV gives "" for an empty cell)."""
    for name in names:
        if row.get(name) not in (None, ""):
            return name
    return None


def required_name(row: Row, names: Iterable[str], line: int) -> str:
    """The first of ``names`` the row holds with a value, else the first it holds at all
    (so that an empty one is reported as empty); a missing field is an error."""
    names = tuple(names)
    name = first_present(row, names) or next((n for n in names if n in row), None)
    if name is None:
        alternatives = "' or '".join(names)
        raise ImportFormatError(f"missing field '{alternatives}'", line=line)
    return name


def messages(value, name: str, line: int) -> list[dict[str, str]]:
    """A chat as a list of ``{"role": str, "content": str}``; other keys of a turn are
    dropped."""
    if value is None:
        raise ImportFormatError(f"missing field '{name}'", line=line)
    if not isinstance(value, list):
        raise ImportFormatError(
            f"field '{name}' must be a list of messages, not {type(value).__name__}", line=line
        )
    if not value:
        raise ImportFormatError(f"field '{name}' is an empty list of messages", line=line)
    turns = []
    for index, turn in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict):
            raise ImportFormatError(f"'{where}' must be a message object", line=line)
        role = text(turn.get("role"), f"{where}.role", line)
        turns.append({"role": role, "content": text(turn.get("content"), f"{where}.content", line)})
    return turns


def external_id(row: Row, names: Iterable[str]) -> tuple[str, str | None]:
    """(the row's id as a string, the field it came from), or ("", None)."""
    name = first_present(row, names)
    return (str(row[name]), name) if name else ("", None)


def boolean(value, name: str, line: int) -> bool:
    """A JSON/Parquet bool, or the text CSV gives for one (true/false/1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if value is None:
        raise ImportFormatError(f"missing field '{name}'", line=line)
    raise ImportFormatError(f"field '{name}' must be true or false, not {value!r}", line=line)


def number(value, name: str, line: int) -> float:
    """An int or float, or the text of one (CSV)."""
    if isinstance(value, bool) or value is None:
        raise ImportFormatError(f"field '{name}' must be a number, not {value!r}", line=line)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ImportFormatError(
            f"field '{name}' must be a number, not {value!r}", line=line
        ) from None


def rest(row: Row, used: Iterable[str | None]) -> dict:
    """The row's fields other than ``used``, JSON-safe, for ``metadata``."""
    skip = set(used)
    return {
        str(key): json_safe(value)
        for key, value in row.items()
        if key not in skip and key is not None
    }


def json_safe(value):
    """``value`` with what JSON cannot hold (dates, decimals, bytes, NaN) made into what it
    can, so metadata can go to a JSON column."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def split_prompt(turns: list[dict[str, str]], name: str, line: int):
    """(context, prompt) from a chat that ends with the user's turn."""
    if turns[-1]["role"] != "user":
        raise ImportFormatError(
            f"the last message of '{name}' must be the user's, not '{turns[-1]['role']}'",
            line=line,
        )
    return turns[:-1], turns[-1]["content"]


def row_by_row(
    record_of: Callable[[Row, int], ImportedRecord],
) -> Callable[[Rows], Iterator[ImportedRecord]]:
    """A ``records(rows)`` for formats where each row is one record."""

    def records(rows: Rows) -> Iterator[ImportedRecord]:
        for line, row in rows:
            yield record_of(row, line)

    return records
