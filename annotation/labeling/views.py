import time
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotation.judges.trust import ai_label_plan
from annotation.labeling import changes, selectors, services
from annotation.labeling.forms import ProjectSettingsForm, TaskCreateForm
from annotation.labeling.kinds import KINDS
from annotation.models import Assignment, Judgment
from annotation.projects import selectors as project_selectors
from annotation.projects import services as project_services
from annotation.projects.guidelines import guidelines_mark_seen
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    page_capabilities,
    project_for,
)
from config.errors import ServiceError

LABEL_PAGE = "annotation/labeling/label.html"
SKIP_REASONS = (
    "Needs expertise I don't have",
    "The prompt is unclear or broken",
    "Offensive or disturbing content",
    "The responses are unreadable",
    "Other",
)


def _task_context(request, project, assignment: Assignment | None) -> dict:
    context = {
        "project": project,
        "assignment": assignment,
        "client_id": uuid.uuid4(),
        "shown_at_ms": int(time.time() * 1000),
        "progress": project_selectors.labeler_progress(project=project, labeler=request.user),
        "skip_reasons": SKIP_REASONS,
    }
    if assignment is not None:
        context["kind_template"] = KINDS[assignment.task.kind].template
        context["responses"] = assignment.shown_responses()
        context["criteria"] = project.criteria
    return context


def _time_spent_ms(post) -> int:
    """The client measures the time from showing a task to answering it (a prefetched task
    is shown later than it was rendered); without JavaScript the server's clock is used."""
    measured = int_or_none(post.get("time_spent_ms"))
    if measured is None:
        shown_at = int_or_none(post.get("shown_at_ms"))
        measured = int(time.time() * 1000) - shown_at if shown_at is not None else 0
    return max(0, min(measured, 86_400_000))


def _submit_from_page(request, project) -> None:
    assignment_id = int_or_none(request.POST.get("assignment_id"))
    if "skip_reason" in request.POST:
        services.assignment_skip(
            project=project,
            labeler=request.user,
            assignment_id=assignment_id,
            reason=request.POST["skip_reason"],
        )
        return
    services.judgment_submit(
        project=project,
        labeler=request.user,
        assignment_id=assignment_id,
        data=request.POST,
        client_id=request.POST.get("client_id"),
        time_spent_ms=_time_spent_ms(request.POST),
    )


@login_required
@require_http_methods(["GET", "POST"])
def label(request, slug):
    """The labeling queue. The page holds the current task and, prefetched, the next one:
    static/app.js shows the next task at once when an answer is given and posts the answer
    in the background; the response is the task to prefetch after that (`after`). Without
    JavaScript the form posts and redirects back here."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    if request.method == "POST":
        return _answer(request, project)
    after = int_or_none(request.GET.get("after"))
    current = services.assignment_next(project=project, labeler=request.user, after=after)
    context = _task_context(request, project, current)
    if current is not None and after is None:
        upcoming = services.assignment_next(project=project, labeler=request.user, after=current.pk)
        context["upcoming"] = _task_context(request, project, upcoming)
    if request.htmx:
        return render(request, f"{LABEL_PAGE}#task", context)
    recent = selectors.recent_judgments(project=project, labeler=request.user)
    page = {**context, **_guidelines_panel(request, project), "recent": recent}
    return render(request, LABEL_PAGE, page)


def _guidelines_panel(request, project) -> dict:
    """The current guidelines beside the task: open the first time the labeler is shown a
    version (recorded on their membership, so it follows them), collapsed after."""
    guidelines = project_selectors.latest_guidelines(project)
    if guidelines is None:
        return {"guidelines": None}
    first_time = guidelines_mark_seen(
        project=project, user=request.user, version=guidelines.version
    )
    return {"guidelines": guidelines, "guidelines_open": first_time}


def _answer(request, project):
    try:
        _submit_from_page(request, project)
    except ServiceError as refused:
        if not request.htmx:
            messages.error(request, refused.message)
            return redirect("label", slug=project.slug)
        return render(
            request,
            f"{LABEL_PAGE}#refused",
            {"error": refused.message, "project": project},
            status=400,
        )
    if not request.htmx:
        return redirect("label", slug=project.slug)
    after = int_or_none(request.POST.get("after"))
    upcoming = services.assignment_next(project=project, labeler=request.user, after=after)
    return render(request, f"{LABEL_PAGE}#task", _task_context(request, project, upcoming))


def int_or_none(raw):
    """A whole number from a form or query field, else None."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _settings_initial(project) -> dict:
    return {
        "overlap_target": project.overlap_target,
        "pending_limit": project.pending_limit,
        "gold_rate": project.gold_rate,
        "skip_flag_threshold": project.skip_flag_threshold,
        "criteria": ", ".join(project.criteria),
        "candidate_policy": project.candidate_policy,
        "ai_labels": project.ai_labels,
        "ai_min_kappa": project.ai_min_kappa,
        "ai_min_compared": project.ai_min_compared,
        "task_kinds": project.task_kinds,
    }


