from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotation.errors import ServiceError
from annotation.permissions import MANAGE, project_for
from config.celery import QueueUnavailable
from models_registry.models import ModelVersion
from training import selectors, services
from training.forms import DPORunForm
from training.models import TrainingRun


@login_required
@require_http_methods(["GET", "POST"])
def runs_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    newest = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("-created_at")
    form = DPORunForm(request.POST or None, initial={"base_version": newest.first()})
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                run = services.training_run_start(
                    project=project,
                    base_version=form.cleaned_data["base_version"],
                    config=form.config(),
                    user=request.user,
                )
            except (ServiceError, QueueUnavailable) as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Training run {run.pk} queued.")
                return redirect("training_run", slug=project.slug, run_id=run.pk)
        status = 400
    context = {
        "project": project,
        "form": form,
        "runs": selectors.training_runs(project=project),
        "can_manage": True,
        "can_view_data": True,
    }
    return render(request, "training/runs.html", context, status=status)


@login_required
def run_detail(request, slug, run_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    run = get_object_or_404(TrainingRun, pk=run_id, project=project)
    context = {
        "project": project,
        "run": run,
        "chart": selectors.loss_chart(run=run),
        "summary": selectors.run_summary(run=run),
        "version": getattr(run, "model_version", None),
        "can_manage": True,
        "can_view_data": True,
    }
    template = "training/run.html#status" if request.htmx else "training/run.html"
    return render(request, template, context)


@login_required
@require_POST
def run_cancel(request, slug, run_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    run = get_object_or_404(TrainingRun, pk=run_id, project=project)
    try:
        services.training_run_cancel(run=run)
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect("training_run", slug=project.slug, run_id=run.pk)
