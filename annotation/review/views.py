"""Review and quality pages: the admin's quality overview, the review queue, and a labeler's
own page. Thin: parse, call one service or selector, render."""

import time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.judges import send_to_review
from annotation.labeling.inputs import time_spent_since
from annotation.labeling.kinds import KINDS
from annotation.labeling.views import int_or_none
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    VIEW_DATA,
    page_capabilities,
    project_for,
)
from annotation.review import imports as review_imports
from annotation.review import selectors, services
from annotation.review.forms import GOLD_FORMS, form_error
from config.errors import ServiceError

REVIEW_ACTIONS = ("accept", "reject", "correct", "gold")


def _base_context(request, project) -> dict:
    return {"project": project, **page_capabilities(user=request.user, project=project)}


# --- quality overview ------------------------------------------------------------------


def _quality_context(request, project, **extra) -> dict:
    return {
        **_base_context(request, project),
        **selectors.labeler_quality(project=project),
        "flagged": selectors.flagged_tasks(project=project),
        "gold_tasks": selectors.gold_tasks(project=project),
        "low_trust_accuracy": selectors.LOW_TRUST_ACCURACY,
        "low_trust_min_gold": selectors.LOW_TRUST_MIN_GOLD,
        **extra,
    }


@login_required
@require_GET
def quality_page(request, slug):
    """Admins and researchers browse agreement; only admins see gold answers and act."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    return render(request, "annotation/review/quality.html", _quality_context(request, project))


@login_required
@require_POST
def quality_task_return(request, slug, task_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    try:
        task = services.task_return_to_pool(project=project, task_id=task_id, user=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Task {task.pk} is back in the pool.")
    return redirect("quality", slug=project.slug)


def _gold_task_or_error(project, task_id):
    found = selectors.gold_task_for(project=project, task_id=task_id)
    if found is None:
        raise ServiceError("Give the id of a task of this project.")
    if found[0].kind not in GOLD_FORMS:
        raise ServiceError(f"{found[0].get_kind_display()} tasks cannot be gold items.")
    return found


@login_required
@require_POST
def quality_gold(request, slug):
    """Open the gold answer form of the task whose id was typed."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    try:
        task, _ = _gold_task_or_error(project, int_or_none(request.POST.get("task_id")))
    except ServiceError as error:
        context = _quality_context(
            request, project, gold_error=error.message, gold_form=request.POST
        )
        return render(request, "annotation/review/quality.html", context, status=400)
    return redirect("quality_gold_task", slug=project.slug, task_id=task.pk)


@login_required
@require_http_methods(["GET", "POST"])
def quality_gold_task(request, slug, task_id):
    """A task's gold answer, with the fields of its kind: stored when they check out."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    found = selectors.gold_task_for(project=project, task_id=task_id)
    if found is None:
        raise Http404("No such task in this project.")
    task, responses = found
    if task.kind not in GOLD_FORMS:
        messages.error(request, f"{task.get_kind_display()} tasks cannot be gold items.")
        return redirect("quality", slug=project.slug)
    data = request.POST if request.method == "POST" else None
    form = GOLD_FORMS[task.kind](data, task=task, responses=responses)
    error = None
    if data is not None:
        try:
            if not form.is_valid():
                raise ServiceError(form_error(form))
            services.task_make_gold(task=task, gold_answer=form.answer(), user=request.user)
        except ServiceError as refused:
            error = refused.message
        else:
            messages.success(request, f"Task {task.pk} is a gold item now.")
            return redirect(reverse("quality", args=[project.slug]) + "#gold")
    context = {
        **_base_context(request, project),
        "task": task,
        "responses": responses,
        "form": form,
        "error": error,
    }
    return render(
        request, "annotation/review/gold_task.html", context, status=400 if error else 200
    )


# --- review queue ----------------------------------------------------------------------


def _review_context(request, project, *, judgment_id=None, correcting=False, error=None):
    item = selectors.review_item(project=project, reviewer=request.user, judgment_id=judgment_id)
    if item is None and judgment_id is not None:
        item = selectors.review_item(project=project, reviewer=request.user)
        correcting = False
    context = {
        **_base_context(request, project),
        "item": item,
        # An AI judgment of no task can be accepted or rejected, not corrected here; an
        # imported one is corrected against the responses it names.
        "correcting": correcting and item is not None and _correctable(item),
        "error": error,
        "shown_at_ms": int(time.time() * 1000),
    }
    if not request.htmx:
        context["ai_fill"] = send_to_review.ai_review_summary(project=project)
        context["import_fill"] = review_imports.import_review_summary(project=project)
    if context["correcting"]:
        task = item["task"]
        if task is None:
            context["assignment"] = review_imports.imported_review_view(judgment=item["judgment"])
        else:
            context["assignment"] = services.assignment_for_review(task=task, reviewer=request.user)
        context["kind_template"] = KINDS[item["kind"]].template
        context["responses"] = item["responses"]
        context["criteria"] = project.criteria
    return context


def _correctable(item: dict) -> bool:
    return item["task"] is not None or item["imported"] is not None


def _apply_review(request, project, action: str, judgment_id) -> str:
    """Run the reviewer's action; returns what to tell them."""
    note = request.POST.get("note", "")
    if action == "accept":
        services.judgment_accept(
            project=project, judgment_id=judgment_id, reviewer=request.user, note=note
        )
        return "Accepted."
    if action == "reject":
        services.judgment_reject(
            project=project, judgment_id=judgment_id, reviewer=request.user, note=note
        )
        return "Rejected: left out of exports."
    if action == "correct":
        services.judgment_correct(
            project=project,
            judgment_id=judgment_id,
            reviewer=request.user,
            data=request.POST,
            note=note,
            time_spent_ms=time_spent_since(request.POST.get("shown_at_ms")),
        )
        return "Corrected."
    if action == "gold":
        task = services.task_make_gold_from_judgment(
            project=project, judgment_id=judgment_id, user=request.user
        )
        return f"Task {task.pk} is a gold item with this answer."
    raise ServiceError(f"action must be one of {', '.join(REVIEW_ACTIONS)}.")


