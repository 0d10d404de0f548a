"""Writes of datasets: export files on disk (the rows come from selectors.py)."""

from collections.abc import Iterable
from pathlib import Path

from annotation.datasets.selectors import write_jsonl


def jsonl_file_write(*, rows: Iterable[dict], path: Path) -> int:
    """Write ``rows`` to ``path`` as JSONL, whole or not at all: they go to ``<path>.part``,
    which replaces ``path`` once every row is written, so a reader never sees half a file.
    Returns how many rows were written."""
    partial = path.with_name(path.name + ".part")
    with partial.open("w", encoding="utf-8") as stream:
        count = write_jsonl(rows, stream)
    partial.replace(path)
    return count
