"""Read dataset files as a stream of raw rows and map them to ``ImportedRecord`` values.

Files may be far larger than memory, so nothing here holds more than one row (or, for
Parquet, one batch of rows) at a time:

- JSON Lines (``.jsonl``, ``.json``, ``.ndjson``): the binary file is read line by line and
  each line decoded and parsed on its own, so a line of invalid UTF-8 or bad JSON is reported
  with its number. A ``.json`` file must hold one object per line too; a JSON array is
  refused (convert it with ``jq -c '.[]'``), as it cannot be parsed one record at a time
  with the standard library. Blank lines are skipped but counted.
- CSV (``.csv``): the csv module over a UTF-8 text wrapper (a leading BOM is dropped).
  Row N is line N + 1, the header being line 1. Bytes that are not UTF-8 are let through
  the wrapper (``surrogateescape``) and caught per row, so the error names its row.
- Parquet (``.parquet``): ``pyarrow.parquet.ParquetFile.iter_batches``; row index + 1.

``read_records`` then hands the rows to the format's reader (one module per format family);
``auto`` picks the format from the first row's keys (``detect.format_of_row``).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from . import detect, hh_rlhf, oasst, simple, stackexchange, trl, ultrafeedback
from .fields import Rows
from .records import ImportedRecord, ImportFormatError

FORMATS = ("auto", "trl", "hh-rlhf", "ultrafeedback", "oasst", "stackexchange", "sft", "prompts")

READERS = {
    "trl": trl.records,
    "hh-rlhf": hh_rlhf.records,
    "ultrafeedback": ultrafeedback.records,
    "oasst": oasst.records,
    "stackexchange": stackexchange.records,
    "sft": simple.sft_records,
    "prompts": simple.prompt_records,
}

JSON_LINES = (".jsonl", ".json", ".ndjson")
PARQUET_BATCH_ROWS = 1024


def read_records(path: Path, format: str) -> Iterator[ImportedRecord]:
    """The file's records, one at a time; raises ImportFormatError at the first bad one."""
    if format not in FORMATS:
        raise ImportFormatError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    rows = iter_rows(Path(path))
    if format == "auto":
        first = next(rows, None)
        if first is None:
            return iter(())
        format = detect.format_of_row(first[1], first[0])
        rows = itertools.chain([first], rows)
    return READERS[format](rows)


def detect_format(path: Path) -> str:
    """The format ``auto`` would pick for this file, from its first row."""
    for line, row in iter_rows(Path(path)):
        return detect.format_of_row(row, line)
    raise ImportFormatError("the file holds no records")


def preview(path: Path, format: str, limit: int = 5) -> list[tuple[dict, ImportedRecord]]:
    """The first ``limit`` records with the raw row each came from (for OASST's flat rows,
    the prompter's message row), for an upload page to show."""
    seen: dict[int, dict] = {}

    def remembered(rows: Rows) -> Iterator[tuple[int, dict]]:
        for line, row in rows:
            seen[line] = row
            yield line, row

    format = detect_format(path) if format == "auto" else format
    if format not in READERS:
        raise ImportFormatError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    records = READERS[format](remembered(iter_rows(Path(path))))
    return [(seen[record.line], record) for record in itertools.islice(records, limit)]


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, row dict) for every record of the file, streamed."""
    suffix = path.suffix.lower()
    if suffix in JSON_LINES:
        return _json_lines(path)
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise ImportFormatError(
        f"unknown file extension '{path.suffix}'; use .jsonl, .json, .ndjson, .csv or .parquet"
    )


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if line == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ImportFormatError(f"invalid UTF-8 at byte {error.start}", line=line) from None
            if not decoded.strip():
                continue
            yield line, _json_object(decoded, line)


def _json_object(decoded: str, line: int) -> dict:
    try:
        row = json.loads(decoded)
    except json.JSONDecodeError as error:
        if line == 1 and decoded.lstrip().startswith("["):
            raise ImportFormatError(
                "the file is a JSON array; give one JSON object per line (JSON Lines)", line=line
            ) from None
        raise ImportFormatError(f"malformed JSON: {error.msg}", line=line) from None
    if not isinstance(row, dict):
        raise ImportFormatError(
            f"a line must hold a JSON object, not {type(row).__name__}", line=line
        )
    return row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        line = 1
        try:
            for line, row in enumerate(reader, start=2):
                yield line, _csv_row(row, line)
        except csv.Error as error:
            raise ImportFormatError(f"malformed CSV: {error}", line=line + 1) from None


def _csv_row(row: dict, line: int) -> dict:
    if None in row:
        raise ImportFormatError("the row has more fields than the header", line=line)
    for value in row.values():
        if value:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ImportFormatError("invalid UTF-8", line=line) from None
    return row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # only Parquet imports need pyarrow loaded

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file it cannot read
        raise ImportFormatError(f"not a readable Parquet file: {error}") from None
    line = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            line += 1
            yield line, row
