"""Export a dataset version's rows in the formats training libraries read, and its card.

Plain Python (no Django): a version is a JSONL file of rows (written by ``annotation/
datasets/versions.py``); this module turns those rows into TRL's dataset types and writes them.

A version row: ``id`` (stable, e.g. "c:123"), ``kind`` (the version's), ``prompt`` (chat
messages [{role, content}] ending with the user turn), ``source`` ("human", "ai", "review" or
"import"), ``source_name`` ("labelers", "ai" or an import's source name), ``language`` (ISO
639-1 or ""), ``prompt_id``, ``external_id``, ``labeler`` (a pseudonym, an AI judge's name or
"import:<source>"), ``judged_at`` (ISO 8601 UTC; "" for prompts), ``meta`` (provenance ids),
and by kind:

- preference: ``responses`` (2 or more, best first), ``scores`` (same order, or null) and
  ``soft_label`` (P(responses[0] beats responses[1]) for two-response rows, or null);
- sft: ``completion`` (the ideal assistant reply);
- kto: ``completion`` and ``label`` (bool: desirable or not);
- prompts: nothing more.

- ``export_rows`` maps version rows to one format, streaming: a row in, its export rows out.
  ``prompt`` keeps a set of 64-bit prompt digests to give each prompt once, not the rows.
- ``write_export`` writes JSONL, Parquet (``pyarrow.parquet.ParquetWriter``, batches of
  10,000 rows) or a ``datasets`` folder (``save_to_disk``), whole or not at all: everything
  goes to a temporary name beside the output and is renamed into place at the end.
- ``dataset_card`` writes a Hugging Face style README.md.

Formats (conversational by default; ``conversational=False`` gives TRL's standard form):

- dpo: {prompt, chosen, rejected} per pair of a preference row; the pairs of a row are
  every (i, j), i < j, with scores null or scores[i] > scores[j] (equal scores give none).
- reward: {chosen, rejected} with the prompt inside each (TRL's implicit prompt), per pair.
- kto: {prompt, completion, label}: kto rows as they are; a preference row gives its best
  response (True) and its worst (False), unless their scores are equal.
- prompt: {prompt}, each distinct prompt once, from any kind.
- completion: {prompt, completion} from sft rows and a preference row's best response.
- sft: {messages} (standard: {text}) from sft rows and a preference row's best response.
- ranking: {prompt, responses (best first), scores or null} from preference rows.
- rating: {prompt, response, score} per scored response of preference rows.

Every exported row also has ``source``, ``source_name``, ``language`` and the analysis keys
(``prompt_id``, ``external_id``, ``labeler``, ``judged_at``; empty for a version written
before them), so every row has the same keys and ``datasets.load_dataset`` reads a mixed
file. CSV (``csv_lines``) is for spreadsheets: the tabular formats only, a conversation as
its text, lists as JSON, and a text cell that starts like a formula gets a leading "'".

Standard form: the prompt is the last user turn as text, the turns before it rendered
"Role: content" above it; responses are strings; reward's chosen/rejected and sft's text are
the prompt text, a blank line, then the response.

We write the mapping ourselves: TRL converts between its own types (``unpair_preference_
dataset``, ``extract_prompt``) but knows nothing of our version rows, scores and ties.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

EXPORT_FORMATS = ("dpo", "sft", "kto", "prompt", "completion", "reward", "ranking", "rating")

FORMATS_OF_KIND = {
    "preference": ("dpo", "reward", "kto", "prompt", "completion", "sft", "ranking", "rating"),
    "sft": ("sft", "completion", "prompt"),
    "kto": ("kto", "prompt"),
    "prompts": ("prompt",),
}

CONTAINERS = ("jsonl", "parquet", "disk", "csv")
PARQUET_BATCH_ROWS = 10_000
ARROW_CHUNK_ROWS = 1_000
PROVENANCE_KEYS = ("source", "source_name", "language")
# For analysis: the prompt's ids, who judged (a pseudonym, a judge, an import) and when. A
# version written before these existed gives None / "".
ANALYSIS_KEYS = ("prompt_id", "external_id", "labeler", "judged_at")
FORMAT_LIST = ", ".join(EXPORT_FORMATS)


def check_format(kind: str, fmt: str) -> None:
    """Raise ValueError unless rows of ``kind`` can fill the export format ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}: choose one of {FORMAT_LIST}.")
    if kind not in FORMATS_OF_KIND:
        raise ValueError(f"Unknown version kind {kind!r}: one of {', '.join(FORMATS_OF_KIND)}.")
    if fmt not in FORMATS_OF_KIND[kind]:
        raise ValueError(
            f"A {kind!r} version cannot be exported as {fmt!r}: "
            f"it gives {', '.join(FORMATS_OF_KIND[kind])}."
        )


