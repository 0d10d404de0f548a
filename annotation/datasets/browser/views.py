"""The data browser's pages: the list (htmx swaps only the table), one judgment as its
labeler saw it, and the admins' delete and restore forms. Thin callers of selectors.py
and services.py."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.datasets.browser import selectors, services
from annotation.datasets.browser.forms import BrowseForm, DeleteForm
from annotation.models import Prompt, Response
from annotation.projects.permissions import MANAGE, VIEW_DATA, page_capabilities, project_for
from config.errors import ServiceError

TEMPLATE = "annotation/datasets/browser/browse.html"


def _next_query(request, after: int) -> str:
    query = request.GET.copy()
    query["after"] = after
    return query.urlencode()


@login_required
@require_GET
def data_browser(request, slug):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    form = BrowseForm(request.GET)
    context = {
        "project": project,
        "form": form,
        **page_capabilities(user=request.user, project=project),
    }
    status = 200
    if form.is_valid():
        page = selectors.browse(project=project, filters=form.cleaned_data)
        context.update(
            tab=form.cleaned_data["tab"],
            page=page,
            next_query=_next_query(request, page.next_after) if page.next_after else "",
        )
    else:
        context.update(tab=request.GET.get("tab", "judgments"), problem=form.problem())
        status = 400
    template = f"{TEMPLATE}#table" if request.htmx else TEMPLATE
    return render(request, template, context, status=status)


@login_required
@require_GET
def data_judgment(request, slug, judgment_id):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    judgment = selectors.judgment_detail(project=project, judgment_id=judgment_id)
    if judgment is None:
        raise Http404("No such judgment in this project.")
    context = {
        "project": project,
        "judgment": judgment,
        "prompt": judgment.prompt,
        "shown": selectors.shown_responses(judgment),
        "chain": selectors.judgment_chain(judgment),
        "reviews": judgment.reviews.select_related("reviewer", "correction"),
        "correction_of": getattr(judgment, "correction_of", None),
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/datasets/browser/judgment.html", context)


def _back(slug: str, tab: str, *, deleted: bool) -> str:
    query = f"?tab={tab}&deleted=on" if deleted else f"?tab={tab}"
    return f"{reverse('data_browser', args=[slug])}{query}"


def _act(request, action, *, success: str, slug: str, tab: str, deleted: bool = False):
    # After a delete the list leaves the row out (Show deleted finds it); after a restore
    # it keeps showing deleted rows, where the admin was.
    try:
        action()
    except ServiceError as error:
        return HttpResponseBadRequest(error.message)
    messages.success(request, success)
    return redirect(_back(slug, tab, deleted=deleted))


def _reason(request) -> str:
    form = DeleteForm(request.POST)
    return form.cleaned_data["reason"] if form.is_valid() else ""


@login_required
@require_POST
def data_prompt_delete(request, slug, prompt_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    prompt = get_object_or_404(Prompt, project=project, pk=prompt_id)
    reason = _reason(request)
    return _act(
        request,
        lambda: services.prompt_delete(prompt=prompt, by=request.user, reason=reason),
        success=f"Prompt {prompt.pk} deleted; its pending assignments expired.",
        slug=slug,
        tab="prompts",
    )


@login_required
@require_POST
def data_prompt_restore(request, slug, prompt_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    prompt = get_object_or_404(Prompt, project=project, pk=prompt_id)
    return _act(
        request,
        lambda: services.prompt_restore(prompt=prompt),
        success=f"Prompt {prompt.pk} restored.",
        slug=slug,
        tab="prompts",
        deleted=True,
    )


@login_required
@require_POST
def data_response_delete(request, slug, response_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    response = get_object_or_404(Response, prompt__project=project, pk=response_id)
    reason = _reason(request)
    return _act(
        request,
        lambda: services.response_delete(response=response, by=request.user, reason=reason),
        success=f"Response {response.pk} deleted.",
        slug=slug,
        tab="responses",
    )


@login_required
@require_POST
def data_response_restore(request, slug, response_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    response = get_object_or_404(Response, prompt__project=project, pk=response_id)
    return _act(
        request,
        lambda: services.response_restore(response=response),
        success=f"Response {response.pk} restored.",
        slug=slug,
        tab="responses",
        deleted=True,
    )
