"""``--format auto``: the format of a file, told from the keys (and, where keys alone are
ambiguous, the value types) of its first record. The rules, first match wins:

1. ``completions`` and ``instruction``, or ``chosen`` with ``score_chosen`` -> ultrafeedback
2. ``message_tree_id`` with a ``prompt`` object, or ``message_id`` with ``parent_id`` and
   ``role`` -> oasst
3. ``question`` with ``answers`` or ``response_j`` -> stackexchange
4. ``chosen`` and ``rejected`` texts, without ``prompt``, starting with a "Human:" turn
   -> hh-rlhf
5. ``chosen`` and ``rejected``, ``messages``, or ``prompt`` with ``completion`` -> trl
6. ``instruction``, or ``prompt`` with ``response`` or ``output`` -> sft
7. ``prompt`` or ``text`` alone -> prompts

Anything else is an error that lists the keys found.
"""

from __future__ import annotations

from .fields import Row
from .hh_rlhf import TURN_MARKER
from .records import ImportFormatError


def format_of_row(row: Row, line: int) -> str:
    keys = set(row)
    if {"completions", "instruction"} <= keys or {"chosen", "score_chosen"} <= keys:
        return "ultrafeedback"
    if _is_oasst(row, keys):
        return "oasst"
    if "question" in keys and keys & {"answers", "response_j"}:
        return "stackexchange"
    if _is_hh_rlhf(row, keys):
        return "hh-rlhf"
    if {"chosen", "rejected"} <= keys or "messages" in keys or {"prompt", "completion"} <= keys:
        return "trl"
    if "instruction" in keys or ("prompt" in keys and keys & {"response", "output"}):
        return "sft"
    if keys & {"prompt", "text"}:
        return "prompts"
    raise ImportFormatError(
        "cannot tell the format from the first record's fields "
        f"({', '.join(sorted(map(str, keys))) or 'none'}); choose one with --format",
        line=line,
    )


def _is_oasst(row: Row, keys: set) -> bool:
    nested = "message_tree_id" in keys and isinstance(row.get("prompt"), dict)
    return nested or {"message_id", "parent_id", "role"} <= keys


def _is_hh_rlhf(row: Row, keys: set) -> bool:
    chosen = row.get("chosen")
    return (
        {"chosen", "rejected"} <= keys
        and "prompt" not in keys
        and isinstance(chosen, str)
        and TURN_MARKER.match(chosen.lstrip(" ")) is not None
    )