# --- reading ---------------------------------------------------------------------------


def read_version_rows(path: Path) -> Iterator[dict]:
    """The rows of a version file, one at a time (blank lines skipped)."""
    loads = orjson.loads
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                yield loads(line)


# --- mapping ---------------------------------------------------------------------------


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def prompt_text(messages: list[dict]) -> str:
    """The prompt as plain text: the last turn, with the turns before it above it."""
    if not messages:
        return ""
    context = [f"{turn['role'].capitalize()}: {turn['content']}" for turn in messages[:-1]]
    return "\n\n".join([*context, messages[-1]["content"]])


def _provenance(row: dict) -> dict:
    strings = {key: row.get(key) or "" for key in (*PROVENANCE_KEYS, *ANALYSIS_KEYS)}
    return {**strings, "prompt_id": row.get("prompt_id")}


def preference_pairs(row: dict) -> Iterator[tuple[str, str]]:
    """(chosen, rejected) for every i < j with scores null or scores[i] > scores[j]."""
    responses, scores = row["responses"], row.get("scores")
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if scores is None or scores[i] > scores[j]:
                yield responses[i], responses[j]


def _best_response(row: dict) -> str:
    return row["responses"][0] if row["kind"] == "preference" else row["completion"]


def _dpo(row: dict, conversational: bool) -> Iterator[dict]:
    prompt = row["prompt"] if conversational else prompt_text(row["prompt"])
    for chosen, rejected in preference_pairs(row):
        if conversational:
            chosen, rejected = _assistant(chosen), _assistant(rejected)
        yield {"prompt": prompt, "chosen": chosen, "rejected": rejected, **_provenance(row)}


def _reward(row: dict, conversational: bool) -> Iterator[dict]:
    for chosen, rejected in preference_pairs(row):
        if conversational:
            pair = {"chosen": row["prompt"] + _assistant(chosen),
                    "rejected": row["prompt"] + _assistant(rejected)}  # fmt: skip
        else:
            text = prompt_text(row["prompt"])
            pair = {"chosen": f"{text}\n\n{chosen}", "rejected": f"{text}\n\n{rejected}"}
        yield {**pair, **_provenance(row)}


def _kto_row(row: dict, completion: str, label: bool, conversational: bool) -> dict:
    if conversational:
        return {"prompt": row["prompt"], "completion": _assistant(completion), "label": label,
                **_provenance(row)}  # fmt: skip
    return {"prompt": prompt_text(row["prompt"]), "completion": completion, "label": label,
            **_provenance(row)}  # fmt: skip


def _kto(row: dict, conversational: bool) -> Iterator[dict]:
    if row["kind"] == "kto":
        yield _kto_row(row, row["completion"], bool(row["label"]), conversational)
        return
    responses, scores = row["responses"], row.get("scores")
    if scores is not None and not scores[0] > scores[-1]:
        return  # a tie: the worst response is no worse than the best
    yield _kto_row(row, responses[0], True, conversational)
    yield _kto_row(row, responses[-1], False, conversational)


def _completion(row: dict, conversational: bool) -> Iterator[dict]:
    completion = _best_response(row)
    if conversational:
        yield {"prompt": row["prompt"], "completion": _assistant(completion), **_provenance(row)}
    else:
        yield {"prompt": prompt_text(row["prompt"]), "completion": completion, **_provenance(row)}


