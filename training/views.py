from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from annotation.judges.trust import ai_label_plan
from annotation.projects.permissions import MANAGE, project_for
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.forms import offer_only_versions_of
from models_registry.recipe import recipe_table
from training import selectors, services
from training.forms import TrainingRunForm
from training.models import TrainingRun


def _start_from_form(request, project, form: TrainingRunForm) -> TrainingRun | None:
    try:
        return services.training_run_start(
            project=project,
            method=form.spec.method,
            base_version=form.cleaned_data["base_version"],
            reward_version=form.cleaned_data.get("reward_version"),
            mix_with=form.cleaned_data.get("mix_with"),
            config=form.config(),
            filters=form.filters(),
            sft_first=form.cleaned_data.get("sft_first", False),
            dataset_version=form.cleaned_data.get("dataset_version"),
            user=request.user,
            **form.layout(),
        )
    except ServiceError as error:
        form.add_config_error(error.message)
    except QueueUnavailable as error:
        form.add_error(None, str(error))
    return None


@login_required
@require_http_methods(["GET", "POST"])
def runs_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    services.training_runs_fail_stale(project=project)
    if request.method == "GET" and request.htmx and request.htmx.target == "run-list":
        return render(request, "training/runs.html#run-list", _runs_context(project))  # polling
    newest = registry_selectors.newest_policy(project=project)
    form = TrainingRunForm(
        request.POST or None,
        method=request.GET.get("method", "dpo"),
        refresh_url=reverse("training", kwargs={"slug": project.slug}),
        ai_default=project.ai_labels,
        project=project,
        initial={"base_version": newest},
    )
    offer_only_versions_of(form, project)
    status = 200
    if request.method == "POST":
        if form.is_valid() and (run := _start_from_form(request, project, form)):
            messages.success(request, f"Training run {run.pk} queued.")
            return redirect("training_run", slug=project.slug, run_id=run.pk)
        status = 400
    template = "training/runs.html#run-form" if request.htmx and request.method == "GET" else None
    context = {"form": form, **_runs_context(project)}
    if template is None:  # the method picker's htmx swap shows no AI label summary
        context["ai_plan"] = ai_label_plan(project=project)
    return render(request, template or "training/runs.html", context, status=status)


def _runs_context(project) -> dict:
    runs = selectors.with_outlook(selectors.training_runs(project=project))
    return {
        "project": project,
        "runs": runs,
        "any_active": any(run.is_active for run in runs),
        "can_manage": True,
        "can_view_data": True,
    }


@login_required
def run_detail(request, slug, run_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    services.training_runs_fail_stale(project=project)
    run = get_object_or_404(
        TrainingRun.objects.select_related(
            "base_version", "reward_version", "mix_with", "snapshot", "dataset_version"
        ),
        pk=run_id,
        project=project,
    )
    context = {
        "project": project,
        "run": run,
        "charts": selectors.run_charts(run=run),
        "outlook": selectors.run_outlook(run=run),
        "held_out": selectors.held_out_metrics(run=run),
        "summary": selectors.run_summary(run=run),
        "log_lines": selectors.log_tail(run=run),
        "version": getattr(run, "model_version", None),
        "ai_labels": selectors.snapshot_ai_text(run.snapshot),
        "recipe": recipe_table(run.config),
        "can_manage": True,
        "can_view_data": True,
    }
    template = "training/run.html#status" if request.htmx else "training/run.html"
    return render(request, template, context)


def _run_action(request, slug, run_id, action) -> TrainingRun:
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    run = get_object_or_404(TrainingRun, pk=run_id, project=project)
    try:
        action(run=run)
    except ServiceError as error:
        messages.error(request, error.message)
    except QueueUnavailable as error:
        messages.error(request, str(error))
    return redirect("training_run", slug=project.slug, run_id=run.pk)


@login_required
@require_POST
def run_cancel(request, slug, run_id):
    return _run_action(request, slug, run_id, services.training_run_cancel)


@login_required
@require_POST
def run_resume(request, slug, run_id):
    return _run_action(request, slug, run_id, services.training_run_resume)
