"""Preference datasets in the formats training libraries read as they are."""

import json
from collections.abc import Iterator
from typing import IO

from annotation.models import Judgment, Project, TaskKind

FORMATS = ("dpo",)


def _current_decisive_comparisons(project: Project):
    """Judgments not superseded by a correction, with a winner (ties and both-bad left out)."""
    return (
        Judgment.objects.filter(
            project=project,
            kind=TaskKind.COMPARISON,
            superseded_by__isnull=True,
            choice__in=[Judgment.Choice.A, Judgment.Choice.B],
        )
        .select_related("prompt", "response_a", "response_b")
        .order_by("created_at", "id")
    )


def dpo_rows(project: Project) -> Iterator[dict]:
    """TRL's conversational preference form: DPOTrainer loads these rows unchanged."""
    for comparison in _current_decisive_comparisons(project).iterator(chunk_size=500):
        chosen, rejected = comparison.chosen_and_rejected
        yield {
            "prompt": comparison.prompt.as_conversation(),
            "chosen": [{"role": "assistant", "content": chosen.text}],
            "rejected": [{"role": "assistant", "content": rejected.text}],
        }


def preference_rows(project: Project, *, export_format: str) -> Iterator[dict]:
    if export_format not in FORMATS:
        raise ValueError(f"Unknown format {export_format!r}; choose one of {', '.join(FORMATS)}.")
    return dpo_rows(project)


def jsonl_lines(rows) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(rows, stream: IO[str]) -> int:
    count = 0
    for line in jsonl_lines(rows):
        stream.write(line)
        count += 1
    return count
