"""API of the arena (DRF): thin callers of annotation/arena/services.py and selectors.py."""

import uuid

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.arena import selectors, services
from annotation.labeling.rendering import render_markdown
from annotation.models import ArenaBattle
from annotation.projects.permissions import LABEL, project_for
from config.api_schema import OBJECT, OBJECT_LIST
from config.errors import ServiceError


def _reply_payload(response) -> dict | None:
    if response is None:
        return None
    return {"id": response.pk, "text": response.text, "html": render_markdown(response.text)}


def _version_payload(version) -> dict:
    return {"id": version.pk, "name": version.name}


def battle_payload(battle: ArenaBattle) -> dict:
    """The battle as the labeler may see it: model names only once the vote is in."""
    revealed = battle.status == ArenaBattle.Status.VOTED
    ready = battle.status in (ArenaBattle.Status.READY, ArenaBattle.Status.VOTED)
    return {
        "id": battle.pk,
        "status": battle.status,
        "error": battle.error,
        "prompt": {"id": battle.prompt_id, "text": battle.prompt.text},
        "prompt_source": battle.prompt_source,
        "replies": {
            "a": _reply_payload(battle.response_a) if ready else None,
            "b": _reply_payload(battle.response_b) if ready else None,
        },
        "models": {
            "a": _version_payload(battle.version_a) if revealed else None,
            "b": _version_payload(battle.version_b) if revealed else None,
        },
        "vote": _judgment_payload(battle.judgment) if battle.judgment_id else None,
        "created_at": battle.created_at,
        "voted_at": battle.voted_at,
    }


def _judgment_payload(judgment) -> dict:
    return {
        "id": judgment.pk,
        "client_id": str(judgment.client_id),
        "kind": judgment.kind,
        "choice": judgment.choice,
        "prompt": judgment.prompt_id,
        "response_a": judgment.response_a_id,
        "response_b": judgment.response_b_id,
        "shown_order": judgment.shown_order,
        "time_spent_ms": judgment.time_spent_ms,
        "created_at": judgment.created_at,
    }


def _battle_after(request, project, battle_id) -> dict:
    battle = selectors.arena_battle_for(project=project, labeler=request.user, battle_id=battle_id)
    return battle_payload(battle)


@extend_schema_view(
    get=extend_schema(operation_id="battles_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="battle_start",
        request=inline_serializer(
            "BattleStart", {"prompt": drf_serializers.CharField(required=False)}
        ),
        responses={201: OBJECT},
    ),
)
class BattleListApi(APIView):
    """GET: your battles in the project, newest first. POST {prompt?}: start one (201) on
    the typed prompt, or on a prompt drawn from the pool when there is none."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.arena_battles_fail_stale(project=project)
        battles = selectors.arena_battles_for(project=project, labeler=request.user, limit=100)
        return Response([battle_payload(b) for b in battles])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        if not hasattr(request.data, "get"):
            raise ServiceError('Send a JSON object, for example {} or {"prompt": "..."}.')
        battle = services.arena_battle_start(
            project=project, labeler=request.user, prompt_text=request.data.get("prompt")
        )
        return Response(_battle_after(request, project, battle.pk), status=201)


@extend_schema_view(
    get=extend_schema(operation_id="battle_detail", responses={200: OBJECT}),
)
class BattleDetailApi(APIView):
    """GET: one of your battles (status queued/running/ready/voted/failed; poll it)."""

    def get(self, request, slug, battle_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.arena_battles_fail_stale(project=project)
        return Response(_battle_after(request, project, battle_id))


@extend_schema_view(
    post=extend_schema(
        operation_id="battle_vote",
        request=inline_serializer(
            "BattleVote",
            {
                "choice": drf_serializers.ChoiceField(choices=["a", "b", "tie", "both_bad"]),
                "client_id": drf_serializers.UUIDField(),
                "time_spent_ms": drf_serializers.IntegerField(
                    min_value=0, max_value=86_400_000, required=False
                ),
            },
        ),
        responses={200: OBJECT, 201: OBJECT},
    ),
)
class BattleVoteApi(APIView):
    """POST {choice: a/b/tie/both_bad, client_id, time_spent_ms?}: 201 with the battle, its
    vote and the models' names; resending a client_id answers the same with 200."""

    def post(self, request, slug, battle_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        if not hasattr(request.data, "get"):
            raise ServiceError("Send a JSON object with choice and client_id.")
        client_id = request.data.get("client_id")
        before = _client_id_used(client_id)
        services.arena_vote(
            project=project,
            labeler=request.user,
            battle_id=battle_id,
            choice=request.data.get("choice"),
            client_id=client_id,
            time_spent_ms=request.data.get("time_spent_ms", 0),
        )
        return Response(_battle_after(request, project, battle_id), status=200 if before else 201)


def _client_id_used(client_id) -> bool:
    try:
        parsed = uuid.UUID(str(client_id))
    except (TypeError, ValueError):
        return False
    return selectors.arena_judgment_exists(client_id=parsed)


@extend_schema_view(
    post=extend_schema(operation_id="battle_retry", request=None, responses={202: OBJECT}),
)
class BattleRetryApi(APIView):
    """POST: queue a failed battle's replies again (202)."""

    def post(self, request, slug, battle_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.arena_battle_retry(project=project, labeler=request.user, battle_id=battle_id)
        return Response(_battle_after(request, project, battle_id), status=202)
