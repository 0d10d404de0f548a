"""Chat labeling: a labeler talks to a registered model; at each turn the model offers two
replies, the labeler picks one (a comparison judgment with the conversation so far as its
context) and the conversation goes on from the picked reply; at the end the labeler rates
the whole conversation 1-7.

Each turn is a Prompt row in the project (text = the labeler's message, metadata
``{"chat_session": id, "turn": index, "status": ...}``); that row is also the turn's job
row, claimed by the worker under a row lock, and its two Responses (sample_index 0 and 1)
are the replies. Writes are the ``chat_*`` services; reads are the ``*_for``/``chat_turn_*``
selectors in annotation/chat/selectors.py. Model work runs only on the Celery ``gpu``
worker (annotation/chat/tasks.py).
"""

import logging
import random

from django.db import IntegrityError, transaction

from annotation.chat.selectors import (
    ChatNotFound,
    ChatTurn,
    TurnStatus,
    chat_turn_open,
    chat_versions,
)
from annotation.labeling.inputs import check_time_spent, parse_client_id, whole_number_or_none
from annotation.models import ChatSession, Judgment, Project, Prompt, Response, TaskKind
from config.celery import enqueue_after_commit
from config.errors import Conflict, ServiceError
from models_registry.engine import ml

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8_000
MAX_COMMENT_CHARS = 5_000
MAX_TURNS = 50
RATINGS = range(1, 8)
SIDES = ("left", "right")
CHOICES = (*SIDES, "tie", "both_bad")
# Short enough that a CPU worker answers in seconds; the labeler waits on each turn.
DEFAULT_PARAMS = {"max_new_tokens": 128, "temperature": 0.8, "top_p": 0.95}


def chat_start(*, project: Project, labeler, model_version_id) -> ChatSession:
    """A new, empty conversation of the labeler with the model version."""
    version = chat_versions().filter(pk=whole_number_or_none(model_version_id)).first()
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
) -> Prompt:
    """Add the labeler's message and queue the model's two replies on the gpu worker.
    Returns the turn's prompt. Refused while the previous turn still waits for replies or
    a pick. Raises QueueUnavailable (after recording it on the turn) if the broker is down."""
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
        turn = len(session.messages)
        session.messages = [*session.messages, {"role": "user", "content": text}]
        session.save(update_fields=["messages"])
        prompt = Prompt.objects.create(
            project=project,
            text=text,
            metadata={
                "chat_session": session.pk,
                "turn": turn,
                "status": TurnStatus.QUEUED,
                "error": "",
                # The seed is per turn so a turn's two replies can be reproduced.
                "generation_params": {**generation_params, "seed": random.randrange(2**31)},
            },
        )
        _enqueue_replies(prompt.pk)
    return prompt


def chat_replies_retry(*, project: Project, labeler, session_id) -> Prompt:
    """Queue the open turn's replies again after a failure."""
    with transaction.atomic():
        session = _locked_session(project=project, labeler=labeler, session_id=session_id)
        turn = chat_turn_open(session=session)
        if turn is None or turn.status != TurnStatus.FAILED:
            raise Conflict("Only a failed turn can be tried again.")
        prompt = Prompt.objects.select_for_update().get(pk=turn.prompt.pk)
        prompt.metadata = {**prompt.metadata, "status": TurnStatus.QUEUED, "error": ""}
        prompt.save(update_fields=["metadata"])
        _enqueue_replies(prompt.pk)
    return prompt


def _enqueue_replies(prompt_id: int) -> None:
    from annotation.chat.tasks import chat_replies_generate_task

    enqueue_after_commit(
        chat_replies_generate_task,
        job_id=prompt_id,
        on_failure=lambda message: _turn_failed(prompt_id, message),
    )


def _turn_failed(prompt_id: int, message: str) -> None:
    with transaction.atomic():
        prompt = Prompt.objects.select_for_update().filter(pk=prompt_id).first()
        if prompt is None:
            return
        prompt.metadata = {**prompt.metadata, "status": TurnStatus.FAILED, "error": message}
        prompt.save(update_fields=["metadata"])


def _claim_turn(prompt_id: int) -> Prompt | None:
    with transaction.atomic():
        prompt = (
            Prompt.objects.select_for_update()
            .filter(pk=prompt_id, metadata__has_key="chat_session")
            .first()
        )
        if prompt is None or prompt.metadata.get("status") != TurnStatus.QUEUED:
            return None  # a redelivered message for a turn already taken
        prompt.metadata = {**prompt.metadata, "status": TurnStatus.RUNNING}
        prompt.save(update_fields=["metadata"])
        return prompt


def chat_replies_generate(*, prompt_id: int) -> None:
    """Worker side: write the turn's two replies (one sampled batch of two) and show them
    in random order. Safe to repeat; a failure is recorded on the turn with its error."""
    prompt = _claim_turn(prompt_id)
    if prompt is None:
        return
    try:
        session = ChatSession.objects.select_related("model_version").get(
            pk=prompt.metadata["chat_session"]
        )
        conversation = [
            {"role": m["role"], "content": m["content"]}
            for m in session.messages[: prompt.metadata["turn"] + 1]
        ]
        version = session.model_version
        model, tokenizer = ml.load_policy(version.base_path, version.adapter_path or None)
        params = ml.GenerationParams(**prompt.metadata["generation_params"])
        replies = ml.generate_replies(
            model, tokenizer, [conversation, conversation], params, batch_size=2
        )
        _store_replies(prompt, version, params, replies)
    except Exception as error:
        logger.exception("Chat replies for prompt %s failed", prompt_id)
        _turn_failed(prompt_id, f"{type(error).__name__}: {error}")


def _store_replies(prompt: Prompt, version, params, replies) -> None:
    with transaction.atomic():
        prompt = Prompt.objects.select_for_update().get(pk=prompt.pk)
        Response.objects.bulk_create(
            [
                Response(
                    prompt=prompt,
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
        ids = list(
            Response.objects.filter(prompt=prompt, model_version=version)
            .order_by("sample_index")
            .values_list("pk", flat=True)
        )
        random.shuffle(ids)
        prompt.metadata = {
            **prompt.metadata,
            "status": TurnStatus.READY,
            "error": "",
            "shown_order": ids,
        }
        prompt.save(update_fields=["metadata"])


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


def _store_pick(session, turn: ChatTurn, side: str, client_id, time_spent_ms) -> Judgment:
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
        context=session.messages[: turn.prompt.metadata["turn"]],
        response_a=response_a,
        response_b=response_b,
        choice=choice,
        chat_session=session,
        labeler=session.labeler,
        time_spent_ms=time_spent_ms,
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
