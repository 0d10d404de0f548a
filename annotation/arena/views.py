"""Pages and API of the arena: thin callers of annotation/arena/services.py and selectors.py."""

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

from annotation.arena import selectors, services
from annotation.errors import ServiceError
from annotation.models import ArenaBattle
from annotation.permissions import LABEL, MANAGE, VIEW_DATA, can, project_for
from annotation.rendering import render_markdown
from config.celery import QueueUnavailable

# Keys of each vote, as shown on the page; app.js clicks the button that names the key.
VOTE_BUTTONS = [
    ("a", "A is better", "1 a"),
    ("b", "B is better", "2 b"),
    ("tie", "Tie", "3 t"),
    ("both_bad", "Both are bad", "4 x"),
]

# --- pages ----------------------------------------------------------------------------


def _nav(user, project) -> dict:
    return {
        "can_manage": can(user=user, project=project, capability=MANAGE),
        "can_view_data": can(user=user, project=project, capability=VIEW_DATA),
    }


def _start_form_prompt(post) -> str | None:
    """None for a pool prompt; the typed text (checked by the service) otherwise."""
    return post.get("prompt", "") if post.get("source") == "typed" else None


@login_required
@require_http_methods(["GET", "POST"])
def arena_page(request, slug):
    """The labeler's recent battles, and forms to start one on a pool or a typed prompt."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    error, status = None, 200
    if request.method == "POST":
        try:
            battle = services.arena_battle_start(
                project=project,
                labeler=request.user,
                prompt_text=_start_form_prompt(request.POST),
            )
        except ServiceError as refused:
            error, status = refused.message, refused.status_code
        except QueueUnavailable as down:
            error, status = str(down), 503
        else:
            return redirect("arena_battle", slug=project.slug, battle_id=battle.pk)
    context = {
        "project": project,
        "battles": selectors.arena_battles_for(project=project, labeler=request.user),
        "contestants": selectors.arena_versions().count(),
        "pool_size": selectors.arena_pool_size(project=project),
        "typed": request.POST.get("prompt", "") if error else "",
        "max_prompt_chars": services.MAX_PROMPT_CHARS,
        "error": error,
        **_nav(request.user, project),
    }
    return render(request, "annotation/arena.html", context, status=status)


def _render_battle(request, project, battle, *, error=None, status=200):
    template = "annotation/arena_battle.html"
    if request.htmx:
        template += "#task"
    context = {
        "project": project,
        "battle": battle,
        "waiting": battle.status in selectors.WAITING,
        "revealed": battle.status == ArenaBattle.Status.VOTED,
        "vote_buttons": VOTE_BUTTONS,
        "error": error,
        "client_id": uuid.uuid4(),
        "shown_at_ms": int(time.time() * 1000),
        **_nav(request.user, project),
    }
    return render(request, template, context, status=status)


@login_required
@require_http_methods(["GET"])
def arena_battle_page(request, slug, battle_id):
    """One battle; its htmx fragment is polled while the replies are written."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    battle = selectors.arena_battle_page_for(
        project=project, labeler=request.user, battle_id=battle_id
    )
    return _render_battle(request, project, battle)


def _time_spent_ms(raw: str | None) -> int:
    try:
        shown_at = int(raw or "")
    except ValueError:
        return 0
    return max(0, min(int(time.time() * 1000) - shown_at, 86_400_000))


def _battle_action(request, slug, battle_id, action):
    """Run one arena service for a page POST; answer with the fragment (htmx) or a redirect."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    battle = selectors.arena_battle_page_for(
        project=project, labeler=request.user, battle_id=battle_id
    )
    error, status = None, 200
    try:
        action(project=project, labeler=request.user, battle_id=battle.pk)
    except selectors.BattleNotFound:
        raise Http404("No such battle.") from None
    except ServiceError as refused:
        error, status = refused.message, refused.status_code
    except QueueUnavailable as down:
        error, status = str(down), 503
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(
            reverse("arena_battle", kwargs={"slug": project.slug, "battle_id": battle.pk})
        )
    battle = selectors.arena_battle_for(project=project, labeler=request.user, battle_id=battle.pk)
    return _render_battle(request, project, battle, error=error, status=status)


@login_required
@require_POST
def arena_vote(request, slug, battle_id):
    def vote(**where):
        services.arena_vote(
            choice=request.POST.get("choice", ""),
            client_id=request.POST.get("client_id"),
            time_spent_ms=_time_spent_ms(request.POST.get("shown_at_ms")),
            **where,
        )

    return _battle_action(request, slug, battle_id, vote)


@login_required
@require_POST
def arena_retry(request, slug, battle_id):
    return _battle_action(request, slug, battle_id, services.arena_battle_retry)


# --- API ------------------------------------------------------------------------------


def _reply_payload(response) -> dict | None:
    if response is None:
        return None
    return {
        "id": response.pk,
        "text": response.text,
        "html": render_markdown(response.text),
    }


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


class BattleListApi(APIView):
    """GET: your battles in the project, newest first. POST {prompt?}: start one (201) on
    the typed prompt, or on a prompt drawn from the pool when there is none."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        battles = selectors.arena_battles_for(project=project, labeler=request.user, limit=100)
        return Response([battle_payload(b) for b in battles])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        if not hasattr(request.data, "get"):
            raise ServiceError('Send a JSON object, for example {} or {"prompt": "..."}.')
        battle = services.arena_battle_start(
            project=project,
            labeler=request.user,
            prompt_text=request.data.get("prompt"),
        )
        return Response(_battle_after(request, project, battle.pk), status=201)


class BattleDetailApi(APIView):
    """GET: one of your battles (status queued/running/ready/voted/failed; poll it)."""

    def get(self, request, slug, battle_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        return Response(_battle_after(request, project, battle_id))


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


class BattleRetryApi(APIView):
    """POST: queue a failed battle's replies again (202)."""

    def post(self, request, slug, battle_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        services.arena_battle_retry(project=project, labeler=request.user, battle_id=battle_id)
        return Response(_battle_after(request, project, battle_id), status=202)
