"""Bring existing datasets in: a file's records become prompts, responses and imported
judgments of a project, whole or not at all.

The readers (annotation/datasets/formats/) stream the file and name the line of the first
bad record; this module stores what they read in chunks, inside one transaction, so a bad
record on line 900,000 leaves nothing behind.

Importing a file again adds nothing, whatever it is called and whatever source it is
given:
- a prompt is the same prompt when the project's labeling pool holds its text with the
  same conversation before it (imported records reuse prompts typed or imported earlier);
- a response is the same when its prompt already has a response of the same text;
- a judgment's id (``client_id``) derives from what it says (its prompt, context, the
  texts it judges, its kind, key and verdict), so the same judgment read again, from this
  file or another, is found and not stored twice.
A file whose exact bytes were imported before into the project is recorded at once, with
nothing added, without reading it again.

Imported judgments are ``Judgment.Source.IMPORT``: not a labeler's, not an AI judge's.
They keep the import they came from (``source_import``) and the record's original id,
line and fields (``import_details``); their responses and prompts keep theirs too.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from django.db import transaction

from annotation.datasets.bulk import insert_rows
from annotation.datasets.formats.records import (
    ImportedJudgment,
    ImportedRecord,
    ImportFormatError,
)
from annotation.datasets.writers import batched
from annotation.models import Judgment, Project, Prompt, PromptImport, Response, TaskKind
from config.errors import ServiceError

CHUNK_RECORDS = 1000
MAX_SOURCE_CHARS = 100
# Source names a version selects by that are not imports (annotation/datasets/versions.py).
RESERVED_SOURCES = frozenset({"labelers", "ai"})
# One namespace for every imported judgment's client id (uuid5 of what it says).
IMPORT_NAMESPACE = uuid.UUID("6f1d3c2e-5a4b-4e8f-9c7d-2b1a0e9f8d7c")


class DataImportError(ServiceError):
    """A file refused whole; ``line`` is the first bad record's line, when known."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source_name(source: str) -> str:
    source = source.strip()
    if not source:
        raise DataImportError("Give the import a source name (e.g. hh-rlhf).")
    if len(source) > MAX_SOURCE_CHARS:
        raise DataImportError(f"The source name is longer than {MAX_SOURCE_CHARS} characters.")
    if source in RESERVED_SOURCES:
        raise DataImportError(
            f"{source!r} names the project's own judgments; give the import another source name."
        )
    return source


@dataclass
class _Counts:
    records: int = 0
    prompts: int = 0
    prompts_there: int = 0
    responses: int = 0
    judgments: int = 0


def dataset_import(
    *,
    project: Project,
    path: Path,
    format: str = "auto",
    source: str = "",
    file_name: str = "",
    user=None,
) -> PromptImport:
    """Import the file at ``path`` into ``project``; a bad record refuses the whole file
    (``DataImportError`` naming its line) and nothing is stored."""
    from annotation.datasets.formats import readers

    file_name = file_name or path.name
    source = check_source_name(source or Path(file_name).stem)
    try:
        chosen = readers.detect_format(path) if format == "auto" else format
        if chosen not in readers.FORMATS or chosen == "auto":
            raise ImportFormatError(
                f"Unknown format {format!r}; choose one of {', '.join(readers.FORMATS)}."
            )
        content_hash = file_sha256(path)
        with transaction.atomic():
            # Two imports into one project wait for each other, so the second sees the first.
            Project.objects.select_for_update().filter(pk=project.pk).first()
            earlier = PromptImport.objects.filter(
                project=project, content_hash=content_hash
            ).first()
            batch = PromptImport.objects.create(
                project=project,
                file_name=file_name[:255],
                source=source,
                format=chosen,
                content_hash=content_hash,
                prompt_count=0,
                created_by=user,
            )
            counts = _Counts()
            if earlier is not None:
                counts.records = earlier.record_count
                counts.prompts_there = counts.records
            else:
                for chunk in batched(readers.read_records(path, chosen), CHUNK_RECORDS):
                    _store_chunk(project, batch, chunk, counts)
                if counts.records == 0:
                    raise ImportFormatError("the file holds no records.")
            _record_counts(batch, counts)
    except ImportFormatError as error:
        reason = str(error).rstrip(".")
        raise DataImportError(f"{reason}. Nothing was imported.", line=error.line) from None
    except OSError as error:
        raise DataImportError(f"Cannot read {file_name}: {error.strerror}.") from None
    return batch