def _sft(row: dict, conversational: bool) -> Iterator[dict]:
    completion = _best_response(row)
    if conversational:
        yield {"messages": row["prompt"] + _assistant(completion), **_provenance(row)}
    else:
        yield {"text": f"{prompt_text(row['prompt'])}\n\n{completion}", **_provenance(row)}


def _floats(scores: list | None) -> list[float] | None:
    return None if scores is None else [float(score) for score in scores]


def _ranking(row: dict, conversational: bool) -> Iterator[dict]:
    prompt = row["prompt"] if conversational else prompt_text(row["prompt"])
    yield {"prompt": prompt, "responses": list(row["responses"]),
           "scores": _floats(row.get("scores")), **_provenance(row)}  # fmt: skip


def _rating(row: dict, conversational: bool) -> Iterator[dict]:
    scores = row.get("scores")
    if scores is None:
        return
    prompt = row["prompt"] if conversational else prompt_text(row["prompt"])
    for response, score in zip(row["responses"], scores, strict=True):
        yield {"prompt": prompt, "response": response, "score": float(score), **_provenance(row)}


_MAPPERS = {
    "dpo": _dpo,
    "reward": _reward,
    "kto": _kto,
    "completion": _completion,
    "sft": _sft,
    "ranking": _ranking,
    "rating": _rating,
}


