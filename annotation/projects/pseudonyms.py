"""Who labeled a row, as exports name them: never a username or a user id.

A person is ``lab_`` and the first 12 hex digits of HMAC-SHA256 keyed with the site's
SECRET_KEY over the project and user ids: the same person has the same pseudonym within a
project, a different one in every other project (two exports cannot be joined on people),
and without the key nobody can go from a pseudonym back to a user id by trying them all.
An AI judgment names its judge; an imported one ``import:<source>``.
"""

import hashlib
import hmac
from datetime import UTC, datetime

from django.conf import settings

from annotation.models import Judgment

PREFIX = "lab_"
HEX_DIGITS = 12


def labeler_pseudonym(*, project_id: int, user_id: int) -> str:
    """The labeler's stable pseudonym within one project."""
    message = f"labeler:{project_id}:{user_id}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


def judgment_labeler(
    *,
    source: str,
    project_id: int,
    user_id: int | None,
    judge_name: str | None = None,
    import_source: str | None = None,
) -> str:
    """Who gave a judgment: a person's pseudonym, the AI judge's name or the import."""
    if source == Judgment.Source.AI:
        return judge_name or "ai"
    if source == Judgment.Source.IMPORT:
        return f"import:{import_source or 'unknown'}"
    if user_id is None:
        return ""
    return labeler_pseudonym(project_id=project_id, user_id=user_id)


def iso_utc(moment: datetime | None) -> str:
    """ISO 8601 in UTC ("2026-12-06T03:52:41.123456+00:00"), or "" for none."""
    return moment.astimezone(UTC).isoformat() if moment is not None else ""
