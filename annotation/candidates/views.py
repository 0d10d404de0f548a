"""Pages of candidates: the project's Models page (its versions, how many candidates each
gave here, the generation form with its preview, the generation jobs) and the release of
a run's intermediate stage, which generates its candidates. Thin callers of services.py
and selectors.py; a version's page is annotation/leaderboard/versions.py, the lineage
and the import models_registry/views.py."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.candidates import selectors, services
from annotation.candidates.forms import GenerationForm, GenerationPreviewForm
from annotation.candidates.models import GenerationJob
from annotation.leaderboard.versions import render_version_page
from annotation.projects.permissions import MANAGE, project_for
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.forms import StateChangeForm, offer_only_versions_of
from models_registry.views import form_error

MODELS_PAGE = "annotation/candidates/models.html"


def _preview_context(project, data) -> dict:
    """What a generation job with the chosen model and options would write and pair
    (``preview``), or why it cannot start (``preview_error``); nothing without a choice."""
    if not data:
        return {}
    form = offer_only_versions_of(GenerationPreviewForm(data), project)
    if not form.is_valid():
        problems = [
            f"{form[name].label}: {' '.join(errors)}" for name, errors in form.errors.items()
        ]
        return {"preview_error": " ".join(problems)}
    try:
        preview = selectors.generation_preview(
            project=project,
            model_version=form.cleaned_data["model_version"],
            samples_per_prompt=form.cleaned_data["samples_per_prompt"],
        )
    except ServiceError as error:
        return {"preview_error": error.message}
    return {"preview": preview}


def _models_context(project, form) -> dict:
    services.generation_jobs_fail_stale(project=project)
    jobs = selectors.with_outlook(selectors.generation_jobs(project=project))
    counts = selectors.candidate_counts_by_version(project=project)
    versions = registry_selectors.versions(project=project)
    for version in versions:
        version.candidate_count = counts.get(version.pk, 0)
    return {
        "project": project,
        "form": form,
        "versions": versions,
        "jobs": jobs,
        "any_job_active": any(job.is_active for job in jobs),
        **_preview_context(project, form.data if form.is_bound else _initial_choice(form)),
        "can_manage": True,
        "can_view_data": True,
    }


def _initial_choice(form) -> dict:
    version = form.initial.get("model_version")
    return {"model_version": version.pk} if version else {}


@login_required
@require_http_methods(["GET", "POST"])
def models_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    initial = {"model_version": registry_selectors.newest_policy(project=project)}
    form = offer_only_versions_of(GenerationForm(request.POST or None, initial=initial), project)
    if request.method == "POST":
        if form.is_valid():
            try:
                job = services.generation_job_start(
                    project=project,
                    model_version=form.cleaned_data["model_version"],
                    user=request.user,
                    samples_per_prompt=form.cleaned_data["samples_per_prompt"],
                    params=form.generation_params(),
                    best_of=form.cleaned_data["best_of"],
                    reward_version=form.cleaned_data["reward_version"],
                )
            except (ServiceError, QueueUnavailable) as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Generation job {job.pk} queued.")
                return redirect("models", slug=project.slug)
        return render(request, MODELS_PAGE, _models_context(project, form), status=400)
    return render(request, MODELS_PAGE, _models_context(project, form))


@login_required
@require_GET
def generation_jobs_fragment(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    form = offer_only_versions_of(GenerationForm(), project)
    return render(request, f"{MODELS_PAGE}#jobs", _models_context(project, form))


@login_required
@require_POST
def generation_job_cancel(request, slug, job_id):
    """Cancel a generation job; the Models page says what happened (or why not)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    job = get_object_or_404(GenerationJob, pk=job_id, project=project)
    try:
        services.generation_job_cancel(job=job)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Generation job {job.pk}: cancel requested.")
    return redirect("models", slug=project.slug)


@login_required
@require_GET
def generation_preview_fragment(request, slug):
    """The generation form's preview for its current choices (htmx asks on each change);
    400 with the reason when the choices are refused."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    context = _preview_context(project, request.GET or {"model_version": ""})
    return render(
        request,
        f"{MODELS_PAGE}#preview",
        context,
        status=400 if "preview_error" in context else 200,
    )


@login_required
@require_POST
def version_release(request, slug, version_id):
    """Release an intermediate stage of a run: it makes candidates and enters battles. A
    refusal shows the version page with the reason (400)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_in_project(project=project, version_id=version_id)
    form = StateChangeForm(request.POST)
    if not form.is_valid():
        return render_version_page(request, project, version.pk, error=form_error(form), status=400)
    try:
        services.model_version_release(
            version=version, user=request.user, note=form.cleaned_data["note"], project=project
        )
    except ServiceError as refusal:
        return render_version_page(request, project, version.pk, error=refusal.message, status=400)
    except QueueUnavailable as down:  # released; its generation job is failed with the reason
        messages.error(request, f"{version.name} is released, but no candidates: {down}")
    else:
        messages.success(request, f"{version.name} is released: its candidates are queued.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)