@login_required
@require_http_methods(["GET", "POST"])
def review_page(request, slug):
    """One queued judgment at a time with its task; keys decide, htmx swaps in the next."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    template = (
        "annotation/review/review.html#item" if request.htmx else "annotation/review/review.html"
    )
    if request.method == "GET":
        context = _review_context(
            request,
            project,
            judgment_id=int_or_none(request.GET.get("judgment")),
            correcting=request.GET.get("correct") == "1",
        )
        return render(request, template, context)
    action = request.POST.get("action", "")
    judgment_id = int_or_none(request.POST.get("judgment_id"))
    try:
        done = _apply_review(request, project, action, judgment_id)
    except ServiceError as refused:
        if not request.htmx:
            messages.error(request, refused.message)
            url = reverse("review", kwargs={"slug": project.slug})
            if action == "correct" and judgment_id is not None:
                url += f"?judgment={judgment_id}&correct=1"
            return redirect(url)
        context = _review_context(
            request,
            project,
            judgment_id=judgment_id,
            correcting=action == "correct",
            error=refused.message,
        )
        return render(request, template, context, status=refused.status_code)
    if not request.htmx:
        messages.success(request, done)
        return redirect("review", slug=project.slug)
    return render(request, template, {**_review_context(request, project), "done": done})


def parse_ai_fill(data) -> dict:
    """The fill request's fields from a form or a JSON body: mode, rate, threshold (numbers
    or their text; blank for the default), judge (an id, or blank for every judge) and
    an optional seed for the sample."""
    if not hasattr(data, "get"):
        raise ServiceError("Send an object: {mode, rate, threshold, judge}.")

    def number(name: str, default: float):
        raw = data.get(name)
        if raw is None or raw == "":
            return default
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                raise ServiceError(f"{name} must be a number.") from None
        return raw

    judge = data.get("judge")
    if judge == "":
        judge = None
    if isinstance(judge, str):
        judge = int_or_none(judge)
        if judge is None:
            raise ServiceError("judge must be the id of a judge.")
    seed = data.get("seed")
    if seed in (None, ""):
        seed = 0
    elif isinstance(seed, str):
        seed = int_or_none(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ServiceError("seed must be a whole number.")
    return {
        "mode": data.get("mode") or "",
        "rate": number("rate", send_to_review.DEFAULT_RATE),
        "threshold": number("threshold", send_to_review.DEFAULT_THRESHOLD),
        "judge": judge,
        "seed": seed,
    }


@login_required
@require_POST
def review_ai_fill(request, slug):
    """The Review page's form: send AI labels to the review queue."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    try:
        count = send_to_review.ai_review_queue_fill(project=project, **parse_ai_fill(request.POST))
    except ServiceError as error:
        context = {
            **_review_context(request, project),
            "ai_fill_error": error.message,
            "ai_fill_form": request.POST,
        }
        return render(request, "annotation/review/review.html", context, status=400)
    messages.success(
        request, f"{count} AI judgment{'' if count == 1 else 's'} sent to the review queue."
    )
    return redirect("review", slug=project.slug)


@login_required
@require_POST
def review_import_fill(request, slug):
    """The Review page's form: send a share of one import's judgments to the review queue."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    try:
        fields = review_imports.parse_import_fill(request.POST)
        count = review_imports.send_import_to_review(project=project, **fields)
    except ServiceError as error:
        context = {
            **_review_context(request, project),
            "import_fill_error": error.message,
            "import_fill_form": request.POST,
        }
        return render(request, "annotation/review/review.html", context, status=400)
    messages.success(
        request, f"{count} imported judgment{'' if count == 1 else 's'} sent to the review queue."
    )
    return redirect("review", slug=project.slug)


# --- a labeler's own page --------------------------------------------------------------


@login_required
@require_GET
def my_work_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=LABEL)
    context = {
        **_base_context(request, project),
        "work": selectors.my_work(project=project, labeler=request.user),
    }
    return render(request, "annotation/review/my_work.html", context)
