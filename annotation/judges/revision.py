"""Critique -> revision: the supervised stage of Constitutional AI (Bai et al. 2022,
https://arxiv.org/abs/2212.08073, section 3).

For each chosen response the judge reads the conversation and the response, writes a
critique under a principle's critique request, then rewrites the response under its
revision request. With ``rounds`` > 1 this repeats on the latest revision with a new
principle each round (principles drawn without replacement while they last, seeded by the
job and the response, so a rerun of the same job draws the same ones), as the paper applies
critique and revision several times in sequence, sampling a principle each time.

Every finished item is stored at once, in one transaction:

- the revision as a new ``Response`` on the same prompt (``model_version`` = the judge's
  registry version for a local judge, else none; ``author`` = "judge:<name>";
  ``generation_params`` name the judge, job, constitution version, principles, rounds and
  the parent response under ``revision_of``), at the next free ``sample_index``;
- an AI demonstration (``kind="demonstration"``, ``source="ai"``): ``text`` = the revision,
  ``edited_from`` = the original, ``edit_diff`` as for a labeler's edit, the critiques as
  ``rationale``, every round in ``ai_details["rounds"]``, the last round's principle in
  ``principle``. It exports as SFT data like any demonstration;
- an AI comparison with the original as A and the revision as B, ``choice="b"``. The
  revision is *presumed* better by construction, not judged: ``soft_label`` stays empty
  and ``ai_details["presumed"]`` is True, so anything that wants only judged preferences
  (a leaderboard, an agreement report) can leave these out; a preference export takes them
  as (chosen = revision, rejected = original) pairs.

An item fails, and nothing is stored for it, when the judge's revision is empty or only
repeats its critique in any round, the final revision equals the original (whitespace
aside), a revision is longer than a demonstration may be, or a model request fails
(``BackendError``; when that happens to ``MAX_FAILED_IN_A_ROW`` items in a row the job
stops with the error: the endpoint is down, and going on would only spend the budget).

Options (``check_revision_options``): ``response_ids`` (optional: exactly these responses
of the project's labeling pool, whoever wrote them) or else the project's labeling-pool
responses not yet revised by this judge under this constitution version, oldest first, at
most ``limit`` (1-1000, default 20), model-written only unless ``only_model_responses`` is
false (AI revisions themselves are never picked by default); ``rounds`` 1-4 (default 1);
``max_tokens`` 16-2048 (default 256) and ``temperature`` 0-2 (default 0: greedy, so a rerun
gives the same text) per request.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Max

from annotation.judges.backends import BackendError
from annotation.judges.prompts import critique_messages, revision_messages
from annotation.labeling.kinds.demonstration import (
    CONTEXT_KEY,
    MAX_TEXT,
    checked_turns,
    edit_diff,
    normalised_newlines,
)
from annotation.models import Judge, Judgment, Response, TaskKind
from config.errors import ServiceError

MAX_LIMIT = 1000
DEFAULT_LIMIT = 20
MAX_ROUNDS = 4
MAX_FAILED_IN_A_ROW = 3
# Response.generation_params key naming the response a revision was made from.
REVISION_OF = "revision_of"
PRESUMED_WHY = (
    "Response B is the judge's revision of response A under the constitution; presumed "
    "better by construction, not judged."
)

# A label or preamble the judge may put before the rewritten text, despite being asked not
# to: "Revision:", "Rewritten response:", "Here is the revised response:" on its own line.
_LEAD_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:revision|revised response|rewritten response|revised answer|"
    r"rewrite|assistant)(?:\*\*)?\s*:(?:\*\*)?\s*",
    re.IGNORECASE,
)
_PREAMBLE_LINE = re.compile(r"^\s*(?:sure[,!.]?\s*)?here(?:'s| is)\b[^\n]*:\s*\n", re.IGNORECASE)
_QUOTES = '"\u201c\u201d'


class ItemFailed(Exception):
    """One response could not be revised; the message says why, for the job log."""


# --- pure parts -----------------------------------------------------------------------


def clean_revision(text: str) -> str:
    """The judge's answer as the revised reply: newlines normalised, a leading
    "Revision:"-style label or "Here is ...:" line dropped, matching outer quotes removed,
    stripped. May return ""."""
    text = normalised_newlines(text or "").strip()
    text = _PREAMBLE_LINE.sub("", text, count=1)
    text = _LEAD_LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def same_text(first: str, second: str) -> bool:
    """Equal once whitespace is collapsed: a revision that only reflows is no revision."""
    return " ".join(first.split()) == " ".join(second.split())


def pick_principles(principles: list[dict], rounds: int, rng: random.Random) -> list[dict]:
    """``rounds`` principles, a different one each round while the constitution has enough
    (then the draw starts over, never repeating the previous round's when it can)."""
    picked: list[dict] = []
    while len(picked) < rounds:
        order = rng.sample(range(len(principles)), len(principles))
        if picked and len(order) > 1 and principles[order[0]] is picked[-1]:
            order.append(order.pop(0))
        picked.extend(principles[i] for i in order)
    return picked[:rounds]


@dataclass
class Round:
    principle: str
    critique: str
    revision: str

    def as_dict(self) -> dict:
        return {"principle": self.principle, "critique": self.critique, "revision": self.revision}


def rationale(rounds: list[Round]) -> str:
    """The critiques, one paragraph per round, each headed by its principle."""
    return "\n\n".join(f"[{item.principle}] {item.critique}" for item in rounds)


# --- options --------------------------------------------------------------------------


def _int_option(options: Mapping, key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ServiceError(f"{key} must be a whole number from {low} to {high}.")
    return raw


def check_revision_options(options, *, project=None) -> dict:
    """The job's options with defaults filled in, or a ServiceError naming the bad one.
    With ``project``, listed ``response_ids`` must all be responses of that project."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ServiceError("Options must be an object.")
    known = {"limit", "response_ids", "rounds", "only_model_responses", "max_tokens", "temperature"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ServiceError(
            f"Unknown option {unknown[0]!r} for revision; use {', '.join(sorted(known))}."
        )
    only_model = options.get("only_model_responses", True)
    if not isinstance(only_model, bool):
        raise ServiceError("only_model_responses must be true or false.")
    temperature = options.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ServiceError("temperature must be a number from 0 to 2.")
    if not 0 <= temperature <= 2:
        raise ServiceError("temperature must be a number from 0 to 2.")
    checked = {
        "limit": _int_option(options, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        "rounds": _int_option(options, "rounds", 1, 1, MAX_ROUNDS),
        "max_tokens": _int_option(options, "max_tokens", 256, 16, 2048),
        "temperature": float(temperature),
        "only_model_responses": only_model,
        "response_ids": None,
    }
    ids = options.get("response_ids")
    if ids is not None:
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= MAX_LIMIT
            or not all(isinstance(pk, int) and not isinstance(pk, bool) for pk in ids)
        ):
            raise ServiceError(f"response_ids must be a list of 1 to {MAX_LIMIT} response ids.")
        if len(set(ids)) != len(ids):
            raise ServiceError("response_ids lists a response twice.")
        if project is not None:
            found = set(
                Response.objects.labeling()
                .alive()
                .filter(pk__in=ids, prompt__project=project)
                .values_list("pk", flat=True)
            )
            missing = [pk for pk in ids if pk not in found]
            if missing:
                shown = ", ".join(str(pk) for pk in missing[:10])
                raise ServiceError(
                    f"These responses are not in the project's labeling pool: {shown}."
                )
        checked["response_ids"] = ids
    return checked


# --- selection ------------------------------------------------------------------------


def responses_to_revise(*, project, judge, constitution, options: dict) -> list[Response]:
    """The responses a revision job works on, in order (see the module docstring)."""
    responses = Response.objects.select_related("prompt")
    if options["response_ids"] is not None:
        # A chat turn's or a battle's reply is left out: its conversation is not the
        # prompt's own (see ResponseQuerySet.labeling).
        by_id = (
            responses.labeling()
            .alive()
            .filter(prompt__project=project)
            .in_bulk(options["response_ids"])
        )
        return [by_id[pk] for pk in options["response_ids"] if pk in by_id]
    revised = Judgment.objects.filter(
        project=project,
        kind=TaskKind.DEMONSTRATION,
        source=Judgment.Source.AI,
        judge=judge,
        constitution=constitution,
        edited_from__isnull=False,
    ).values("edited_from_id")
    pool = (
        Response.objects.labeling()
        .alive()
        .select_related("prompt")
        .filter(prompt__project=project)
        .exclude(pk__in=revised)
        .exclude(generation_params__has_key=REVISION_OF)
    )
    if options["only_model_responses"]:
        pool = pool.filter(model_version__isnull=False)
    return list(pool.order_by("id")[: options["limit"]])


# --- the job --------------------------------------------------------------------------


def _conversation(response: Response) -> list[dict]:
    turns = (response.prompt.metadata or {}).get(CONTEXT_KEY) or []
    try:
        context = checked_turns(turns, what=f"Prompt {response.prompt_id}'s {CONTEXT_KEY}")
    except ServiceError as error:
        raise ItemFailed(error.message) from None
    return context


def _ask(ctx, messages: list[dict], options: dict) -> str:
    ctx.request()
    return ctx.backend.complete(
        messages, max_tokens=options["max_tokens"], temperature=options["temperature"]
    )


def revise(ctx, response: Response, *, context: list[dict], options: dict) -> list[Round]:
    """Run the critique and revision rounds on one response; ItemFailed when a round's
    revision is empty or the last one equals the original."""
    conversation = [*context, *response.prompt.as_conversation()]
    rng = random.Random(f"revision:{ctx.job.pk}:{response.pk}")
    principles = pick_principles(ctx.constitution.principles, options["rounds"], rng)
    current = normalised_newlines(response.text).strip()
    rounds: list[Round] = []
    for number, principle in enumerate(principles, start=1):
        critique = _ask(ctx, critique_messages(conversation, current, principle), options)
        critique = normalised_newlines(critique).strip()
        answer = _ask(ctx, revision_messages(conversation, current, principle, critique), options)
        revision = clean_revision(answer)
        if not revision:
            raise ItemFailed(f"the revision in round {number} ({principle['name']}) was empty")
        if critique and same_text(revision, critique):
            # Small judges often answer the revision request with their critique again
            # (SmolLM2-135M does): that is no reply to the user.
            raise ItemFailed(f"the revision in round {number} only repeats the critique")
        if len(revision) > MAX_TEXT:
            raise ItemFailed(
                f"the revision in round {number} has {len(revision)} characters "
                f"(a demonstration holds {MAX_TEXT})"
            )
        rounds.append(Round(principle["name"], critique, revision))
        current = revision
    if same_text(current, response.text):
        raise ItemFailed("the revision is the original unchanged")
    return rounds


def _free_sample_index(response: Response, version_id: int | None) -> int:
    used = Response.objects.filter(
        prompt_id=response.prompt_id, model_version_id=version_id
    ).aggregate(top=Max("sample_index"))["top"]
    return 0 if used is None else used + 1


def _revision_response(ctx, original: Response, rounds: list[Round], options: dict) -> Response:
    judge, constitution = ctx.judge, ctx.constitution
    version_id = judge.model_version_id if judge.backend == Judge.Backend.LOCAL else None
    params = {
        "judge": judge.name,
        "judge_id": judge.pk,
        "judge_job": ctx.job.pk,
        "constitution": constitution.name,
        "constitution_version": constitution.version,
        "principles": [item.principle for item in rounds],
        "rounds": len(rounds),
        REVISION_OF: original.pk,
        "max_tokens": options["max_tokens"],
        "temperature": options["temperature"],
    }
    # The database's unique (prompt, version, sample_index) settles a race with another
    # writer: take the next index and try again.
    for _ in range(5):
        try:
            with transaction.atomic():
                return Response.objects.create(
                    prompt_id=original.prompt_id,
                    model_version_id=version_id,
                    author=f"judge:{judge.name}"[:100],
                    sample_index=_free_sample_index(original, version_id),
                    text=rounds[-1].revision,
                    generation_params=params,
                )
        except IntegrityError:
            continue
    raise ItemFailed("no free sample index for the revision (too many concurrent writers)")


def _store(
    ctx, original: Response, *, context: list[dict], rounds: list[Round], options, spent_ms
) -> Judgment:
    """The revision, its demonstration and its comparison, all or nothing."""
    common = {
        "project": ctx.job.project,
        "prompt_id": original.prompt_id,
        "context": context,
        "source": Judgment.Source.AI,
        "labeler": None,
        "judge": ctx.judge,
        "judge_job": ctx.job,
        "constitution": ctx.constitution,
        "principle": rounds[-1].principle[:100],
        "rationale": rationale(rounds),
        "time_spent_ms": spent_ms,
    }
    principles = [item.principle for item in rounds]
    with transaction.atomic():
        revised = _revision_response(ctx, original, rounds, options)
        demonstration = Judgment.objects.create(
            kind=TaskKind.DEMONSTRATION,
            shown_order=[original.pk],
            text=revised.text,
            edited_from=original,
            edit_diff=edit_diff(original=original.text, edited=revised.text),
            ai_details={
                "rounds": [item.as_dict() for item in rounds],
                "principles": principles,
                "revision_response": revised.pk,
            },
            **common,
        )
        Judgment.objects.create(
            kind=TaskKind.COMPARISON,
            shown_order=[original.pk, revised.pk],
            response_a=original,
            response_b=revised,
            choice=Judgment.Choice.B,
            soft_label=None,
            ai_details={
                "presumed": True,
                "why": PRESUMED_WHY,
                "principles": principles,
                "demonstration": demonstration.pk,
            },
            **common,
        )
    return demonstration


def run_revision(ctx) -> None:
    """Critique and revise the chosen responses (see the module docstring). Progress:
    total = responses chosen, done = revisions stored, failed = items that failed."""
    options = check_revision_options(ctx.job.options, project=ctx.job.project)
    if not ctx.constitution.principles:
        raise ServiceError(f"The constitution {ctx.constitution} has no principles.")
    responses = responses_to_revise(
        project=ctx.job.project, judge=ctx.judge, constitution=ctx.constitution, options=options
    )
    ctx.progress(done=0, total=len(responses), failed=0)
    ctx.log(
        f"Revision: {len(responses)} responses, {options['rounds']} round(s) each, "
        f"constitution {ctx.constitution}."
    )
    done = backend_failures_in_a_row = 0
    for response in responses:
        if ctx.cancelled():
            ctx.log("Cancelled.")
            return
        started = time.monotonic()
        try:
            context = _conversation(response)
            rounds = revise(ctx, response, context=context, options=options)
            spent_ms = int(1000 * (time.monotonic() - started))
            _store(
                ctx, response, context=context, rounds=rounds, options=options, spent_ms=spent_ms
            )
        except (ItemFailed, BackendError) as error:
            reason = error.message if isinstance(error, BackendError) else str(error)
            ctx.item_failed(f"response {response.pk}: {reason}; nothing stored for it.")
            if isinstance(error, BackendError):
                backend_failures_in_a_row += 1
                if backend_failures_in_a_row >= MAX_FAILED_IN_A_ROW:
                    raise
            else:
                backend_failures_in_a_row = 0
            continue
        backend_failures_in_a_row = 0
        done += 1
        ctx.progress(done=done)
        ctx.log(
            f"Response {response.pk}: revised under {', '.join(item.principle for item in rounds)}."
        )
    ctx.log(f"Done: {done} revised, {ctx.job.failed} failed.")
