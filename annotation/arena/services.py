"""Arena battles: a labeler puts one prompt (from the project's pool or typed) to two
anonymous policy versions, sees their replies as "Model A" and "Model B", votes A, B, tie
or both bad, and only then learns which model was which.

Each battle has its own Prompt row (metadata ``{"arena_battle": id}``), so battle prompts
and replies stay out of the labeling pool; the battle row is also the generation job,
claimed by the worker under a row lock. Both replies are written on the Celery
``interactive`` worker (annotation/arena/tasks.py). The battle runs on the one job
lifecycle (config/jobs.py): claimed once, heartbeating while it generates; a battle whose
worker died is queued again and resumes (its two replies are written once each, so a rerun
writes only the missing one), and after ``ArenaBattle.max_attempts`` it is failed with the
reason, for the labeler to press "Try again". The vote is a Judgment of kind ``arena`` linked from
the battle. Writes are the ``arena_*`` services here; reads are the ``arena_battle*_for``
and ``arena_versions``/``arena_pair_counts`` selectors in annotation/arena/selectors.py.
"""

import itertools
import logging
import random
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.arena.selectors import WAITING, BattleNotFound, arena_pair_counts, arena_versions
from annotation.chat.services import MAX_MESSAGE_CHARS
from annotation.labeling.inputs import check_time_spent, parse_client_id, whole_number_or_none
from annotation.models import ARENA_BATTLE_KEY, ArenaBattle, Judgment, Project, Prompt, TaskKind
from annotation.models import Response as Reply
from annotation.projects.selectors import latest_guidelines
from config import jobs
from config.celery import enqueue_after_commit
from config.errors import Conflict, ServiceError
from models_registry.endpoints import generator_for
from models_registry.engine import ml
from models_registry.models import ModelVersion

logger = logging.getLogger(__name__)

# A typed prompt is held to the same limit as a chat message.
MAX_PROMPT_CHARS = MAX_MESSAGE_CHARS
CHOICES = tuple(Judgment.Choice.values)  # "a", "b", "tie", "both_bad"
# Short enough that a CPU worker answers in seconds; the labeler waits for both replies.
DEFAULT_PARAMS = {"max_new_tokens": 128, "temperature": 0.8, "top_p": 0.95}


def _pick_pair(*, project: Project, rng: random.Random) -> tuple[ModelVersion, ModelVersion]:
    """Two different contestants, in random sides.

    Balancing rule: among all pairs of contestants, only the pairs with the fewest battles
    so far in this project are eligible, and one of them is drawn uniformly. So a new
    candidate meets every other version before any pair battles twice, and over time every
    pair battles equally often (to within one)."""
    versions = list(arena_versions(project=project))
    if len(versions) < 2:
        raise ServiceError(
            "An arena battle needs two models that are not retired; there "
            f"{'is' if len(versions) == 1 else 'are'} {len(versions) or 'none'}. "
            "An admin registers models on the Models page."
        )
    counts = arena_pair_counts(project=project)
    pairs = list(itertools.combinations(versions, 2))  # ordered by id, so keys match counts
    fewest = min(counts[(a.pk, b.pk)] for a, b in pairs)
    pair = list(rng.choice([(a, b) for a, b in pairs if counts[(a.pk, b.pk)] == fewest]))
    rng.shuffle(pair)
    return pair[0], pair[1]


def _pool_prompt(*, project: Project, rng: random.Random) -> Prompt:
    pool = Prompt.objects.labeling().alive().filter(project=project).order_by("id")
    size = pool.count()
    if size == 0:
        raise ServiceError("The project has no prompts in its pool yet: type one instead.")
    return pool[rng.randrange(size)]


def _typed_prompt(text) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise ServiceError("Write a prompt for the two models first.")
    if len(text) > MAX_PROMPT_CHARS:
        raise ServiceError(f"Keep the prompt under {MAX_PROMPT_CHARS} characters.")
    return text


def _generation_params(params: dict | None, rng: random.Random) -> dict:
    try:
        parsed = ml.GenerationParams(
            **{**DEFAULT_PARAMS, "seed": rng.randrange(2**31), **(params or {})}
        )
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Bad generation parameters: {error}") from None
    return parsed.as_dict()


