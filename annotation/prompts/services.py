"""Writes of the prompt pool: importing prompts from JSONL or CSV files, all or nothing."""

import csv
import io
import json
from dataclasses import dataclass

from django.db import transaction

from annotation.models import Project, Prompt, PromptImport
from config.errors import ServiceError
from config.parsers import UnsafeJson, check_json_value, loads_checked

MAX_PROMPT_CHARS = 20_000
MAX_EXTERNAL_ID_CHARS = 200
PROMPT_TEXT_KEYS = ("prompt", "text")


class PromptImportError(ServiceError):
    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(f"Line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class ParsedPrompt:
    text: str
    external_id: str
    metadata: dict
    line: int = 0


def _parsed_prompt(record: dict, line: int) -> ParsedPrompt:
    text = next((record[key] for key in PROMPT_TEXT_KEYS if key in record), None)
    if not isinstance(text, str) or not text.strip():
        raise PromptImportError(
            "each record needs a non-empty text field named 'prompt' or 'text'.", line=line
        )
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptImportError(
            f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}.", line=line
        )
    external_id = str(record.get("id", "") or "")
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        # Cut short, two long ids could become one, and a re-import would match the wrong one.
        raise PromptImportError(
            f"the id has {len(external_id)} characters; the limit is {MAX_EXTERNAL_ID_CHARS}.",
            line=line,
        )
    metadata = {k: v for k, v in record.items() if k not in (*PROMPT_TEXT_KEYS, "id")}
    return ParsedPrompt(text=text.strip(), external_id=external_id, metadata=metadata, line=line)


def _parse_jsonl(text: str) -> list[ParsedPrompt]:
    prompts = []
    # Lines end at "\n" only: str.splitlines also splits at U+2028, U+2029, \x0b and
    # others, which JSON strings may hold unescaped, and so cut valid records in two.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = loads_checked(line)
        except json.JSONDecodeError as error:
            raise PromptImportError(f"not valid JSON ({error.msg}).", line=line_number) from None
        except UnsafeJson as error:
            raise PromptImportError(str(error), line=line_number) from None
        if not isinstance(record, dict):
            raise PromptImportError("each line must be a JSON object.", line=line_number)
        prompts.append(_parsed_prompt(record, line_number))
    return prompts


def _parse_csv(text: str) -> list[ParsedPrompt]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not set(PROMPT_TEXT_KEYS) & set(reader.fieldnames):
        raise PromptImportError("the CSV header needs a column named 'prompt' or 'text'.", line=1)
    prompts = []
    try:
        for record in reader:
            if None in record:
                raise PromptImportError(
                    "this row has more fields than the header.", line=reader.line_num
                )
            try:
                check_json_value(record)  # the cells become text and metadata
            except UnsafeJson as error:
                raise PromptImportError(str(error), line=reader.line_num) from None
            prompts.append(_parsed_prompt(record, reader.line_num))
    except csv.Error as error:
        raise PromptImportError(f"not valid CSV ({error}).", line=reader.line_num) from None
    return prompts


def parse_prompt_file(*, file_name: str, content: bytes) -> list[ParsedPrompt]:
    """Parse a whole JSONL or CSV file, or raise PromptImportError naming the first bad line."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise PromptImportError("the file is not UTF-8 text.", line=line) from None
    lowered = file_name.lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        prompts = _parse_jsonl(text)
    elif lowered.endswith(".csv"):
        prompts = _parse_csv(text)
    else:
        raise PromptImportError("the file name must end in .jsonl or .csv.")
    if not prompts:
        raise PromptImportError("the file holds no prompts.")
    return prompts


def _in_chunks(values: set, size: int = 500):
    """Sorted chunks, so that an ``__in`` lookup stays under SQLite's parameter limit."""
    ordered = sorted(values)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _prompts_to_add(project: Project, parsed: list[ParsedPrompt]) -> tuple[list[ParsedPrompt], int]:
    """The file's prompts that the project lacks, each once, and how many of the file's
    prompts the project already holds.

    A row with an id is the prompt of that id: already there when the project has a prompt
    with that external id and the same text; the same id with other text (in the project
    or earlier in the file) refuses the file, naming the line. A row without an id is
    already there when a prompt of the labeling pool has exactly its text (stripped, as it
    is stored). Repeats within the file count once.
    """
    pool = Prompt.objects.labeling().filter(project=project)
    stored_texts_of_id: dict[str, set[str]] = {}
    for chunk in _in_chunks({p.external_id for p in parsed if p.external_id}):
        for external_id, text in pool.filter(external_id__in=chunk).values_list(
            "external_id", "text"
        ):
            stored_texts_of_id.setdefault(external_id, set()).add(text)
    stored_texts = set()
    for chunk in _in_chunks({p.text for p in parsed if not p.external_id}):
        stored_texts.update(pool.filter(text__in=chunk).values_list("text", flat=True))

    to_add, already_there = [], 0
    first_of_id: dict[str, ParsedPrompt] = {}
    texts_in_file: set[str] = set()
    for prompt in parsed:
        if prompt.external_id:
            earlier = first_of_id.get(prompt.external_id)
            if earlier is not None:
                if earlier.text != prompt.text:
                    raise PromptImportError(
                        f"id {prompt.external_id!r} is also on line {earlier.line}, with other "
                        "text; give each prompt its own id.",
                        line=prompt.line,
                    )
                continue
            first_of_id[prompt.external_id] = prompt
            texts_in_file.add(prompt.text)
            stored = stored_texts_of_id.get(prompt.external_id)
            if stored is None:
                to_add.append(prompt)
            elif prompt.text in stored:
                already_there += 1
            else:
                raise PromptImportError(
                    f"the project already has a prompt with id {prompt.external_id!r} and other "
                    "text; give this prompt a new id (or fix its text) and import the file again.",
                    line=prompt.line,
                )
        elif prompt.text not in texts_in_file:
            texts_in_file.add(prompt.text)
            if prompt.text in stored_texts:
                already_there += 1
            else:
                to_add.append(prompt)
    return to_add, already_there


def prompts_import(*, project: Project, file_name: str, content: bytes, user=None) -> PromptImport:
    """Load the file's new prompts, or nothing: a bad record refuses the whole file.

    Importing a file again adds nothing (see ``_prompts_to_add`` for what counts as the same
    prompt). The import is recorded even when every prompt was already there, so the
    history shows it: ``prompt_count`` new prompts, ``existing_count`` already there.
    """
    parsed = parse_prompt_file(file_name=file_name, content=content)
    with transaction.atomic():
        # Two imports of one file at once: the second waits here, then finds the first's
        # prompts (each statement reads what is committed, under read committed).
        Project.objects.select_for_update().filter(pk=project.pk).first()
        to_add, already_there = _prompts_to_add(project, parsed)
        batch = PromptImport.objects.create(
            project=project,
            file_name=file_name[:255],
            prompt_count=len(to_add),
            existing_count=already_there,
            created_by=user,
        )
        Prompt.objects.bulk_create(
            Prompt(
                project=project,
                text=p.text,
                external_id=p.external_id,
                metadata=p.metadata,
                source_import=batch,
            )
            for p in to_add
        )
    return batch
