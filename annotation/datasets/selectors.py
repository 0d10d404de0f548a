"""Datasets in the formats training libraries read as they are.

- dpo: TRL's conversational preference rows {prompt, chosen, rejected}, from comparisons
  with a winner and from rankings expanded to their k(k-1)/2 pairs.
- sft: TRL's conversational language-modeling rows {messages}, from demonstrations.
- ranking: {prompt, responses (best first), all_bad}, for listwise methods (RRHF).
- rating: {prompt, response, scores, flags}.
- kto: TRL's unpaired rows {prompt, completion, label} from ratings (against a threshold),
  comparisons (winner and loser, both of a both-bad) and rankings (best and worst).
Only current judgments count: superseded and rejected ones are left out. Imported judgments
(source "import", a dataset's labels) are never in: whatever the ``ai`` option, these
exports and the training snapshots built from them hold the project's own labels (see
``PEOPLE``); imported data is trained on through dataset versions. AI judgments sent
to review and not yet reviewed stay in (a review that rejects one takes it out; one that
corrects it puts the reviewer's judgment in its place).

AI labels (``ai``): ``exclude`` (people's only: labelers' and reviewers' corrections),
``trusted`` (people's, and AI judgments of the judges whose agreement with people clears the
project's threshold), ``include`` (people's and every AI judgment) or ``only`` (AI judgments
only). Left out (None), it is the project's setting, which leaves AI labels out unless an
admin chose otherwise (annotation/judges/trust.py).
Every row says where it came from, in the same keys on every row so that
``datasets.load_dataset("json")`` reads a mixed file (a column that is null in the first
rows and text later fails to load):

- ``source``: "human", "ai" or "review" (a reviewer's correction);
- ``judge``, ``constitution`` ("name vN"), ``principle``: the AI judge's name, the
  constitution version and principle it used; "" for people. Never the judge's endpoint
  or key.
- ``prompt_id``, ``external_id`` (the prompt's id here and in its source), ``labeler`` (a
  person's pseudonym, annotation/projects/pseudonyms.py; the AI judge's name;
  "import:<source>") and ``judged_at`` (ISO 8601, UTC), for analysis;
- preference pairs (dpo and the training rows) also carry ``soft_label``: the probability
  that ``chosen`` is better, the judge's own (position bias cancelled) for an AI
  judgment, 1.0 for a hard choice (a person's, or an AI judgment without one).
"""

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.db.models import Q

from annotation.judges.trust import AI_LABELS as AI_LABELS  # re-exported: pages, forms, commands
from annotation.judges.trust import AI_OPTIONS as AI_OPTIONS
from annotation.judges.trust import AiLabelPlan, ai_choice, ai_label_plan, trusted_judges
from annotation.judges.trust import check_ai as check_ai
from annotation.models import Judgment, Project, Response, TaskKind
from annotation.projects.pseudonyms import iso_utc, judgment_labeler
from annotation.prompts.alive import alive_judgments
from config.errors import ServiceError

FORMATS = ("dpo", "sft", "ranking", "rating", "kto")
# People's labels: labelers' and reviewers' corrections (a correction of an AI or imported
# label included: it is the reviewer's). Imported judgments (source "import") are no
# option's: these exports are of the project's own labels, and a dataset's labels reach
# training through dataset versions that select them by source.
PEOPLE = (Judgment.Source.HUMAN, Judgment.Source.REVIEW)
ANALYSIS_KEYS = ("prompt_id", "external_id", "labeler", "judged_at")


@dataclass(frozen=True)
class AiSelection:
    """A resolved ``ai`` choice: for ``trusted``, the (judge id, constitution id) pairs
    whose labels go in, read once per export."""

    ai: str
    judges: frozenset = frozenset()


def ai_selection(project: Project, ai: "str | AiSelection | None" = None) -> AiSelection:
    """The choice ``ai`` (None: the project's setting) with its trusted judges."""
    if isinstance(ai, AiSelection):
        return ai
    chosen = ai_choice(project=project, ai=ai)
    if chosen == "trusted":
        return AiSelection(chosen, trusted_judges(project=project))
    return AiSelection(chosen)


def current_judgments(project: Project, kinds):
    """The project's current judgments of ``kinds``: not superseded, not rejected in
    review, of prompts and responses nobody deleted; earliest first."""
    judgments = Judgment.objects.filter(
        project=project, kind__in=kinds, superseded_by__isnull=True
    ).exclude(reviews__decision="rejected")
    return alive_judgments(judgments).order_by("created_at", "id")


