"""Pages and API of the chat mode: thin callers of annotation/chat/services.py and selectors.py."""

import time
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.chat import selectors, services
from annotation.errors import ServiceError
from annotation.permissions import LABEL, MANAGE, VIEW_DATA, can, project_for
from annotation.rendering import render_markdown
from config.celery import QueueUnavailable

# --- pages ----------------------------------------------------------------------------


def _nav(user, project) -> dict:
    return {
        "can_manage": can(user=user, project=project, capability=MANAGE),
        "can_view_data": can(user=user, project=project, capability=VIEW_DATA),
    }


@login_required
@require_http_methods(["GET", "POST"])
def chat_start_page(request, slug):
    """The labeler's chats in the project, and a form to start one with a chosen model."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    error = None
    if request.method == "POST":
        try:
            session = services.chat_start(
                project=project,
                labeler=request.user,
                model_version_id=request.POST.get("model_version"),
            )
        except ServiceError as refused:
            error = refused.message
        else:
            return redirect("chat_session", slug=project.slug, session_id=session.pk)
    versions = list(selectors.chat_versions())
    context = {
        "project": project,
        "versions": versions,
        "sessions": selectors.chat_sessions_for(project=project, labeler=request.user),
        "error": error,
        **_nav(request.user, project),
    }
    return render(request, "annotation/chat_start.html", context, status=400 if error else 200)


def _session_context(request, project, session, *, error=None, finishing=False) -> dict:
    turn = None
    try:
        turn = selectors.chat_turn_open(session=session)
    except ServiceError as broken:
        error = error or broken.message
    return {
        "project": project,
        "session": session,
        "turn": turn,
        "error": error,
        "finishing": finishing and not session.finished,
        "client_id": uuid.uuid4(),
        "shown_at_ms": int(time.time() * 1000),
        "ratings": services.RATINGS,
        **_nav(request.user, project),
    }


def _render_session(request, project, session, *, error=None, finishing=False, status=200):
    template = "annotation/chat.html#task" if request.htmx else "annotation/chat.html"
    context = _session_context(request, project, session, error=error, finishing=finishing)
    return render(request, template, context, status=status)


def _own_session(request, project, session_id):
    return selectors.chat_session_page_for(
        project=project, labeler=request.user, session_id=session_id
    )


@login_required
@require_http_methods(["GET"])
def chat_session_page(request, slug, session_id):
    """The conversation; the htmx fragment of it is polled while the replies are written."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    session = _own_session(request, project, session_id)
    return _render_session(request, project, session, finishing=request.GET.get("finish") == "1")


def _time_spent_ms(raw: str | None) -> int:
    try:
        shown_at = int(raw or "")
    except ValueError:
        return 0
    return max(0, min(int(time.time() * 1000) - shown_at, 86_400_000))


