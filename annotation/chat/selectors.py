"""Reads of the chat mode: the models a labeler may chat with, the labeler's own sessions
(anyone else's is ChatNotFound, never told apart from a missing one), the open turn and
its judgments.
"""

import uuid
from dataclasses import dataclass, field

from django.http import Http404

from annotation.labeling.inputs import whole_number_or_none
from annotation.models import ChatSession, ChatTurn, Judgment, Project, Prompt, Response
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion


class TurnStatus:
    """A turn's status in pages and the API (the job's, with "ready" for succeeded)."""

    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class ChatNotFound(ServiceError):
    """Unknown session, or one that belongs to someone else (the two are not told apart)."""

    status_code = 404


def chat_versions(*, project: Project):
    """Models a labeler may chat with in ``project``: policies not retired there, newest
    first."""
    return registry_selectors.servable_versions(project=project, kind=ModelVersion.Kind.POLICY)


def chat_sessions_for(*, project: Project, labeler, limit: int = 20):
    return (
        ChatSession.objects.filter(project=project, labeler=labeler)
        .select_related("model_version")
        .order_by("-created_at", "-id")[:limit]
    )


def chat_session_for(*, project: Project, labeler, session_id) -> ChatSession:
    """The labeler's own session in the project; ChatNotFound for anyone else's."""
    session = (
        ChatSession.objects.select_related("model_version")
        .filter(pk=whole_number_or_none(session_id), project=project, labeler=labeler)
        .first()
    )
    if session is None:
        raise ChatNotFound("No such chat.")
    return session


def chat_session_page_for(*, project: Project, labeler, session_id) -> ChatSession:
    """As chat_session_for, for pages: a 404 instead of an error message."""
    try:
        return chat_session_for(project=project, labeler=labeler, session_id=session_id)
    except ChatNotFound:
        raise Http404("No such chat.") from None


# The turn's status as pages and the API name it: a succeeded job is "ready" for the pick.
_STATUS_OF_JOB = {
    ChatTurn.Status.QUEUED: TurnStatus.QUEUED,
    ChatTurn.Status.RUNNING: TurnStatus.RUNNING,
    ChatTurn.Status.SUCCEEDED: TurnStatus.READY,
    ChatTurn.Status.FAILED: TurnStatus.FAILED,
    ChatTurn.Status.CANCELLED: TurnStatus.FAILED,
}


@dataclass
class OpenTurn:
    """The open turn as the page shows it: the labeler's latest message, where its
    replies stand, and the replies once both exist."""

    job: ChatTurn
    status: str
    error: str = ""
    # The two replies in the order shown (left, right); empty until both exist.
    replies: list[Response] = field(default_factory=list)

    @property
    def prompt(self) -> Prompt:
        return self.job.prompt

    @property
    def is_waiting(self) -> bool:
        return self.status in (TurnStatus.QUEUED, TurnStatus.RUNNING)


def chat_turn_open(*, session: ChatSession) -> OpenTurn | None:
    """The turn waiting for replies or for the labeler's pick; None when it is the labeler's
    move (no message yet, or the last reply was picked) or the session is finished."""
    if session.finished or not session.messages or session.messages[-1]["role"] != "user":
        return None
    job = (
        ChatTurn.objects.select_related("prompt")
        .filter(session=session, message_index=len(session.messages) - 1)
        .first()
    )
    if job is None:  # cannot happen through the services; treat as a lost job
        raise ServiceError("This turn has no generation job; finish the chat.")
    turn = OpenTurn(job=job, status=_STATUS_OF_JOB[job.status], error=job.error)
    if turn.status == TurnStatus.READY:
        by_id = Response.objects.in_bulk(job.shown_order)
        turn.replies = [by_id[pk] for pk in job.shown_order]
    return turn


def chat_judgments_for(*, session: ChatSession):
    return Judgment.objects.filter(chat_session=session).order_by("created_at", "id")


def chat_judgment_exists(*, client_id: uuid.UUID) -> bool:
    return Judgment.objects.filter(client_id=client_id).exists()