def trusted_labels(judges) -> Q:
    """The AI labels of these (judge id, constitution id or None) pairs; none if empty."""
    trusted = Q(pk__in=[])  # matches nothing: no judge is trusted
    for judge_id, constitution_id in judges:
        constitution = (
            Q(constitution_id=constitution_id)
            if constitution_id is not None
            else Q(constitution__isnull=True)
        )
        trusted |= Q(judge_id=judge_id) & constitution
    return trusted


def _current(project: Project, kind: str, selection: AiSelection):
    judgments = current_judgments(project, [kind]).select_related(
        "prompt", "judge", "constitution", "source_import"
    )
    people = Q(source__in=PEOPLE)
    ai = Q(source=Judgment.Source.AI)
    if selection.ai == "exclude":
        return judgments.filter(people)
    if selection.ai == "only":
        return judgments.filter(ai)
    if selection.ai == "trusted":
        return judgments.filter(people | (ai & trusted_labels(selection.judges)))
    return judgments.filter(people | ai)


def _provenance(judgment: Judgment) -> dict:
    """Where a row came from; the same keys on every row (see the module docstring)."""
    ai = judgment.source == Judgment.Source.AI
    return {
        "source": judgment.source,
        "judge": judgment.judge.name if ai and judgment.judge_id else "",
        "constitution": str(judgment.constitution) if ai and judgment.constitution_id else "",
        "principle": judgment.principle if ai else "",
        **_analysis_keys(judgment),
    }


def _analysis_keys(judgment: Judgment) -> dict:
    """The keys an analyst joins on: the prompt's ids, who judged, and when."""
    return {
        "prompt_id": judgment.prompt_id,
        "external_id": judgment.prompt.external_id,
        "labeler": judgment_labeler(
            source=judgment.source,
            project_id=judgment.project_id,
            user_id=judgment.labeler_id,
            judge_name=judgment.judge.name if judgment.judge_id else None,
            import_source=judgment.source_import.source if judgment.source_import_id else None,
        ),
        "judged_at": iso_utc(judgment.created_at),
    }


def _chosen_probability(judgment: Judgment, chosen_id: int) -> float:
    """P(chosen is better): the AI judge's soft label turned to the chosen side, or 1.0."""
    if judgment.source != Judgment.Source.AI or judgment.soft_label is None:
        return 1.0
    if chosen_id == judgment.response_a_id:
        return judgment.soft_label
    return 1.0 - judgment.soft_label


def _conversation(judgment: Judgment) -> list[dict]:
    return [*judgment.context, *judgment.prompt.as_conversation()]


def _alive_texts(ids) -> dict[int, Response] | None:
    """The responses of ``ids`` by id, or None when one was deleted: a task-less (imported)
    ranking names its responses only in JSON, where ``alive_judgments`` cannot look."""
    ids = set(ids)
    texts = Response.objects.alive().in_bulk(ids)
    return texts if len(texts) == len(ids) else None


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _winner_shares(project: Project, ai: AiSelection) -> dict[int, Counter]:
    """Per comparison task, how many current judgments (of the sources exported) picked
    each response (None: a tie or both bad), for the agreement of a training row."""
    shares: dict[int, Counter] = defaultdict(Counter)
    rows = _current(project, TaskKind.COMPARISON, ai).values_list(
        "task_id", "choice", "response_a_id", "response_b_id"
    )
    for task_id, choice, response_a, response_b in rows.iterator(chunk_size=2000):
        winner = {Judgment.Choice.A: response_a, Judgment.Choice.B: response_b}.get(choice)
        shares[task_id][winner] += 1
    return shares


def _comparison_pairs(
    project: Project, *, ai: AiSelection, with_metadata: bool = False
) -> Iterator[dict]:
    decisive = _current(project, TaskKind.COMPARISON, ai).filter(
        choice__in=[Judgment.Choice.A, Judgment.Choice.B]
    )
    shares = _winner_shares(project, ai) if with_metadata else {}
    for judgment in decisive.select_related("response_a", "response_b").iterator(chunk_size=500):
        chosen, rejected = judgment.chosen_and_rejected
        row = {
            "prompt": _conversation(judgment),
            "chosen": _reply(chosen.text),
            "rejected": _reply(rejected.text),
            **_provenance(judgment),
            "soft_label": _chosen_probability(judgment, chosen.pk),
        }
        if with_metadata:
            votes = shares.get(judgment.task_id, Counter({chosen.pk: 1}))
            row["margin"] = judgment.strength
            row["agreement"] = votes[chosen.pk] / sum(votes.values())
        yield row