def arena_battle_start(
    *,
    project: Project,
    labeler,
    prompt_text=None,
    params: dict | None = None,
    rng: random.Random | None = None,
) -> ArenaBattle:
    """Open a battle and queue both replies on the gpu worker. With ``prompt_text`` None the
    prompt is drawn at random from the project's labeling pool; otherwise it is the typed
    text (1 to MAX_PROMPT_CHARS characters). Both versions reply with the same generation
    parameters and seed, recorded on the battle. Bad input, or fewer than two contestants,
    is a ServiceError and stores nothing. Raises QueueUnavailable (after recording it on
    the battle, which can then be retried) if the broker is down."""
    if not project.uses(TaskKind.ARENA):
        raise ServiceError("This project does not use arena battles.")
    rng = rng or random.Random()
    typed = None if prompt_text is None else _typed_prompt(prompt_text)
    generation_params = _generation_params(params, rng)
    with transaction.atomic():
        version_a, version_b = _pick_pair(project=project, rng=rng)
        pool_prompt = None if typed is not None else _pool_prompt(project=project, rng=rng)
        source = ArenaBattle.PromptSource.TYPED if typed else ArenaBattle.PromptSource.POOL
        # The key is there from the start, so the prompt never shows in the labeling pool.
        prompt = Prompt.objects.create(
            project=project,
            text=typed if typed is not None else pool_prompt.text,
            metadata={ARENA_BATTLE_KEY: None, "prompt_source": source},
        )
        battle = ArenaBattle.objects.create(
            project=project,
            labeler=labeler,
            prompt=prompt,
            prompt_source=source,
            pool_prompt=pool_prompt,
            version_a=version_a,
            version_b=version_b,
            generation_params=generation_params,
        )
        prompt.metadata = {**prompt.metadata, ARENA_BATTLE_KEY: battle.pk}
        prompt.save(update_fields=["metadata"])
        _enqueue_replies(battle.pk)
    return battle


def _locked_battle(*, project: Project, labeler, battle_id) -> ArenaBattle:
    battle = (
        ArenaBattle.objects.select_for_update()
        .filter(pk=whole_number_or_none(battle_id), project=project, labeler=labeler)
        .first()
    )
    if battle is None:
        raise BattleNotFound("No such battle.")
    return battle


def arena_battle_retry(*, project: Project, labeler, battle_id) -> ArenaBattle:
    """Queue a failed battle's replies again; a reply already written is kept."""
    with transaction.atomic():
        battle = _locked_battle(project=project, labeler=labeler, battle_id=battle_id)
        if battle.status != ArenaBattle.Status.FAILED:
            raise Conflict("Only a failed battle can be tried again.")
        battle.status = ArenaBattle.Status.QUEUED
        battle.error = ""
        battle.attempts = 0  # the labeler's "Try again" gets a fresh set of attempts
        battle.save(update_fields=["status", "error", "attempts"])
        _enqueue_replies(battle.pk)
    return battle


def arena_battles_fail_stale(*, project: Project | None = None) -> int:
    """Take up battles whose worker stopped reporting for ``ARENA_STALE_AFTER_SECONDS``:
    each is queued again and writes only the reply still missing; after its last attempt it
    is failed with the reason and a "Try again" for the labeler. Returns how many."""
    filters = {"project": project} if project is not None else {}
    return jobs.job_fail_stale(
        ArenaBattle,
        after_seconds=settings.ARENA_STALE_AFTER_SECONDS,
        resume=lambda battle: _enqueue_replies(battle.pk),
        on_lost=_battle_lost,
        **filters,
    )


def _enqueue_replies(battle_id: int) -> None:
    from annotation.arena.tasks import arena_replies_generate_task

    enqueue_after_commit(
        arena_replies_generate_task,
        job_id=battle_id,
        on_failure=lambda message: _battle_failed(battle_id, message),
    )


def _battle_failed(battle_id: int, message: str) -> None:
    ArenaBattle.objects.filter(pk=battle_id, status__in=WAITING).update(
        status=ArenaBattle.Status.FAILED, error=message
    )


def _battle_lost(battle: ArenaBattle) -> None:
    """Fail a locked battle whose worker died on its last attempt, saying what to do."""
    reason = jobs.lost_reason(settings.ARENA_STALE_AFTER_SECONDS)
    battle.status = ArenaBattle.Status.FAILED
    battle.error = (
        f"{reason[:-1]} on attempt {battle.attempts}. "
        'Press "Try again" to ask both models once more.'
    )
    battle.save(update_fields=["status", "error"])
    jobs.job_log(ArenaBattle, battle.pk, f"failed: {battle.error}")


