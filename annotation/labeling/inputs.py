"""Checks of the values every judgment carries from the client, shared by the labeling
queue, chat and the arena: the client-made id and the time spent."""

import time
import uuid

from config.errors import ServiceError

MAX_TIME_SPENT_MS = 86_400_000


def parse_client_id(client_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(client_id))
    except (TypeError, ValueError):
        raise ServiceError("client_id must be a UUID made by the client.") from None


def time_spent_since(shown_at_ms) -> int:
    """Milliseconds since a page was rendered at ``shown_at_ms`` (its hidden form field),
    within a day; 0 when the field is missing or not a number (a plain form post)."""
    try:
        shown_at = int(shown_at_ms)
    except (TypeError, ValueError):
        return 0
    return max(0, min(int(time.time() * 1000) - shown_at, MAX_TIME_SPENT_MS))


def check_time_spent(time_spent_ms) -> int:
    whole = isinstance(time_spent_ms, int) and not isinstance(time_spent_ms, bool)
    if not whole or not 0 <= time_spent_ms <= MAX_TIME_SPENT_MS:
        raise ServiceError("time_spent_ms must be a whole number of milliseconds within a day.")
    return time_spent_ms


def whole_number_or_none(raw) -> int | None:
    """A whole number from a form field or JSON, else None (no bools, no 3.5 -> 3)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None
