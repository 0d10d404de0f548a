"""Pages of the arena: thin callers of annotation/arena/services.py and selectors.py."""

import time
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from annotation.arena import selectors, services
from annotation.labeling.inputs import time_spent_since
from annotation.models import ArenaBattle
from annotation.projects.permissions import (
    LABEL,
    page_capabilities,
    project_for,
)
from config.celery import QueueUnavailable
from config.errors import ServiceError

# Keys of each vote, as shown on the page; app.js clicks the button that names the key.
VOTE_BUTTONS = [
    ("a", "A is better", "1 a"),
    ("b", "B is better", "2 b"),
    ("tie", "Tie", "3 t"),
    ("both_bad", "Both are bad", "4 x"),
]


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
    services.arena_battles_fail_stale(project=project)
    context = {
        "project": project,
        "battles": selectors.arena_battles_for(project=project, labeler=request.user),
        "contestants": selectors.arena_versions(project=project).count(),
        "pool_size": selectors.arena_pool_size(project=project),
        "typed": request.POST.get("prompt", "") if error else "",
        "max_prompt_chars": services.MAX_PROMPT_CHARS,
        "error": error,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/arena/arena.html", context, status=status)


def _render_battle(request, project, battle, *, error=None, status=200):
    template = "annotation/arena/battle.html"
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
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, template, context, status=status)


@login_required
@require_http_methods(["GET"])
def arena_battle_page(request, slug, battle_id):
    """One battle; its htmx fragment is polled while the replies are written."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    services.arena_battles_fail_stale(project=project)
    battle = selectors.arena_battle_page_for(
        project=project, labeler=request.user, battle_id=battle_id
    )
    return _render_battle(request, project, battle)


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
            time_spent_ms=time_spent_since(request.POST.get("shown_at_ms")),
            **where,
        )

    return _battle_action(request, slug, battle_id, vote)


@login_required
@require_POST
def arena_retry(request, slug, battle_id):
    return _battle_action(request, slug, battle_id, services.arena_battle_retry)