@login_required
@require_http_methods(["GET", "POST"])
def tasks_page(request, slug):
    """Admin: how the queue works (overlap, pending limit, gold rate, criteria) and batches
    of tasks of every kind."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    settings_form = ProjectSettingsForm(initial=_settings_initial(project))
    create_form = TaskCreateForm(kinds=KINDS, project=project)
    status = 200
    if request.method == "POST":
        try:
            if request.POST.get("action") == "settings":
                settings_form = ProjectSettingsForm(request.POST)
                if settings_form.is_valid():
                    project_services.project_settings_update(
                        project=project, **settings_form.settings()
                    )
                    messages.success(request, "Settings saved.")
                    return redirect("tasks", slug=project.slug)
            else:
                create_form = TaskCreateForm(request.POST, kinds=KINDS, project=project)
                if create_form.is_valid():
                    batch = services.tasks_create(
                        project=project,
                        kind=create_form.cleaned_data["kind"],
                        options=create_form.options(),
                        priority=create_form.cleaned_data["priority"] or 0,
                    )
                    report = messages.warning if batch.reasons else messages.success
                    report(request, batch.message)
                    return redirect("tasks", slug=project.slug)
        except ServiceError as error:
            form = settings_form if request.POST.get("action") == "settings" else create_form
            form.add_error(None, error.message)
        status = 400
    context = {
        "project": project,
        "settings_form": settings_form,
        "create_form": create_form,
        "counts": selectors.task_counts_by_kind(project=project),
        "ai_plan": ai_label_plan(project=project),
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/labeling/tasks.html", context, status=status)


# --- going back to a judgment ------------------------------------------------------------

CHANGE_PAGE = "annotation/labeling/change.html"
RECENT_STRIP = "annotation/labeling/partials/_recent.html"


def _changeable_or_404(project, labeler, judgment_id) -> Judgment:
    judgment = selectors.own_judgment(project=project, labeler=labeler, judgment_id=judgment_id)
    if judgment is None:
        raise Http404("You have no judgment with this id in this project.")
    return judgment


def _change_context(request, project, judgment, *, refusal=None, error=None) -> dict:
    recent = selectors.recent_judgments(project=project, labeler=request.user)
    ids = [item.pk for item in recent]
    place = ids.index(judgment.pk) if judgment.pk in ids else None
    context = {
        "project": project,
        "judgment": judgment,
        "recent": recent,
        "current_id": judgment.pk,
        "older": recent[place + 1] if place is not None and place + 1 < len(recent) else None,
        "newer": recent[place - 1] if place else None,
        "refusal": refusal,
        "error": error,
        "deadline": changes.change_deadline(judgment),
        "client_id": uuid.uuid4(),
        "shown_at_ms": int(time.time() * 1000),
    }
    if refusal is None:
        view = changes.view_of(judgment)
        shown = view.shown_responses()
        context |= {
            "assignment": view,
            "kind_template": KINDS[judgment.kind].template,
            "responses": selectors.responses_as_answered(judgment, shown),
            "criteria": project.criteria,
            "previous": selectors.answer_as_shown(judgment),
        }
    return context


@login_required
@require_http_methods(["GET", "POST"])
def label_change(request, slug, judgment_id):
    """Go back to one of your judgments: the task as you saw it, prefilled with your
    answer; sending a new answer stores it as a judgment that supersedes the old one."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    judgment = _changeable_or_404(project, request.user, judgment_id)
    refusal = changes.change_refusal(judgment, labeler=request.user)
    if request.method == "GET" or refusal:
        context = _change_context(request, project, judgment, refusal=refusal)
        return render(
            request, CHANGE_PAGE, context, status=409 if request.method == "POST" else 200
        )
    try:
        changes.judgment_change(
            project=project,
            labeler=request.user,
            judgment_id=judgment.pk,
            data=request.POST,
            client_id=request.POST.get("client_id"),
            time_spent_ms=_time_spent_ms(request.POST),
        )
    except ServiceError as refused:
        judgment.refresh_from_db()
        context = _change_context(
            request,
            project,
            judgment,
            refusal=changes.change_refusal(judgment, labeler=request.user),
            error=refused.message,
        )
        return render(request, CHANGE_PAGE, context, status=refused.status_code)
    messages.success(request, "Changed: your new answer replaces the old one.")
    return redirect("label", slug=project.slug)


@login_required
@require_http_methods(["GET"])
def label_recent(request, slug):
    """The label page's "Recently judged" strip, refreshed after each answer."""
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    recent = selectors.recent_judgments(project=project, labeler=request.user)
    return render(request, RECENT_STRIP, {"project": project, "recent": recent})