def prompt_digest(messages: list[dict]) -> int:
    """64 bits of BLAKE2b over the prompt's canonical JSON: enough to tell prompts apart."""
    text = json.dumps(messages, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _distinct_prompts(rows: Iterable[dict], conversational: bool) -> Iterator[dict]:
    seen: set[int] = set()
    for row in rows:
        digest = prompt_digest(row["prompt"])
        if digest in seen:
            continue
        seen.add(digest)
        prompt = row["prompt"] if conversational else prompt_text(row["prompt"])
        yield {"prompt": prompt, **_provenance(row)}


def _checked(rows: Iterable[dict], fmt: str) -> Iterator[dict]:
    fits = {kind for kind, formats in FORMATS_OF_KIND.items() if fmt in formats}
    for row in rows:
        if row["kind"] not in fits:
            check_format(row["kind"], fmt)  # raises, saying why
        yield row


def export_rows(rows: Iterable[dict], fmt: str, *, conversational: bool = True) -> Iterator[dict]:
    """The rows of export format ``fmt`` made from version rows, as they stream by."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}: choose one of {FORMAT_LIST}.")
    checked = _checked(rows, fmt)
    if fmt == "prompt":
        yield from _distinct_prompts(checked, conversational)
        return
    mapper = _MAPPERS[fmt]
    for row in checked:
        yield from mapper(row, conversational)


# --- writing ---------------------------------------------------------------------------


def _temporary_beside(output: Path) -> Path:
    return output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_jsonl(rows: Iterator[dict], path: Path) -> int:
    dumps = orjson.dumps
    count = 0
    with open(path, "wb") as out:
        lines: list[bytes] = []
        for row in rows:
            lines.append(dumps(row))
            if len(lines) == 1000:
                out.write(b"\n".join(lines) + b"\n")
                count += len(lines)
                lines.clear()
        if lines:
            out.write(b"\n".join(lines) + b"\n")
            count += len(lines)
    return count


def _parquet_types(fmt: str | None, conversational: bool) -> dict:
    """The Arrow type of each column of a format (for a column null in the first batch,
    and for an empty export)."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    text = messages if conversational else pa.string()
    columns = {
        "dpo": {"prompt": text, "chosen": text, "rejected": text},
        "reward": {"chosen": text, "rejected": text},
        "kto": {"prompt": text, "completion": text, "label": pa.bool_()},
        "prompt": {"prompt": text},
        "completion": {"prompt": text, "completion": text},
        "sft": {"messages": messages} if conversational else {"text": pa.string()},
        "ranking": {
            "prompt": text,
            "responses": pa.list_(pa.string()),
            "scores": pa.list_(pa.float64()),
        },  # fmt: skip
        "rating": {"prompt": text, "response": pa.string(), "score": pa.float64()},
    }.get(fmt, {})
    strings = {key: pa.string() for key in (*PROVENANCE_KEYS, *ANALYSIS_KEYS)}
    return {**columns, **strings, "prompt_id": pa.int64()}


def _batch_schema(batch: list[dict], known: dict):
    """The first batch's schema, with columns it leaves all null typed from ``known``."""
    import pyarrow as pa

    inferred = pa.Table.from_pylist(batch).schema
    fields = [
        pa.field(field.name, known[field.name])
        if pa.types.is_null(field.type) and field.name in known
        else field
        for field in inferred
    ]
    return pa.schema(fields)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` items (the last may be shorter), read lazily: Python 3.12's
    ``itertools.batched``, which 3.11 lacks."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _record_batches(rows: Iterator[dict], *, fmt: str | None, conversational: bool):
    """The rows as Arrow record batches of ``ARROW_CHUNK_ROWS``, all with the schema of the
    first (typed from the format where it leaves a column all null); None if no rows."""
    import pyarrow as pa

    known = _parquet_types(fmt, conversational)
    chunks = batched(rows, ARROW_CHUNK_ROWS)
    first = next(chunks, None)
    if first is None:
        return pa.schema(list(known.items())), iter(())
    schema = _batch_schema(first, known)
    keys = set(schema.names)

    def converted() -> Iterator:
        for chunk in itertools.chain([first], chunks):
            if any(row.keys() != keys for row in chunk):
                raise ValueError(f"Every exported row must have the keys {sorted(keys)}.")
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)

    return schema, converted()


def _write_parquet(rows: Iterator[dict], path: Path, *, fmt: str | None,
                   conversational: bool = True) -> int:  # fmt: skip
    """Row groups of ``PARQUET_BATCH_ROWS``, converted to Arrow ``ARROW_CHUNK_ROWS`` at a
    time so that few rows are held as Python objects at once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, batches = _record_batches(rows, fmt=fmt, conversational=conversational)
    count, pending = 0, []
    with pq.ParquetWriter(str(path), schema) as writer:
        for batch in batches:
            pending.append(batch)
            count += batch.num_rows
            if sum(batch.num_rows for batch in pending) >= PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_batches(pending))
                pending = []
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
    return count


def _write_disk(rows: Iterator[dict], folder: Path, *, fmt: str, conversational: bool) -> int:
    """A ``datasets`` folder. We write an Arrow stream file batch by batch, open it with
    ``Dataset.from_file`` (memory-mapped, no copy) and let ``save_to_disk`` write the folder:
    ``Dataset.from_parquet`` or ``from_generator`` would hold far more memory."""
    import pyarrow as pa
    from datasets import Dataset

    folder.mkdir()
    stream = folder / "rows.arrow"
    schema, batches = _record_batches(rows, fmt=fmt, conversational=conversational)
    count = 0
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            count += batch.num_rows
    Dataset.from_file(str(stream)).save_to_disk(str(folder / "dataset"))
    return count


def _conversational(first: dict | None) -> bool:
    """Whether export rows hold messages (True) or TRL's standard plain strings."""
    if first is None:
        return True
    value = first.get("messages", first.get("prompt", first.get("chosen")))
    return not isinstance(value, str)


def _peeked(rows: Iterator[dict]) -> tuple[dict | None, Iterator[dict]]:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return None, iter(())

    def chained() -> Iterator[dict]:
        yield first
        yield from rows

    return first, chained()


def write_export(rows: Iterator[dict], output: Path, *, fmt: str, container: str = "jsonl") -> int:
    """Write export rows to ``output`` as ``container``; returns the rows written.

    Whole or not at all: on any error nothing is left at ``output`` (an earlier file there
    stays as it was), and a folder already at ``output`` is replaced only at the end.
    """
    if container not in CONTAINERS:
        raise ValueError(f"Unknown container {container!r}: choose one of {', '.join(CONTAINERS)}.")
    output = Path(output)
    first, rows = _peeked(rows)
    conversational = _conversational(first)
    temporary = _temporary_beside(output)
    try:
        if container == "jsonl":
            count = _write_jsonl(rows, temporary)
        elif container == "csv":
            check_csv_format(fmt)
            count = _write_csv(rows, temporary)
        elif container == "parquet":
            count = _write_parquet(rows, temporary, fmt=fmt, conversational=conversational)
        else:
            count = _write_disk(rows, temporary, fmt=fmt, conversational=conversational)
            _replace_folder(temporary / "dataset", output)
            _remove(temporary)
            return count
        os.replace(temporary, output)
        return count
    except BaseException:
        _remove(temporary)
        raise


def _replace_folder(new: Path, output: Path) -> None:
    old = _temporary_beside(output) if output.exists() else None
    if old is not None:
        os.replace(output, old)
    os.replace(new, output)
    if old is not None:
        _remove(old)


# --- CSV ---------------------------------------------------------------------------------

# Formats whose rows are flat enough for a spreadsheet; ranking rows hold a list of replies.
CSV_FORMATS = ("dpo", "reward", "kto", "prompt", "completion", "sft", "rating")
# A cell a spreadsheet would read as a formula (OWASP CSV injection): these first characters.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_csv_format(fmt: str) -> None:
    if fmt not in CSV_FORMATS:
        raise ValueError(
            f"CSV is for the tabular formats ({', '.join(CSV_FORMATS)}); "
            f"{fmt!r} rows hold lists: export them as JSONL."
        )


def csv_safe(text: str) -> str:
    """The text with a leading apostrophe where a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # a number, even a negative one, is data, not a formula
    if isinstance(value, list) and value and all(_is_turn(turn) for turn in value):
        value = value[0]["content"] if len(value) == 1 else prompt_text(value)
    elif not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return csv_safe(value)


def _is_turn(value) -> bool:
    return isinstance(value, dict) and "role" in value and "content" in value


def csv_record(row: dict) -> dict:
    """One export row as flat text cells: a conversation as its text (earlier turns
    "Role: content" above the last), sft's messages as prompt and completion, lists and
    objects as JSON, every cell formula-escaped."""
    if isinstance(row.get("messages"), list) and row["messages"]:
        *prompt, reply = row["messages"]
        rest = {key: value for key, value in row.items() if key != "messages"}
        row = {"prompt": prompt, "completion": reply.get("content", ""), **rest}
    return {key: _cell(value) for key, value in row.items()}


def csv_lines(rows: Iterable[dict]) -> Iterator[str]:
    """CSV text, a header line then a line per row (Python's csv module quotes commas,
    quotes and newlines); the header is the first row's keys."""
    buffer = io.StringIO()
    writer = None
    for row in rows:
        record = csv_record(row)
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(record), restval="")
            writer.writeheader()
        writer.writerow(record)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _write_csv(rows: Iterator[dict], path: Path) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        for line in csv_lines(rows):
            out.write(line)
            count += 1
    return count


# --- the card --------------------------------------------------------------------------

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"))  # fmt: skip

KIND_SUMMARY = {
    "preference": "prompts with two or more responses, best first, and their scores",
    "sft": "prompts with the ideal assistant reply",
    "kto": "prompts with one reply each, labelled desirable or not",
    "prompts": "prompts only",
}


def size_category(rows: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>100M"


def _yaml_list(key: str, values: list[str]) -> list[str]:
    if not values:
        return [f"{key}: []"]
    return [f"{key}:", *(f"- {json.dumps(value, ensure_ascii=False)}" for value in values)]


def _front_matter(*, name: str, kind: str, row_count: int, languages: list[str],
                  licence: str) -> str:  # fmt: skip
    lines = [
        "---",
        f"license: {json.dumps(licence or 'unknown')}",
        *_yaml_list("language", languages),
        *_yaml_list("task_categories", ["text-generation"]),
        *_yaml_list("size_categories", [size_category(row_count)]),
        *_yaml_list("tags", ["loop", kind, *FORMATS_OF_KIND.get(kind, ()), "trl"]),
        f"pretty_name: {json.dumps(name, ensure_ascii=False)}",
        "---",
    ]
    return "\n".join(lines)


def _count_table(heading: str, counts: dict) -> list[str]:
    if not counts:
        return [f"| {heading} | rows |", "|---|---:|", "| (none) | 0 |"]
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    rows = (f"| {key or '(not identified)'} | {value:,} |" for key, value in ordered)
    return [f"| {heading} | rows |", "|---|---:|", *rows]


def _fenced(text: str, info: str = "") -> list[str]:
    return [f"```{info}", text.replace("```", "'''"), "```"]


def _example_text(example, limit: int = 400) -> str:
    text = example if isinstance(example, str) else json.dumps(example, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _removed_section(removed: list[dict]) -> list[str]:
    if not removed:
        return ["No curation step removed or changed any row."]
    lines: list[str] = []
    for number, step in enumerate(removed, 1):
        title = step.get("step") or step.get("name") or f"step {number}"
        lines += ["", f"### {number}. {title}", ""]
        for key, value in step.items():
            if key not in ("step", "name", "examples"):
                lines.append(f"- {key}: {_example_text(value, 200)}")
        for example in step.get("examples") or []:
            lines += ["", *_fenced(_example_text(example), "text")]
    return lines


def _agreement_section(agreement: dict | None) -> list[str]:
    if not agreement:
        return ["Agreement: not measured."]
    return ["| measure | value |", "|---|---:|",
            *(f"| {key} | {value} |" for key, value in agreement.items())]  # fmt: skip


def _loading_section(name: str, kind: str) -> list[str]:
    code = (
        "from datasets import load_dataset, load_from_disk\n\n"
        f'rows = load_dataset("json", data_files="{name}-{kind}.jsonl", split="train")\n'
        f'rows = load_dataset("parquet", data_files="{name}-{kind}.parquet", split="train")\n'
        f'rows = load_from_disk("{name}-{kind}")  # a folder written with save_to_disk'
    )
    return ["Export the version in the format your trainer reads "
            f"({', '.join(FORMATS_OF_KIND.get(kind, ()))}), then:", "",
            *_fenced(code, "python")]  # fmt: skip


def dataset_card(*, name: str, version: int | str, kind: str, content_hash: str, row_count: int,
                 counts_by_source: dict, counts_by_language: dict, label_distribution: dict,
                 agreement: dict | None, recipe: dict, removed: list[dict], licence: str,
                 parents: list[str]) -> str:  # fmt: skip
    """A Hugging Face style README.md for a dataset version."""
    languages = sorted(code for code in counts_by_language if code)
    body = [
        _front_matter(name=name, kind=kind, row_count=row_count, languages=languages,
                      licence=licence),  # fmt: skip
        "", f"# {name} (version {version})", "",
        "## Summary", "",
        f"{row_count:,} rows of kind `{kind}`: {KIND_SUMMARY.get(kind, kind)}.",
        f"Content hash: `{content_hash}`.", "",
        "## Counts", "", "### By source", "", *_count_table("source", counts_by_source),
        "", "### By kind", "", *_count_table("kind", {kind: row_count}),
        "", "### By language", "", *_count_table("language", counts_by_language), "",
        "## Label distribution", "", *_count_table("label", label_distribution), "",
        "## Agreement", "", *_agreement_section(agreement), "",
        "## Curation recipe", "", *_fenced(json.dumps(recipe, ensure_ascii=False, indent=2,
                                                      sort_keys=True), "json"),  # fmt: skip
        "", "### What each step removed or changed", "", *_removed_section(removed), "",
        "## Parents", "", *([f"- {parent}" for parent in parents] or ["None: a first version."]),
        "", "## How to load", "", *_loading_section(name, kind), "",
        "## Licence", "", licence or "No licence given.", "",
    ]  # fmt: skip
    return "\n".join(body)


def split_card(card: str) -> tuple[str, str]:
    """(the YAML front matter without its fences, the markdown body) of a card."""
    if card.startswith("---\n"):
        front, _, body = card[4:].partition("\n---\n")
        return front, body
    return "", card


def write_card(path: Path, text: str) -> None:
    """Write the card whole or not at all."""
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