def _ranking_pairs(
    project: Project, *, ai: AiSelection, with_metadata: bool = False
) -> Iterator[dict]:
    from annotation.labeling.kinds.ranking import ranking_pairs

    for judgment in _current(project, TaskKind.RANKING, ai).iterator(chunk_size=200):
        pairs = ranking_pairs(judgment)
        texts = _alive_texts({pk for pair in pairs for pk in pair})
        if texts is None:
            continue
        for chosen, rejected in pairs:
            row = {
                "prompt": _conversation(judgment),
                "chosen": _reply(texts[chosen].text),
                "rejected": _reply(texts[rejected].text),
                **_provenance(judgment),
                "soft_label": 1.0,
            }
            if with_metadata:
                # Places apart in the ranking: first against last is the clearest pair.
                row["margin"] = judgment.ranking.index(rejected) - judgment.ranking.index(chosen)
            yield row


AiOption = str | AiSelection | None  # None: the project's setting


def dpo_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    """TRL's conversational preference form: DPOTrainer loads these rows unchanged (the
    provenance keys are extra columns it leaves alone)."""
    selection = ai_selection(project, ai)
    yield from _comparison_pairs(project, ai=selection)
    yield from _ranking_pairs(project, ai=selection)


def training_preference_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    """``dpo_rows`` plus what reward margins and curricula use: ``margin`` (the labeler's
    strength 1-4 for a comparison, the places apart for a ranking pair; None when not
    given) and ``agreement`` (the share of the task's current judgments, of the sources
    exported, that picked the same winner; comparisons only)."""
    selection = ai_selection(project, ai)
    yield from _comparison_pairs(project, ai=selection, with_metadata=True)
    yield from _ranking_pairs(project, ai=selection, with_metadata=True)


def sft_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    """TRL's conversational SFT form, {"messages": [...earlier turns, user, assistant]},
    from current demonstrations (a corrected one in its newest form; AI revisions are
    demonstrations of source "ai")."""
    selection = ai_selection(project, ai)
    demonstrations = _current(project, TaskKind.DEMONSTRATION, selection).exclude(text="")
    for demonstration in demonstrations.iterator(chunk_size=500):
        yield {
            "messages": [
                *demonstration.context,
                {"role": "user", "content": demonstration.prompt.text},
                {"role": "assistant", "content": demonstration.text},
            ],
            **_provenance(demonstration),
        }


def ranking_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    selection = ai_selection(project, ai)
    for judgment in _current(project, TaskKind.RANKING, selection).iterator(chunk_size=200):
        texts = _alive_texts(judgment.ranking)
        if texts is None:
            continue
        yield {
            "prompt": _conversation(judgment),
            "responses": [texts[pk].text for pk in judgment.ranking],
            "all_bad": judgment.all_bad,
            **_provenance(judgment),
        }


def rating_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    selection = ai_selection(project, ai)
    ratings = _current(project, TaskKind.RATING, selection).select_related("rated_response")
    for judgment in ratings.iterator(chunk_size=500):
        yield {
            "prompt": _conversation(judgment),
            "response": judgment.rated_response.text,
            "scores": judgment.scores,
            "flags": judgment.flags,
            **_provenance(judgment),
        }


# KTO's default line between a desirable and an undesirable rated reply: the mean of its
# criterion scores on the 1-7 scale (annotation/labeling/kinds/rating.py); 5 is the first
# score above the middle (4, "neither good nor bad"). A snapshot records the one it used.
DEFAULT_RATING_THRESHOLD = 5.0


def _unpaired(judgment: Judgment, text: str, label: bool, feedback: str) -> dict:
    return {
        "prompt": _conversation(judgment),
        "completion": _reply(text),
        "label": label,
        "feedback": feedback,
        **_provenance(judgment),
    }


def _rated_unpaired(project: Project, selection: AiSelection, threshold: float) -> Iterator[dict]:
    ratings = _current(project, TaskKind.RATING, selection).select_related("rated_response")
    for judgment in ratings.iterator(chunk_size=500):
        scores = [s for s in (judgment.scores or {}).values() if isinstance(s, int | float)]
        if scores and judgment.rated_response_id:
            desirable = sum(scores) / len(scores) >= threshold
            yield _unpaired(judgment, judgment.rated_response.text, desirable, "rating")


