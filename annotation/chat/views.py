"""Pages of the chat mode: thin callers of annotation/chat/services.py and selectors.py."""

import time
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from annotation.chat import selectors, services
from annotation.labeling.inputs import time_spent_since
from annotation.projects.permissions import (
    LABEL,
    page_capabilities,
    project_for,
)
from config.celery import QueueUnavailable
from config.errors import ServiceError


@login_required
@require_http_methods(["GET", "POST"])
def chat_start_page(request, slug):
    """The labeler's chats in the project, and a form to start one with a chosen model."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    services.chat_turns_fail_stale(project=project)
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
    versions = list(selectors.chat_versions(project=project))
    context = {
        "project": project,
        "versions": versions,
        "sessions": selectors.chat_sessions_for(project=project, labeler=request.user),
        "error": error,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/chat/start.html", context, status=400 if error else 200)


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
        **page_capabilities(user=request.user, project=project),
    }


def _render_session(request, project, session, *, error=None, finishing=False, status=200):
    template = "annotation/chat/chat.html#task" if request.htmx else "annotation/chat/chat.html"
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
    # A turn whose worker went silent is queued again (or failed) before it is shown.
    services.chat_turns_fail_stale(project=project)
    return _render_session(request, project, session, finishing=request.GET.get("finish") == "1")


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
            time_spent_ms=time_spent_since(request.POST.get("shown_at_ms")),
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
            rating=request.POST.get("rating"), comment=request.POST.get("comment", ""), **where
        )

    return _session_action(request, slug, session_id, finish, finishing_on_error=True)