def _record_counts(batch: PromptImport, counts: _Counts) -> None:
    batch.record_count = counts.records
    batch.prompt_count = counts.prompts
    batch.existing_count = counts.prompts_there
    batch.response_count = counts.responses
    batch.judgment_count = counts.judgments
    batch.save(
        update_fields=[
            "record_count",
            "prompt_count",
            "existing_count",
            "response_count",
            "judgment_count",
        ]
    )


def _canonical(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _prompt_key(text: str, context: list[dict]) -> tuple[str, str]:
    return text, _canonical(context)


def _clean_text(value: str, what: str, line: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ImportFormatError(f"the {what} is empty.", line=line)
    if "\x00" in text:
        raise ImportFormatError(f"the {what} holds a NUL character.", line=line)
    return text


def _store_chunk(
    project: Project, batch: PromptImport, records: list[ImportedRecord], counts: _Counts
) -> None:
    counts.records += len(records)
    prompt_ids = _prompts_of(project, batch, records, counts)
    response_ids = _responses_of(batch, records, prompt_ids, counts)
    _store_judgments(project, batch, records, prompt_ids, response_ids, counts)


def _stored_prompt_ids(project, texts) -> dict[tuple[str, str], int]:
    ids: dict[tuple[str, str], int] = {}
    pool = Prompt.objects.labeling().filter(project=project, text__in=texts)
    for prompt_id, text, context in pool.values_list("id", "text", "context"):
        ids.setdefault(_prompt_key(text, context), prompt_id)
    return ids


def _prompts_of(project, batch, records, counts) -> list[int]:
    """Each record's prompt id (in the records' order), creating the prompts the project
    lacks; a prompt is its (text, context)."""
    keys = []
    wanted: dict[tuple[str, str], ImportedRecord] = {}
    for record in records:
        record.prompt = _clean_text(record.prompt, "prompt", record.line)
        keys.append(_prompt_key(record.prompt, record.context))
        wanted.setdefault(keys[-1], record)
    ids = _stored_prompt_ids(project, {text for text, _ in wanted})
    counts.prompts_there += sum(1 for key in wanted if key in ids)
    missing = [(key, record) for key, record in wanted.items() if key not in ids]
    new_ids = insert_rows(
        Prompt,
        [
            {
                "project_id": project.pk,
                "text": record.prompt,
                "context": record.context,
                "external_id": record.external_id[:200],
                "metadata": record.metadata,
                "source_import_id": batch.pk,
            }
            for _, record in missing
        ],
    )
    ids.update(zip((key for key, _ in missing), new_ids, strict=True))
    counts.prompts += len(new_ids)
    return [ids[key] for key in keys]


def _stored_response_ids(prompt_ids) -> dict[tuple[int, str], int]:
    ids: dict[tuple[int, str], int] = {}
    stored = Response.objects.filter(prompt_id__in=prompt_ids)
    for response_id, prompt_id, text in stored.values_list("id", "prompt_id", "text"):
        ids.setdefault((prompt_id, text), response_id)
    return ids


def _responses_of(batch, records, prompt_ids, counts) -> dict[tuple[int, str], int]:
    """Response ids by (prompt id, text), creating the responses their prompts lack."""
    wanted: dict[tuple[int, str], tuple] = {}
    for record, prompt_id in zip(records, prompt_ids, strict=True):
        for response in record.responses:
            response.text = _clean_text(response.text, "response", record.line)
            wanted.setdefault((prompt_id, response.text), (response, record))
    ids = _stored_response_ids({prompt_id for prompt_id, _ in wanted})
    missing = [(key, response) for key, (response, _) in wanted.items() if key not in ids]
    new_ids = insert_rows(
        Response,
        [
            {
                "prompt_id": prompt_id,
                "text": text,
                "author": str(response.metadata.get("model") or batch.source)[:100],
                "external_id": response.external_id[:200],
                "metadata": response.metadata,
                "source_import_id": batch.pk,
            }
            for (prompt_id, text), response in missing
        ],
    )
    ids.update(zip((key for key, _ in missing), new_ids, strict=True))
    counts.responses += len(new_ids)
    return ids


def _judgment_client_id(project: Project, record: ImportedRecord, judgment) -> uuid.UUID:
    said = [
        project.pk,
        record.context,
        record.prompt,
        [response.text for response in record.responses],
        judgment.kind,
        judgment.key,
        judgment.choice,
        judgment.order,
        judgment.scores,
        judgment.label,
    ]
    return uuid.uuid5(IMPORT_NAMESPACE, _canonical(said))


def _store_judgments(project, batch, records, prompt_ids, response_ids, counts) -> None:
    planned: dict[uuid.UUID, dict] = {}
    for record, prompt_id in zip(records, prompt_ids, strict=True):
        ids = [response_ids[(prompt_id, response.text)] for response in record.responses]
        for judgment in record.judgments:
            client_id = _judgment_client_id(project, record, judgment)
            if client_id not in planned:
                planned[client_id] = _judgment_row(
                    project, batch, record, judgment, prompt_id, ids, client_id
                )
    there = set(
        Judgment.objects.filter(client_id__in=list(planned)).values_list("client_id", flat=True)
    )
    new = [row for client_id, row in planned.items() if client_id not in there]
    counts.judgments += len(insert_rows(Judgment, new))


def _response_id(ids: list[int], index: int | None, record: ImportedRecord) -> int:
    if index is None or not 0 <= index < len(ids):
        raise ImportFormatError(
            f"a judgment points at response {index}, which is missing.", line=record.line
        )
    return ids[index]


def _judgment_row(
    project, batch, record, judgment: ImportedJudgment, prompt_id, ids, client_id
) -> dict:
    row = {
        "client_id": client_id,
        "project_id": project.pk,
        "prompt_id": prompt_id,
        "source": Judgment.Source.IMPORT,
        "source_import_id": batch.pk,
        "import_details": {
            "record_id": record.external_id,
            "line": record.line,
            "key": judgment.key,
            **judgment.metadata,
        },
    }
    if judgment.kind == "comparison":
        if judgment.choice not in {"a", "b", "tie", "both_bad"}:
            raise ImportFormatError(f"unknown choice {judgment.choice!r}.", line=record.line)
        a = _response_id(ids, judgment.a, record)
        b = _response_id(ids, judgment.b, record)
        row.update(
            kind=TaskKind.COMPARISON,
            response_a_id=a,
            response_b_id=b,
            choice=judgment.choice,
            shown_order=[a, b],
        )
    elif judgment.kind == "ranking":
        ranking = [_response_id(ids, index, record) for index in judgment.order]
        row.update(kind=TaskKind.RANKING, ranking=ranking, shown_order=ranking)
    elif judgment.kind in {"rating", "label"}:
        rated = _response_id(ids, judgment.response, record)
        row.update(
            kind=TaskKind.RATING,
            rated_response_id=rated,
            scores=dict(judgment.scores),
            shown_order=[rated],
        )
        if judgment.kind == "label":
            row["import_details"]["label"] = bool(judgment.label)
    elif judgment.kind == "demonstration":
        _response_id(ids, judgment.response, record)
        row.update(kind=TaskKind.DEMONSTRATION, text=record.responses[judgment.response].text)
    else:
        raise ImportFormatError(f"unknown judgment kind {judgment.kind!r}.", line=record.line)
    return row
