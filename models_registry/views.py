from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.candidates.selectors import candidate_counts_by_version
from annotation.projects.permissions import MANAGE, project_for
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry import selectors, services
from models_registry.forms import GenerationForm, GenerationPreviewForm
from models_registry.models import GenerationJob


def _preview_context(project, data) -> dict:
    """What a generation job with the chosen model and options would write and pair
    (``preview``), or why it cannot start (``preview_error``); nothing without a choice."""
    if not data:
        return {}
    form = GenerationPreviewForm(data)
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
    jobs = list(selectors.generation_jobs(project=project))
    counts = candidate_counts_by_version(project=project)
    versions = list(selectors.versions())
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


def _newest_policy():
    """The form's default: the newest policy, never a run's intermediate stage (that one
    generates only when the admin picks it)."""
    return (
        selectors.policy_versions()
        .filter(intermediate=False)
        .order_by("-created_at", "-id")
        .first()
    )


def _initial_choice(form) -> dict:
    version = form.initial.get("model_version")
    return {"model_version": version.pk} if version else {}


@login_required
@require_http_methods(["GET", "POST"])
def models_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    form = GenerationForm(request.POST or None, initial={"model_version": _newest_policy()})
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
        return render(
            request, "models_registry/models.html", _models_context(project, form), status=400
        )
    return render(request, "models_registry/models.html", _models_context(project, form))


@login_required
@require_GET
def generation_jobs_fragment(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    return render(
        request, "models_registry/models.html#jobs", _models_context(project, GenerationForm())
    )


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
        "models_registry/models.html#preview",
        context,
        status=400 if "preview_error" in context else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def api_key_page(request):
    """Shows whether the user has an API key; a POST makes a new one and shows it once."""
    key = None
    if request.method == "POST":
        key = services.api_key_rotate(user=request.user).key
    context = {
        "key": key,
        "existing": selectors.api_key_of(user=request.user),
        "base_url": request.build_absolute_uri("/v1"),
        "models": selectors.servable_versions(),
    }
    return render(request, "models_registry/api_key.html", context)
