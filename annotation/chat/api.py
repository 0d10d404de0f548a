"""API of the chat mode (DRF): thin callers of annotation/chat/services.py and selectors.py."""

import uuid

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.chat import selectors, services
from annotation.labeling.rendering import render_markdown
from annotation.projects.permissions import LABEL, project_for
from config.api_schema import OBJECT, OBJECT_LIST
from config.errors import ServiceError


def _reply_payload(response) -> dict:
    return {"id": response.pk, "text": response.text, "html": render_markdown(response.text)}


def chat_session_payload(session) -> dict:
    turn = selectors.chat_turn_open(session=session)
    return {
        "id": session.pk,
        "model_version": {"id": session.model_version_id, "name": session.model_version.name},
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


@extend_schema_view(
    get=extend_schema(operation_id="chats_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="chat_start",
        request=inline_serializer("ChatStart", {"model_version": drf_serializers.IntegerField()}),
        responses={201: OBJECT},
    ),
)
class ChatListApi(APIView):
    """GET: your chats in the project. POST {model_version}: start one (201)."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.chat_turns_fail_stale(project=project)
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


@extend_schema_view(
    get=extend_schema(operation_id="chat_detail", responses={200: OBJECT}),
)
class ChatDetailApi(APIView):
    """The conversation and the open turn (status queued/running/ready/failed; poll it).
    Reading it also takes up the project's turns whose worker went silent."""

    def get(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        session = selectors.chat_session_for(
            project=project, labeler=request.user, session_id=session_id
        )
        # A turn whose worker went silent is queued again (or failed) before it is shown.
        services.chat_turns_fail_stale(project=project)
        return Response(chat_session_payload(session))


def _session_after(request, project, session_id) -> dict:
    session = selectors.chat_session_for(
        project=project, labeler=request.user, session_id=session_id
    )
    return chat_session_payload(session)


@extend_schema_view(
    post=extend_schema(
        operation_id="chat_message",
        request=inline_serializer(
            "ChatMessage",
            {
                "text": drf_serializers.CharField(),
                "params": drf_serializers.DictField(required=False),
            },
        ),
        responses={202: OBJECT},
    ),
)
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


@extend_schema_view(
    post=extend_schema(
        operation_id="chat_pick",
        request=inline_serializer(
            "ChatPick",
            {
                "choice": drf_serializers.ChoiceField(choices=["left", "right", "tie", "both_bad"]),
                "client_id": drf_serializers.UUIDField(),
                "time_spent_ms": drf_serializers.IntegerField(
                    min_value=0, max_value=86_400_000, required=False
                ),
            },
        ),
        responses={200: OBJECT, 201: OBJECT},
    ),
)
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


@extend_schema_view(
    post=extend_schema(operation_id="chat_retry", request=None, responses={202: OBJECT}),
)
class ChatRetryApi(APIView):
    """POST: queue a failed turn's replies again."""

    def post(self, request, slug, session_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.chat_replies_retry(project=project, labeler=request.user, session_id=session_id)
        return Response(_session_after(request, project, session_id), status=202)


@extend_schema_view(
    post=extend_schema(
        operation_id="chat_finish",
        request=inline_serializer(
            "ChatFinish",
            {
                "rating": drf_serializers.IntegerField(min_value=1, max_value=7),
                "comment": drf_serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={200: OBJECT},
    ),
)
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
