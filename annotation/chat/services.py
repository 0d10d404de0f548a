"""Chat labeling: a labeler talks to a registered model; at each turn the model offers two
replies, the labeler picks one (a comparison judgment with the conversation so far as its
context) and the conversation goes on from the picked reply; at the end the labeler rates
the whole conversation 1-7.

Each turn is a ChatTurn row (annotation/chat/models.py): the labeler's message is its own
Prompt row (metadata ``{"chat_session": id}``, which keeps it out of the labeling pool) and
its two Responses (sample_index 0 and 1) are the replies. The turn is also the replies' job
on the one job lifecycle (config/jobs.py): created queued in the request and sent on commit
to the Celery ``interactive`` worker (annotation/chat/tasks.py), claimed once under a row
lock, heartbeating while it generates. A turn whose worker died is queued again and resumes
(its replies are written once, so a rerun stores nothing twice); after
``ChatTurn.max_attempts`` it is failed with the reason, for the labeler to press "Try
again". Writes are the ``chat_*`` services here; reads are the ``*_for``/``chat_turn_*``
selectors in annotation/chat/selectors.py.
"""

import logging
import random

from django.conf import settings
from django.db import IntegrityError, transaction

from annotation.chat.selectors import (
    ChatNotFound,
    OpenTurn,
    TurnStatus,
    chat_turn_open,
    chat_versions,
)
from annotation.labeling.inputs import check_time_spent, parse_client_id, whole_number_or_none
from annotation.models import (
    CHAT_TURN_KEY,
    ChatSession,
    ChatTurn,
    Judgment,
    Project,
    Prompt,
    Response,
    TaskKind,
)
from annotation.projects.selectors import latest_guidelines
from config import jobs
from config.celery import enqueue_after_commit
from config.errors import Conflict, ServiceError
from models_registry.endpoints import generator_for
from models_registry.engine import ml

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8_000
MAX_COMMENT_CHARS = 5_000
MAX_TURNS = 50
RATINGS = range(1, 8)
SIDES = ("left", "right")
CHOICES = (*SIDES, "tie", "both_bad")
REPLIES_PER_TURN = 2
# Short enough that a CPU worker answers in seconds; the labeler waits on each turn.
DEFAULT_PARAMS = {"max_new_tokens": 128, "temperature": 0.8, "top_p": 0.95}
WAITING = (ChatTurn.Status.QUEUED, ChatTurn.Status.RUNNING)


def chat_start(*, project: Project, labeler, model_version_id) -> ChatSession:
    """A new, empty conversation of the labeler with the model version."""
    if not project.uses(TaskKind.CHAT):
        raise ServiceError("This project does not use chats.")
    version = (
        chat_versions(project=project).filter(pk=whole_number_or_none(model_version_id)).first()
    )
    if version is None:
        raise ServiceError("Choose a model to chat with.")
    return ChatSession.objects.create(project=project, labeler=labeler, model_version=version)


def _locked_session(*, project: Project, labeler, session_id) -> ChatSession:
    session = (
        ChatSession.objects.select_for_update()
        .filter(pk=whole_number_or_none(session_id), project=project, labeler=labeler)
        .first()
    )
    if session is None:
        raise ChatNotFound("No such chat.")
    if session.finished:
        raise Conflict("This chat is finished.")
    return session


def _generation_params(params: dict | None) -> dict:
    try:
        parsed = ml.GenerationParams(**{**DEFAULT_PARAMS, **(params or {})})
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Bad generation parameters: {error}") from None
    return parsed.as_dict()


