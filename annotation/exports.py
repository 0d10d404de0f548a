"""Datasets in the formats training libraries read as they are.

- dpo: TRL's conversational preference rows {prompt, chosen, rejected}, from comparisons
  with a winner and from rankings expanded to their k(k-1)/2 pairs.
- sft: TRL's conversational language-modeling rows {messages}, from demonstrations.
- ranking: {prompt, responses (best first), all_bad}, for listwise methods (RRHF).
- rating: {prompt, response, scores, flags}.
Only current human and reviewed judgments count: superseded and rejected ones are left out.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import IO

from annotation.models import Judgment, Project, Response, TaskKind

FORMATS = ("dpo", "sft", "ranking", "rating")


def _current(project: Project, kind: str):
    return (
        Judgment.objects.filter(project=project, kind=kind, superseded_by__isnull=True)
        .exclude(reviews__decision="rejected")
        .select_related("prompt")
        .order_by("created_at", "id")
    )


def _conversation(judgment: Judgment) -> list[dict]:
    return [*judgment.context, *judgment.prompt.as_conversation()]


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _winner_shares(project: Project) -> dict[int, Counter]:
    """Per comparison task, how many current judgments picked each response (None: a tie
    or both bad), for the agreement of a training row."""
    shares: dict[int, Counter] = defaultdict(Counter)
    rows = _current(project, TaskKind.COMPARISON).values_list(
        "task_id", "choice", "response_a_id", "response_b_id"
    )
    for task_id, choice, response_a, response_b in rows.iterator(chunk_size=2000):
        winner = {Judgment.Choice.A: response_a, Judgment.Choice.B: response_b}.get(choice)
        shares[task_id][winner] += 1
    return shares


def _comparison_pairs(project: Project, *, with_metadata: bool = False) -> Iterator[dict]:
    decisive = _current(project, TaskKind.COMPARISON).filter(
        choice__in=[Judgment.Choice.A, Judgment.Choice.B]
    )
    shares = _winner_shares(project) if with_metadata else {}
    for judgment in decisive.select_related("response_a", "response_b").iterator(chunk_size=500):
        chosen, rejected = judgment.chosen_and_rejected
        row = {
            "prompt": _conversation(judgment),
            "chosen": _reply(chosen.text),
            "rejected": _reply(rejected.text),
        }
        if with_metadata:
            votes = shares.get(judgment.task_id, Counter({chosen.pk: 1}))
            row["margin"] = judgment.strength
            row["agreement"] = votes[chosen.pk] / sum(votes.values())
        yield row


def _ranking_pairs(project: Project, *, with_metadata: bool = False) -> Iterator[dict]:
    from annotation.kinds.ranking import ranking_pairs

    for judgment in _current(project, TaskKind.RANKING).iterator(chunk_size=200):
        pairs = ranking_pairs(judgment)
        texts = Response.objects.in_bulk({pk for pair in pairs for pk in pair})
        for chosen, rejected in pairs:
            row = {
                "prompt": _conversation(judgment),
                "chosen": _reply(texts[chosen].text),
                "rejected": _reply(texts[rejected].text),
            }
            if with_metadata:
                # Places apart in the ranking: first against last is the clearest pair.
                row["margin"] = judgment.ranking.index(rejected) - judgment.ranking.index(chosen)
            yield row


def dpo_rows(project: Project) -> Iterator[dict]:
    """TRL's conversational preference form: DPOTrainer loads these rows unchanged."""
    yield from _comparison_pairs(project)
    yield from _ranking_pairs(project)


def training_preference_rows(project: Project) -> Iterator[dict]:
    """``dpo_rows`` plus what reward margins and curricula use: ``margin`` (the labeler's
    strength 1-4 for a comparison, the places apart for a ranking pair; None when not
    given) and ``agreement`` (the share of the task's current judgments that picked the
    same winner; comparisons only)."""
    yield from _comparison_pairs(project, with_metadata=True)
    yield from _ranking_pairs(project, with_metadata=True)


def sft_rows(project: Project) -> Iterator[dict]:
    from annotation.kinds.demonstration import sft_rows as demonstration_rows

    yield from demonstration_rows(project)


def ranking_rows(project: Project) -> Iterator[dict]:
    for judgment in _current(project, TaskKind.RANKING).iterator(chunk_size=200):
        texts = Response.objects.in_bulk(judgment.ranking)
        yield {
            "prompt": _conversation(judgment),
            "responses": [texts[pk].text for pk in judgment.ranking],
            "all_bad": judgment.all_bad,
        }


def rating_rows(project: Project) -> Iterator[dict]:
    ratings = _current(project, TaskKind.RATING).select_related("rated_response")
    for judgment in ratings.iterator(chunk_size=500):
        yield {
            "prompt": _conversation(judgment),
            "response": judgment.rated_response.text,
            "scores": judgment.scores,
            "flags": judgment.flags,
        }


ROWS = {"dpo": dpo_rows, "sft": sft_rows, "ranking": ranking_rows, "rating": rating_rows}


def preference_rows(project: Project, *, export_format: str) -> Iterator[dict]:
    if export_format not in FORMATS:
        raise ValueError(f"Unknown format {export_format!r}; choose one of {', '.join(FORMATS)}.")
    return ROWS[export_format](project)


def jsonl_lines(rows) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(rows, stream: IO[str]) -> int:
    count = 0
    for line in jsonl_lines(rows):
        stream.write(line)
        count += 1
    return count
