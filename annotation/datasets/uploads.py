"""Dataset files sent to the import page and API, kept on disk from the preview to the
confirmation, and the preview's readable summary of each record.

An upload lives at ``DATA_DIR/uploads/<project slug>/<token>/<safe file name>``, the token
a uuid4 hex the confirmation posts back. It is copied chunk by chunk from Django's upload
(which spools a large body to a temporary file), so no file is held whole in memory. The
token is looked up under the project's own folder only: another project's token, or one
already used, is not found. An upload is removed once imported, or once refused.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.utils.text import get_valid_filename

from annotation.datasets.formats.records import ImportedJudgment, ImportedRecord, ImportFormatError
from annotation.datasets.imports import DataImportError, dataset_import
from annotation.models import Project, PromptImport
from config.errors import NotFound, ServiceError

TOKEN_PATTERN = re.compile(r"^[0-9a-f]{32}$")
PREVIEW_ROWS = 5
MAX_NAME_BYTES = 180


class UploadTooLarge(ServiceError):
    status_code = 413


@dataclass(frozen=True)
class StoredUpload:
    token: str
    path: Path

    @property
    def file_name(self) -> str:
        return self.path.name


def _project_folder(project: Project) -> Path:
    return Path(settings.DATA_DIR) / "uploads" / project.slug


def safe_file_name(name: str) -> str:
    """The upload's own name without folders or odd characters (its extension kept: the
    readers go by it)."""
    try:
        valid = Path(get_valid_filename(Path(name or "").name))
    except SuspiciousFileOperation:
        return "upload"
    suffix = valid.suffix if len(valid.suffix) <= 16 else ""
    # File systems count bytes (255 at most), not characters.
    stem = valid.stem.encode()[:MAX_NAME_BYTES].decode(errors="ignore") or "upload"
    return stem + suffix


def check_upload_size(size: int | None) -> None:
    limit = settings.DATASET_UPLOAD_MAX_BYTES
    if size is not None and size > limit:
        raise UploadTooLarge(
            f"The file is larger than {limit:,} bytes (DATASET_UPLOAD_MAX_BYTES); nothing was "
            "stored."
        )


def upload_save(*, project: Project, upload) -> StoredUpload:
    """Copy a Django ``UploadedFile`` under the project's upload folder, chunk by chunk."""
    check_upload_size(upload.size)
    token = uuid.uuid4().hex
    folder = _project_folder(project) / token
    folder.mkdir(parents=True)
    path = folder / safe_file_name(upload.name)
    with path.open("wb") as stream:
        for chunk in upload.chunks():
            stream.write(chunk)
    return StoredUpload(token=token, path=path)


def upload_find(*, project: Project, token: str) -> StoredUpload:
    """The project's upload of that token; NotFound for a token of another project, one
    already used or one never given."""
    token = (token or "").strip()
    folder = _project_folder(project) / token
    files = sorted(folder.iterdir()) if TOKEN_PATTERN.match(token) and folder.is_dir() else []
    if len(files) != 1 or not files[0].is_file():
        raise NotFound("No such upload in this project: send the file again.")
    return StoredUpload(token=token, path=files[0])


def upload_discard(*, project: Project, token: str) -> None:
    if TOKEN_PATTERN.match(token or ""):
        shutil.rmtree(_project_folder(project) / token, ignore_errors=True)


def upload_preview(stored: StoredUpload, format: str) -> tuple[str, list[tuple[dict, dict]]]:
    """(the format read, [(raw row, record summary)]) for the file's first records;
    DataImportError naming the line of a bad one."""
    from annotation.datasets.formats import readers

    if format not in readers.FORMATS:
        raise DataImportError(
            f"Unknown format {format!r}; choose one of {', '.join(readers.FORMATS)}."
        )
    try:
        chosen = readers.detect_format(stored.path) if format == "auto" else format
        rows = readers.preview(stored.path, chosen, limit=PREVIEW_ROWS)
    except ImportFormatError as error:
        raise DataImportError(f"{str(error).rstrip('.')}.", line=error.line) from None
    if not rows:
        raise DataImportError("The file holds no records.")
    return chosen, [(raw, record_summary(record)) for raw, record in rows]


def upload_import(
    *, project: Project, stored: StoredUpload, format: str, source: str, user
) -> PromptImport:
    """Import the stored upload (dataset_import) and remove it, imported or refused."""
    try:
        return dataset_import(
            project=project,
            path=stored.path,
            format=format,
            source=source,
            file_name=stored.file_name,
            user=user,
        )
    finally:
        upload_discard(project=project, token=stored.token)


# --- what a record says, for the preview ----------------------------------------------


def judgment_text(judgment: ImportedJudgment) -> str:
    def nth(index: int | None) -> str:
        return "?" if index is None else str(index + 1)

    if judgment.kind == "comparison":
        return f"comparison of responses {nth(judgment.a)} and {nth(judgment.b)}: {judgment.choice}"
    if judgment.kind == "ranking":
        return "ranking, best first: " + " > ".join(nth(index) for index in judgment.order)
    if judgment.kind == "rating":
        scores = ", ".join(f"{aspect} {value:g}" for aspect, value in judgment.scores.items())
        return f"rating of response {nth(judgment.response)}: {scores}"
    if judgment.kind == "label":
        verdict = "desirable" if judgment.label else "undesirable"
        return f"response {nth(judgment.response)} is {verdict}"
    return f"response {nth(judgment.response)} is the ideal answer"


def record_summary(record: ImportedRecord) -> dict:
    """How a record maps: its prompt, the turns before it, its responses and judgments."""
    return {
        "line": record.line,
        "prompt": record.prompt,
        "context": [dict(turn) for turn in record.context],
        "responses": [response.text for response in record.responses],
        "judgments": [judgment_text(judgment) for judgment in record.judgments],
    }