def _compared_unpaired(project: Project, selection: AiSelection) -> Iterator[dict]:
    comparisons = _current(project, TaskKind.COMPARISON, selection).filter(
        choice__in=[Judgment.Choice.A, Judgment.Choice.B, Judgment.Choice.BOTH_BAD]
    )
    for judgment in comparisons.select_related("response_a", "response_b").iterator(chunk_size=500):
        if judgment.choice == Judgment.Choice.BOTH_BAD:
            for response in (judgment.response_a, judgment.response_b):
                yield _unpaired(judgment, response.text, False, "comparison")
            continue
        chosen, rejected = judgment.chosen_and_rejected
        yield _unpaired(judgment, chosen.text, True, "comparison")
        yield _unpaired(judgment, rejected.text, False, "comparison")


def _ranked_unpaired(project: Project, selection: AiSelection) -> Iterator[dict]:
    for judgment in _current(project, TaskKind.RANKING, selection).iterator(chunk_size=200):
        order = list(judgment.ranking or [])
        if judgment.all_bad:
            ids = order or list(judgment.shown_order)
            texts = _alive_texts(ids)
            for pk in ids if texts else []:
                yield _unpaired(judgment, texts[pk].text, False, "ranking")
        elif len(order) >= 2:
            texts = _alive_texts([order[0], order[-1]])
            if texts is None:
                continue
            yield _unpaired(judgment, texts[order[0]].text, True, "ranking")
            yield _unpaired(judgment, texts[order[-1]].text, False, "ranking")


def kto_rows(
    project: Project, *, ai: AiOption = None, rating_threshold: float | None = None
) -> Iterator[dict]:
    """TRL's conversational unpaired preference form, {prompt, completion, label}, which
    KTOTrainer reads unchanged, from feedback that has no pair to train DPO on:

    - a rating: desirable when the mean of its criterion scores is at least
      ``rating_threshold`` (default ``DEFAULT_RATING_THRESHOLD``), else undesirable;
    - a comparison: the winner desirable and the loser undesirable; "both bad" makes both
      replies undesirable (a clear verdict on each), a tie says nothing and is left out;
    - a ranking: the best reply desirable and the worst undesirable (the middle ones carry
      no verdict of their own); "all bad" makes every ranked reply undesirable.

    ``feedback`` says which kind a row came from. A (prompt, completion, label) seen twice
    is kept once; the same reply judged both ways by different people keeps both rows.
    """
    selection = ai_selection(project, ai)
    threshold = DEFAULT_RATING_THRESHOLD if rating_threshold is None else rating_threshold
    seen = set()
    for row in itertools.chain(
        _rated_unpaired(project, selection, threshold),
        _compared_unpaired(project, selection),
        _ranked_unpaired(project, selection),
    ):
        key = (
            json.dumps(row["prompt"], sort_keys=True),
            row["completion"][0]["content"],
            row["label"],
        )
        if key not in seen:
            seen.add(key)
            yield row


# --- Ranked responses per prompt (RRHF) ---------------------------------------------


def _conversation_key(conversation: list[dict]) -> str:
    return json.dumps(conversation, sort_keys=True, ensure_ascii=False)


def _ranking_lists(project: Project, selection: AiSelection) -> Iterator[tuple]:
    """Labelers' rankings, each its own list: score = k - position (best k, worst 1).
    Rankings have no ties; an all-bad ranking says no order, so it gives none."""
    rankings = _current(project, TaskKind.RANKING, selection).filter(all_bad=False)
    for judgment in rankings.iterator(chunk_size=200):
        if _alive_texts(judgment.ranking) is None:
            continue
        k = len(judgment.ranking)
        scores = {pk: float(k - place) for place, pk in enumerate(judgment.ranking)}
        yield _conversation(judgment), "ranking", scores, [judgment]


