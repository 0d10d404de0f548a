"""Writes of a project's labeling guidelines: publishing a new version and recording which
version a member has read. Reads are in annotation.projects.selectors."""

from django.db import IntegrityError, transaction

from annotation.models import Guidelines, Membership, Project
from annotation.projects.selectors import latest_guidelines
from config.errors import Conflict, ServiceError

MAX_GUIDELINES_CHARS = 50_000


def _checked_text(text) -> str:
    if not isinstance(text, str):
        raise ServiceError("The guidelines must be text.")
    if "\x00" in text:
        raise ServiceError("The guidelines contain a NUL character; remove it.")
    # Browsers send CRLF from a textarea; one line ending keeps "unchanged" and diffs honest.
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise ServiceError("The guidelines are empty; write something first.")
    if len(text) > MAX_GUIDELINES_CHARS:
        raise ServiceError(
            f"The guidelines are too long ({len(text)} characters; at most {MAX_GUIDELINES_CHARS})."
        )
    return text


def guidelines_publish(*, project: Project, text, author) -> Guidelines:
    """Add the next version of the project's guidelines. Text that is empty, unchanged
    from the latest version, too long or holds a NUL character is refused, and nothing is
    stored."""
    text = _checked_text(text)
    try:
        with transaction.atomic():
            latest = latest_guidelines(project)
            if latest is not None and latest.text == text:
                raise ServiceError(
                    f"Nothing changed since version {latest.version}; edit the text first."
                )
            return Guidelines.objects.create(
                project=project,
                version=latest.version + 1 if latest else 1,
                text=text,
                created_by=author,
            )
    except IntegrityError as race:
        raise Conflict("Someone published a version at the same time; reload and retry.") from race


def guidelines_mark_seen(*, project: Project, user, version: int) -> bool:
    """Record that the member has been shown ``version``; True when it is the first time
    (the label page then shows the guidelines open). Never moves back to an older version."""
    updated = Membership.objects.filter(
        project=project, user=user, guidelines_seen__lt=version
    ).update(guidelines_seen=version)
    return updated > 0