def arena_replies_generate(*, battle_id: int) -> None:
    """Worker side: write one reply per version to the battle's prompt, with the battle's
    generation parameters (same seed for both), then open the battle for the vote. Claimed
    once (a redelivered message for a battle whose worker died resumes it, or fails it with
    the reason after its last attempt) and heartbeating while it generates. Safe to repeat;
    a failure is recorded on the battle with its error, and a retry writes only the replies
    still missing."""
    stale_after = settings.ARENA_STALE_AFTER_SECONDS
    battle = jobs.job_claim(ArenaBattle, battle_id, stale_after=stale_after, on_lost=_battle_lost)
    if battle is None:
        return
    try:
        battle = ArenaBattle.objects.select_related("prompt", "version_a", "version_b").get(
            pk=battle_id
        )
        with jobs.job_heartbeat(ArenaBattle, battle_id, every=max(stale_after / 4, 0.05)):
            replies = [
                _ensure_reply(battle, version) for version in (battle.version_a, battle.version_b)
            ]
        jobs.job_log(ArenaBattle, battle_id, "both replies written")
        with transaction.atomic():
            ArenaBattle.objects.filter(pk=battle_id, status=ArenaBattle.Status.RUNNING).update(
                response_a=replies[0],
                response_b=replies[1],
                status=ArenaBattle.Status.READY,
                error="",
            )
    except Exception as error:
        logger.exception("Arena replies for battle %s failed", battle_id)
        _battle_failed(battle_id, f"{type(error).__name__}: {error}")


def _ensure_reply(battle: ArenaBattle, version: ModelVersion) -> Reply:
    existing = Reply.objects.filter(prompt=battle.prompt, model_version=version).first()
    if existing is not None:
        return existing
    params = ml.GenerationParams(**battle.generation_params)
    generator = generator_for(version)
    started = time.perf_counter()
    generator.prepare()
    loaded = time.perf_counter()
    (reply,) = generator.generate([battle.prompt.as_conversation()], params, batch_size=1)
    timing = {
        "load_seconds": round(loaded - started, 4),
        "generate_seconds": round(time.perf_counter() - loaded, 4),
    }
    Reply.objects.bulk_create(
        [
            Reply(
                prompt=battle.prompt,
                model_version=version,
                sample_index=0,
                text=reply.text,
                generation_params={**params.as_dict(), "timing": timing},
                completion_tokens=reply.completion_tokens,
                generation_seconds=reply.seconds,
                finished=reply.finished,
            )
        ],
        ignore_conflicts=True,
    )
    return Reply.objects.get(prompt=battle.prompt, model_version=version, sample_index=0)


def arena_vote(
    *, project: Project, labeler, battle_id, choice, client_id, time_spent_ms: int = 0
) -> Judgment:
    """Store the labeler's vote (a, b, tie, both_bad) as an arena Judgment of the battle's
    two replies, shown in the order A, B, and close the battle: its names may now be shown.
    Sending the same client_id twice stores one vote; any other vote on a voted battle is
    a Conflict. Bad input is a ServiceError and stores nothing."""
    client_uuid = parse_client_id(client_id)
    check_time_spent(time_spent_ms)
    if choice not in CHOICES:
        raise ServiceError(f"choice must be one of {', '.join(CHOICES)}.")
    existing = Judgment.objects.filter(client_id=client_uuid).first()
    if existing is not None:
        return _same_vote_or_conflict(existing, labeler=labeler, battle_id=battle_id)
    try:
        with transaction.atomic():
            battle = _locked_battle(project=project, labeler=labeler, battle_id=battle_id)
            if battle.status == ArenaBattle.Status.VOTED:
                raise Conflict("You already voted in this battle; start the next one.")
            if battle.status != ArenaBattle.Status.READY:
                raise Conflict("The replies are not there yet.")
            judgment = Judgment.objects.create(
                client_id=client_uuid,
                kind=TaskKind.ARENA,
                source=Judgment.Source.HUMAN,
                project=project,
                prompt_id=battle.prompt_id,
                response_a_id=battle.response_a_id,
                response_b_id=battle.response_b_id,
                shown_order=[battle.response_a_id, battle.response_b_id],
                choice=choice,
                labeler=labeler,
                time_spent_ms=time_spent_ms,
                guidelines=latest_guidelines(project),
            )
            battle.judgment = judgment
            battle.status = ArenaBattle.Status.VOTED
            battle.voted_at = timezone.now()
            battle.save(update_fields=["judgment", "status", "voted_at"])
            return judgment
    except IntegrityError:
        existing = Judgment.objects.filter(client_id=client_uuid).first()
        if existing is None:
            raise
        return _same_vote_or_conflict(existing, labeler=labeler, battle_id=battle_id)


def _same_vote_or_conflict(existing: Judgment, *, labeler, battle_id) -> Judgment:
    battle = ArenaBattle.objects.filter(judgment=existing).only("pk").first()
    if (
        existing.labeler_id != labeler.pk
        or battle is None
        or battle.pk != whole_number_or_none(battle_id)
    ):
        raise Conflict("This client_id was already used for another judgment.")
    return existing