def _comparison_lists(project: Project, selection: AiSelection) -> Iterator[tuple]:
    """Decisive comparisons merged per prompt: a response scores wins - losses."""
    merged: dict[str, tuple] = {}
    decisive = _current(project, TaskKind.COMPARISON, selection).filter(
        choice__in=[Judgment.Choice.A, Judgment.Choice.B]
    )
    for judgment in decisive.iterator(chunk_size=500):
        conversation = _conversation(judgment)
        entry = merged.setdefault(
            _conversation_key(conversation), (conversation, "comparisons", Counter(), [])
        )
        winner, loser = judgment.response_a_id, judgment.response_b_id
        if judgment.choice == Judgment.Choice.B:
            winner, loser = loser, winner
        entry[2][winner] += 1
        entry[2][loser] -= 1
        entry[3].append(judgment)
    for conversation, scored_by, counts, judgments in merged.values():
        yield conversation, scored_by, {pk: float(n) for pk, n in counts.items()}, judgments


def _rating_lists(project: Project, selection: AiSelection) -> Iterator[tuple]:
    """Ratings merged per prompt: a response's mean rating (the mean over its criteria,
    averaged over its current ratings)."""
    rated: dict[str, tuple] = {}
    for judgment in _current(project, TaskKind.RATING, selection).iterator(chunk_size=500):
        values = [v for v in (judgment.scores or {}).values() if isinstance(v, int | float)]
        if not values or judgment.rated_response_id is None:
            continue
        conversation = _conversation(judgment)
        entry = rated.setdefault(
            _conversation_key(conversation), (conversation, "ratings", defaultdict(list), [])
        )
        entry[2][judgment.rated_response_id].append(sum(values) / len(values))
        entry[3].append(judgment)
    for conversation, scored_by, ratings, judgments in rated.values():
        means = {pk: sum(v) / len(v) for pk, v in ratings.items()}
        yield conversation, scored_by, means, judgments


def _merged_provenance(judgments: list[Judgment]) -> dict:
    """The provenance keys of a row built from several judgments: the source they all
    share (else "mixed"), and the distinct judges, constitutions, principles comma-joined."""
    each = [_provenance(judgment) for judgment in judgments]
    sources = {p["source"] for p in each}
    merged = {"source": sources.pop() if len(sources) == 1 else "mixed"}
    for key in ("judge", "constitution", "principle"):
        merged[key] = ", ".join(sorted({p[key] for p in each if p[key]}))
    return merged


def rrhf_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    """Responses to one prompt with scores, for RRHF: ``{prompt, responses, scores,
    scored_by, demonstrations, source, judge, constitution, principle}``, best first
    (a higher score is better).

    - ``scored_by`` "ranking": one row per labeler's ranking, score = k - position
      (the best of k scores k, the worst 1).
    - "comparisons": one row per prompt merging its decisive comparisons; a response
      scores its wins minus its losses (ties and both-bad count for neither).
    - "ratings": one row per prompt; a response's mean rating (mean over the criteria,
      averaged over its ratings).
    The prompt's current demonstrations (same conversation) join each of its rows as its
    best responses: score = the row's best + 1. A text met twice keeps its higher score.
    Rows with fewer than two distinct scores are left out (nothing to rank), so a prompt
    with demonstrations only gives no row. The ``ai`` choice applies to every source.
    """
    selection = ai_selection(project, ai)
    demonstrations: dict[str, list[Judgment]] = defaultdict(list)
    written = _current(project, TaskKind.DEMONSTRATION, selection).exclude(text="")
    for demonstration in written.iterator(chunk_size=500):
        demonstrations[_conversation_key(_conversation(demonstration))].append(demonstration)
    lists = [
        *_ranking_lists(project, selection),
        *_comparison_lists(project, selection),
        *_rating_lists(project, selection),
    ]
    texts = Response.objects.in_bulk({pk for _, _, scores, _ in lists for pk in scores})
    for conversation, scored_by, scores, judgments in lists:
        by_text: dict[str, float] = {}
        for pk, score in scores.items():
            text = texts[pk].text
            by_text[text] = max(score, by_text.get(text, score))
        demos = demonstrations.get(_conversation_key(conversation), [])
        best = max(by_text.values()) + 1
        for demonstration in demos:
            by_text[demonstration.text] = best
        if len(set(by_text.values())) < 2:
            continue
        ordered = sorted(by_text.items(), key=lambda item: -item[1])
        yield {
            "prompt": conversation,
            "responses": [text for text, _ in ordered],
            "scores": [score for _, score in ordered],
            "scored_by": scored_by,
            "demonstrations": len(demos),
            **_merged_provenance([*judgments, *demos]),
        }