def _session_action(request, slug, session_id, action, *, finishing_on_error=False):
    """Run one chat service for a page POST; answer with the fragment (htmx) or a redirect."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    session = _own_session(request, project, session_id)
    error, status = None, 200
    try:
        action(project=project, labeler=request.user, session_id=session.pk)
    except selectors.ChatNotFound:
        raise Http404("No such chat.") from None
    except ServiceError as refused:
        error, status = refused.message, refused.status_code
    except QueueUnavailable as down:
        error, status = str(down), 503
    finishing = finishing_on_error and error is not None
    if not request.htmx:
        if error:
            messages.error(request, error)
        url = reverse("chat_session", kwargs={"slug": project.slug, "session_id": session.pk})
        return redirect(f"{url}?finish=1" if finishing else url)
    session.refresh_from_db()
    return _render_session(
        request, project, session, error=error, finishing=finishing, status=status
    )


@login_required
@require_POST
def chat_message(request, slug, session_id):
    def send(**where):
        services.chat_message_send(text=request.POST.get("text", ""), **where)

    return _session_action(request, slug, session_id, send)


@login_required
@require_POST
def chat_pick(request, slug, session_id):
    def pick(**where):
        services.chat_reply_pick(
            choice=request.POST.get("choice", ""),
            client_id=request.POST.get("client_id"),
            time_spent_ms=_time_spent_ms(request.POST.get("shown_at_ms")),
            **where,
        )

    return _session_action(request, slug, session_id, pick)


@login_required
@require_POST
def chat_retry(request, slug, session_id):
    return _session_action(request, slug, session_id, services.chat_replies_retry)


@login_required
@require_POST
def chat_finish(request, slug, session_id):
    def finish(**where):
        services.chat_finish(
            rating=request.POST.get("rating"),
            comment=request.POST.get("comment", ""),
            **where,
        )

    return _session_action(request, slug, session_id, finish, finishing_on_error=True)


# --- API ------------------------------------------------------------------------------


def _reply_payload(response) -> dict:
    return {
        "id": response.pk,
        "text": response.text,
        "html": render_markdown(response.text),
    }


def chat_session_payload(session) -> dict:
    turn = selectors.chat_turn_open(session=session)
    return {
        "id": session.pk,
        "model_version": {
            "id": session.model_version_id,
            "name": session.model_version.name,
        },
        "messages": session.messages,
        "turn": None
        if turn is None
        else {
            "status": turn.status,
            "error": turn.error,
            # Display order: the first is "left", the second "right" when picking.
            "replies": [_reply_payload(r) for r in turn.replies],
        },
        "finished": session.finished,
        "rating": session.rating,
        "comment": session.comment,
        "created_at": session.created_at,
    }


def _chat_judgment_payload(judgment) -> dict:
    return {
        "id": judgment.pk,
        "client_id": str(judgment.client_id),
        "kind": judgment.kind,
        "chat_session": judgment.chat_session_id,
        "prompt": judgment.prompt_id,
        "context": judgment.context,
        "shown_order": judgment.shown_order,
        "response_a": judgment.response_a_id,
        "response_b": judgment.response_b_id,
        "choice": judgment.choice,
        "time_spent_ms": judgment.time_spent_ms,
        "created_at": judgment.created_at,
    }


class ChatListApi(APIView):
    """GET: your chats in the project. POST {model_version}: start one (201)."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        sessions = selectors.chat_sessions_for(project=project, labeler=request.user, limit=100)
        return Response([chat_session_payload(s) for s in sessions])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        session = services.chat_start(
            project=project,
            labeler=request.user,
            model_version_id=request.data.get("model_version"),
        )
        return Response(chat_session_payload(session), status=201)


class ChatDetailApi(APIView):
    """The conversation and the open turn (status queued/running/ready/failed; poll it)."""

    def get(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        session = selectors.chat_session_for(
            project=project, labeler=request.user, session_id=session_id
        )
        return Response(chat_session_payload(session))


def _session_after(request, project, session_id) -> dict:
    session = selectors.chat_session_for(
        project=project, labeler=request.user, session_id=session_id
    )
    return chat_session_payload(session)


class ChatMessageApi(APIView):
    """POST {text, params?}: your next message; the two replies are written on the worker."""

    def post(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        params = request.data.get("params")
        if params is not None and not isinstance(params, dict):
            raise ServiceError("params must be an object of generation settings.")
        services.chat_message_send(
            project=project,
            labeler=request.user,
            session_id=session_id,
            text=request.data.get("text"),
            params=params,
        )
        return Response(_session_after(request, project, session_id), status=202)


class ChatPickApi(APIView):
    """POST {choice: left/right/tie/both_bad, client_id, time_spent_ms?}: 201 with the stored
    comparison; resending a client_id returns it with 200."""

    def post(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        client_id = request.data.get("client_id")
        before = _client_id_used(client_id)
        judgment = services.chat_reply_pick(
            project=project,
            labeler=request.user,
            session_id=session_id,
            choice=request.data.get("choice"),
            client_id=client_id,
            time_spent_ms=request.data.get("time_spent_ms", 0),
        )
        return Response(_chat_judgment_payload(judgment), status=200 if before else 201)


def _client_id_used(client_id) -> bool:
    try:
        parsed = uuid.UUID(str(client_id))
    except (TypeError, ValueError):
        return False
    return selectors.chat_judgment_exists(client_id=parsed)


class ChatRetryApi(APIView):
    """POST: queue a failed turn's replies again."""

    def post(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.chat_replies_retry(project=project, labeler=request.user, session_id=session_id)
        return Response(_session_after(request, project, session_id), status=202)


class ChatFinishApi(APIView):
    """POST {rating: 1-7, comment?}: close the chat."""

    def post(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        session = services.chat_finish(
            project=project,
            labeler=request.user,
            session_id=session_id,
            rating=request.data.get("rating"),
            comment=request.data.get("comment", ""),
        )
        return Response(chat_session_payload(session))