def chat_message_send(
    *, project: Project, labeler, session_id, text: str, params: dict | None = None
) -> ChatTurn:
    """Add the labeler's message and queue the model's two replies on the interactive
    worker. Returns the turn. Refused while the previous turn still waits for replies or a
    pick. Raises QueueUnavailable (after recording it on the turn) if the broker is down."""
    text = (text or "").strip() if isinstance(text, str) else ""
    if not text:
        raise ServiceError("Write a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ServiceError(f"Keep a message under {MAX_MESSAGE_CHARS} characters.")
    generation_params = _generation_params(params)
    with transaction.atomic():
        session = _locked_session(project=project, labeler=labeler, session_id=session_id)
        if session.messages and session.messages[-1]["role"] == "user":
            raise Conflict("Pick one of the model's replies before you write again.")
        if len(session.messages) >= 2 * MAX_TURNS:
            raise ServiceError(f"A chat holds at most {MAX_TURNS} turns; finish this one.")
        message_index = len(session.messages)
        session.messages = [*session.messages, {"role": "user", "content": text}]
        session.save(update_fields=["messages"])
        prompt = Prompt.objects.create(
            project=project, text=text, metadata={CHAT_TURN_KEY: session.pk}
        )
        turn = ChatTurn.objects.create(
            session=session,
            prompt=prompt,
            message_index=message_index,
            model_version_id=session.model_version_id,
            # The seed is per turn so a turn's two replies can be reproduced.
            generation_params={**generation_params, "seed": random.randrange(2**31)},
            total=REPLIES_PER_TURN,
        )
        _enqueue_replies(turn.pk)
    return turn


def chat_replies_retry(*, project: Project, labeler, session_id) -> ChatTurn:
    """Queue the open turn's replies again after a failure, with a fresh set of attempts."""
    with transaction.atomic():
        session = _locked_session(project=project, labeler=labeler, session_id=session_id)
        open_turn = chat_turn_open(session=session)
        if open_turn is None or open_turn.status != TurnStatus.FAILED:
            raise Conflict("Only a failed turn can be tried again.")
        turn = ChatTurn.objects.select_for_update().get(pk=open_turn.job.pk)
        turn.status = ChatTurn.Status.QUEUED
        turn.error = ""
        turn.attempts = 0  # the labeler's "Try again" gets a fresh set of attempts
        turn.finished_at = None
        turn.save(update_fields=["status", "error", "attempts", "finished_at"])
        jobs.job_log(ChatTurn, turn.pk, "queued again by the labeler")
        _enqueue_replies(turn.pk)
    return turn


def chat_turns_fail_stale(*, project: Project | None = None) -> int:
    """Take up turns whose worker stopped reporting for ``CHAT_STALE_AFTER_SECONDS``: each
    is queued again and resumes; after its last attempt it is failed with the reason and a
    "Try again" for the labeler. Returns how many."""
    filters = {"session__project": project} if project is not None else {}
    return jobs.job_fail_stale(
        ChatTurn,
        after_seconds=settings.CHAT_STALE_AFTER_SECONDS,
        resume=lambda turn: _enqueue_replies(turn.pk),
        on_lost=_turn_lost,
        **filters,
    )


def _enqueue_replies(turn_id: int) -> None:
    from annotation.chat.tasks import chat_replies_generate_task

    enqueue_after_commit(
        chat_replies_generate_task,
        job_id=turn_id,
        on_failure=lambda message: _turn_failed(turn_id, message),
    )


def _turn_failed(turn_id: int, message: str) -> None:
    """Fail a turn still waiting for its replies, with the reason the labeler sees."""
    with transaction.atomic():
        turn = ChatTurn.objects.select_for_update().filter(pk=turn_id, status__in=WAITING).first()
        if turn is None:
            return
        jobs.job_finish(ChatTurn, turn_id, ChatTurn.Status.FAILED, error=message)
        jobs.job_log(ChatTurn, turn_id, f"failed: {message}")


def _turn_lost(turn: ChatTurn) -> None:
    """Fail a locked turn whose worker died on its last attempt, saying what to do."""
    reason = jobs.lost_reason(settings.CHAT_STALE_AFTER_SECONDS)
    message = (
        f'{reason[:-1]} on attempt {turn.attempts}. Press "Try again" to ask the model once more.'
    )
    jobs.job_finish(ChatTurn, turn.pk, ChatTurn.Status.FAILED, error=message)
    jobs.job_log(ChatTurn, turn.pk, f"failed: {message}")


def chat_replies_generate(*, turn_id: int) -> None:
    """Worker side: write the turn's two replies (one sampled batch of two) and show them
    in random order. Claimed once (a redelivered message for a turn whose worker died
    resumes it, or fails it with the reason after its last attempt; one for a turn that
    has ended does nothing) and heartbeating while it generates. A failure is recorded on
    the turn with its error."""
    stale_after = settings.CHAT_STALE_AFTER_SECONDS
    claimed = jobs.job_claim(ChatTurn, turn_id, stale_after=stale_after, on_lost=_turn_lost)
    if claimed is None:
        return
    try:
        turn = ChatTurn.objects.select_related("session", "prompt", "model_version").get(pk=turn_id)
        with jobs.job_heartbeat(ChatTurn, turn_id, every=max(stale_after / 4, 0.05)):
            replies = _ensure_replies(turn)
        jobs.job_progress(ChatTurn, turn_id, done=len(replies))
        _open_for_pick(turn_id, replies)
    except Exception as error:
        logger.exception("Chat replies for turn %s failed", turn_id)
        _turn_failed(turn_id, f"{type(error).__name__}: {error}")


def _ensure_replies(turn: ChatTurn) -> list[Response]:
    """The turn's two replies, generated only if they are not stored yet (a resumed turn
    whose dead worker got as far as storing them generates nothing)."""
    stored = Response.objects.filter(prompt=turn.prompt, model_version=turn.model_version)
    if stored.count() < REPLIES_PER_TURN:
        jobs.job_log(ChatTurn, turn.pk, "generating both replies")
        _generate_and_store(turn)
        jobs.job_log(ChatTurn, turn.pk, "both replies written")
    return list(stored.order_by("sample_index"))


def _generate_and_store(turn: ChatTurn) -> None:
    conversation = [
        {"role": m["role"], "content": m["content"]}
        for m in turn.session.messages[: turn.message_index + 1]
    ]
    version = turn.model_version
    params = ml.GenerationParams(**turn.generation_params)
    # The version's inference server when one is registered, else its files in this process.
    replies = generator_for(version).generate(
        [conversation] * REPLIES_PER_TURN, params, batch_size=REPLIES_PER_TURN
    )
    # One statement for both, and unique per (prompt, version, sample_index): a rerun
    # stores nothing twice.
    Response.objects.bulk_create(
        [
            Response(
                prompt=turn.prompt,
                model_version=version,
                sample_index=index,
                text=reply.text,
                generation_params=params.as_dict(),
                completion_tokens=reply.completion_tokens,
                generation_seconds=reply.seconds,
                finished=reply.finished,
            )
            for index, reply in enumerate(replies)
        ],
        ignore_conflicts=True,
    )


def _open_for_pick(turn_id: int, replies: list[Response]) -> None:
    """End the running turn successfully, its replies in a random order decided once."""
    with transaction.atomic():
        turn = ChatTurn.objects.select_for_update().get(pk=turn_id)
        if turn.status != ChatTurn.Status.RUNNING:
            return  # failed or ended meanwhile: leave it as it is
        ids = [reply.pk for reply in replies]
        random.shuffle(ids)
        turn.shown_order = ids
        turn.save(update_fields=["shown_order"])
        jobs.job_finish(ChatTurn, turn_id, ChatTurn.Status.SUCCEEDED)


def chat_reply_pick(
    *,
    project: Project,
    labeler,
    session_id,
    choice: str,
    client_id,
    time_spent_ms: int = 0,
) -> Judgment:
    """Store the labeler's pick between the turn's two replies as a comparison judgment
    (context = the conversation before the latest message) and continue the conversation
    from the picked reply; tie and both_bad continue from the left one. Sending the same
    client_id twice stores one judgment; a second pick of the same turn is a Conflict."""
    client_uuid = parse_client_id(client_id)
    check_time_spent(time_spent_ms)
    if choice not in CHOICES:
        raise ServiceError(f"choice must be one of {', '.join(CHOICES)}.")
    existing = Judgment.objects.filter(client_id=client_uuid).first()
    if existing is not None:
        return _same_pick_or_conflict(existing, labeler=labeler, session_id=session_id)
    try:
        with transaction.atomic():
            session = _locked_session(project=project, labeler=labeler, session_id=session_id)
            turn = chat_turn_open(session=session)
            if turn is None:
                raise Conflict("There is no reply to pick: write a message first.")
            if turn.status != TurnStatus.READY:
                raise Conflict("The replies are not there yet.")
            judgment = _store_pick(session, turn, choice, client_uuid, time_spent_ms)
            continued = turn.replies[1] if choice == "right" else turn.replies[0]
            session.messages = [
                *session.messages,
                {"role": "assistant", "content": continued.text},
            ]
            session.save(update_fields=["messages"])
            return judgment
    except IntegrityError:
        existing = Judgment.objects.filter(client_id=client_uuid).first()
        if existing is None:
            raise
        return _same_pick_or_conflict(existing, labeler=labeler, session_id=session_id)


def _store_pick(session, turn: OpenTurn, side: str, client_id, time_spent_ms) -> Judgment:
    left, right = turn.replies
    response_a, response_b = sorted(turn.replies, key=lambda r: r.sample_index)
    if side in SIDES:
        picked = left if side == "left" else right
        choice = Judgment.Choice.A if picked == response_a else Judgment.Choice.B
    else:
        choice = side
    return Judgment.objects.create(
        client_id=client_id,
        kind=TaskKind.COMPARISON,
        project_id=session.project_id,
        prompt=turn.prompt,
        shown_order=[left.pk, right.pk],
        context=session.messages[: turn.job.message_index],
        response_a=response_a,
        response_b=response_b,
        choice=choice,
        chat_session=session,
        labeler=session.labeler,
        time_spent_ms=time_spent_ms,
        guidelines=latest_guidelines(session.project),
    )


def _same_pick_or_conflict(existing: Judgment, *, labeler, session_id) -> Judgment:
    if existing.labeler_id != labeler.pk or existing.chat_session_id != whole_number_or_none(
        session_id
    ):
        raise Conflict("This client_id was already used for another judgment.")
    return existing


def chat_finish(*, project: Project, labeler, session_id, rating, comment: str = "") -> ChatSession:
    """Close the conversation with the labeler's rating of it (1 worst to 7 best) and an
    optional comment. A finished chat takes no more messages or picks."""
    rating = whole_number_or_none(rating)
    if rating not in RATINGS:
        raise ServiceError("Rate the conversation from 1 (bad) to 7 (excellent).")
    comment = (comment or "").strip() if isinstance(comment, str) else ""
    if len(comment) > MAX_COMMENT_CHARS:
        raise ServiceError(f"Keep the comment under {MAX_COMMENT_CHARS} characters.")
    with transaction.atomic():
        session = _locked_session(project=project, labeler=labeler, session_id=session_id)
        if not any(m["role"] == "assistant" for m in session.messages):
            raise ServiceError("Pick at least one reply before you finish.")
        session.finished = True
        session.rating = rating
        session.comment = comment
        session.save(update_fields=["finished", "rating", "comment"])
    return session