def rrhf_candidate_rows(project: Project, *, ai: AiOption = None) -> Iterator[dict]:
    """Every response to a prompt, from any source, unscored, for RRHF scored by a reward
    model at train time: ``{prompt, responses, scores: null, scored_by: "reward-model",
    demonstrations, model_versions, source, judge, constitution, principle}``.

    A prompt of the labeling pool (not a chat turn's or an arena battle's, as for every
    other format) gives one row holding its responses (every model version's candidates
    and imported ones, oldest first) and then its current demonstrations (same
    conversation; the ``ai`` choice applies to them), each distinct non-empty text once.
    A prompt with fewer than two distinct texts gives no row (nothing to rank). The
    provenance keys are those of its demonstrations ("" when it has none; the responses
    themselves carry no judgment); ``model_versions`` names the versions whose candidates
    are in.
    """
    selection = ai_selection(project, ai)
    rows: dict[str, dict] = {}

    def entry(conversation: list[dict]) -> dict:
        return rows.setdefault(
            _conversation_key(conversation),
            {"prompt": conversation, "texts": {}, "demos": [], "versions": set()},
        )

    responses = (
        Response.objects.labeling()
        .alive()
        .filter(prompt__project=project)
        .select_related("prompt", "model_version")
        .order_by("prompt_id", "created_at", "id")
    )
    for response in responses.iterator(chunk_size=1000):
        if not response.text.strip():
            continue
        row = entry(response.prompt.as_conversation())
        row["texts"].setdefault(response.text, None)
        if response.model_version_id is not None:
            row["versions"].add(response.model_version.name)
    written = _current(project, TaskKind.DEMONSTRATION, selection).exclude(text="")
    for demonstration in written.iterator(chunk_size=500):
        if not demonstration.text.strip():
            continue
        row = entry(_conversation(demonstration))
        row["texts"].setdefault(demonstration.text, None)
        row["demos"].append(demonstration)
    empty = {"source": "", "judge": "", "constitution": "", "principle": ""}
    for row in rows.values():
        if len(row["texts"]) < 2:
            continue
        yield {
            "prompt": row["prompt"],
            "responses": list(row["texts"]),
            "scores": None,
            "scored_by": "reward-model",
            "demonstrations": len(row["demos"]),
            "model_versions": sorted(row["versions"]),
            **(_merged_provenance(row["demos"]) if row["demos"] else empty),
        }


ROWS = {
    "dpo": dpo_rows,
    "sft": sft_rows,
    "ranking": ranking_rows,
    "rating": rating_rows,
    "kto": kto_rows,
}


def preference_rows(project: Project, *, export_format: str, ai: AiOption = None) -> Iterator[dict]:
    """The rows of one format; a bad ``ai`` raises ServiceError before any row is read."""
    if export_format not in FORMATS:
        raise ValueError(f"Unknown format {export_format!r}; choose one of {', '.join(FORMATS)}.")
    return ROWS[export_format](project, ai=ai_selection(project, ai))


def planned_preference_rows(
    *, project: Project, export_format: str, ai: str | None = None
) -> tuple[AiLabelPlan, Iterator[dict]]:
    """The rows of one format with the plan that says whose AI labels they hold and why
    (``ai`` None: the project's setting); the rows read the plan's trusted judges, so what
    a caller shows and what it writes agree."""
    plan = ai_label_plan(project=project, ai=ai)
    selection = AiSelection(plan.ai, plan.trusted_keys)
    return plan, preference_rows(project, export_format=export_format, ai=selection)


# The formats a spreadsheet reads as a table (CSV); ranking rows hold a list of replies.
CSV_FORMATS = ("dpo", "sft", "rating", "kto")
CONTAINERS = ("jsonl", "csv")


def check_container(export_format: str, container: str) -> None:
    """ServiceError unless ``export_format`` can be written as ``container``."""
    if container not in CONTAINERS:
        raise ServiceError(
            f"Unknown container {container!r}; choose one of {', '.join(CONTAINERS)}."
        )
    if container == "csv" and export_format not in CSV_FORMATS:
        raise ServiceError(
            f"CSV is for the tabular formats ({', '.join(CSV_FORMATS)}); "
            f"{export_format!r} rows hold lists: export them as JSONL."
        )


def jsonl_lines(rows) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(rows, stream: IO[str]) -> int:
    count = 0
    for line in jsonl_lines(rows):
        stream.write(line)
        count += 1
    return count
