"""Registry pages: a page per model version (promote, retire; its release is
annotation/candidates/views.py), the lineage graph and the import form. Thin callers of
models_registry/selectors.py and services.py."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.projects.permissions import MANAGE, VIEW_DATA, can, project_for
from config.errors import ServiceError
from models_registry import selectors, services
from models_registry.endpoints import (
    serving_endpoint_clear,
    serving_endpoint_set,
    serving_endpoint_summary,
)
from models_registry.forms import ModelImportForm, ServingEndpointForm, StateChangeForm
from models_registry.models import ModelVersion


def form_error(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


def render_version_page(
    request, project, version_id: int, *, error: str = "", status: int = 200, endpoint_form=None
):
    """The version page, with ``error`` (a refused action) shown at its top; also used by
    the release, whose view is annotation/candidates/views.py (a release generates the
    stage's candidates)."""
    version = selectors.version_detail(version_id=version_id)
    can_manage = can(user=request.user, project=project, capability=MANAGE)
    incumbent = selectors.incumbent()
    is_policy = version.kind == ModelVersion.Kind.POLICY
    is_incumbent = incumbent is not None and incumbent.pk == version.pk
    run = version.training_run
    context = {
        "project": project,
        "version": version,
        "lineage": version.lineage(),
        "children": list(version.children.all()),
        "changes": list(version.changes.all()),
        "artifacts": selectors.artifacts(version),
        "metrics": _readable_metrics(version.metrics),
        "incumbent": incumbent,
        "is_incumbent": is_incumbent,
        "can_promote": is_policy and not is_incumbent,
        "can_retire": version.state != ModelVersion.State.RETIRED,
        "evidence": (
            selectors.head_to_head_evidence(version, incumbent)
            if is_policy and incumbent is not None and not is_incumbent
            else None
        ),
        "run_here": run is not None and run.project_id == project.pk and can_manage,
        "can_release": version.intermediate
        and can_manage
        and (run is None or run.project_id == project.pk),
        "form": StateChangeForm(),
        "endpoint": serving_endpoint_summary(version),
        "endpoint_form": endpoint_form or _endpoint_form_for(version),
        "error": error,
        "can_manage": can_manage,
        "can_view_data": True,
    }
    return render(request, "models_registry/version.html", context, status=status)


@login_required
@require_GET
def version_page(request, slug, version_id):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    return render_version_page(request, project, version_id)


def _state_change(request, slug, version_id, service, done: str):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = get_object_or_404(ModelVersion, pk=version_id)
    form = StateChangeForm(request.POST)
    if not form.is_valid():
        return render_version_page(request, project, version.pk, error=form_error(form), status=400)
    try:
        service(version=version, user=request.user, note=form.cleaned_data["note"])
    except ServiceError as refusal:
        return render_version_page(request, project, version.pk, error=refusal.message, status=400)
    messages.success(request, f"{version.name} {done}.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)


@login_required
@require_POST
def version_promote(request, slug, version_id):
    return _state_change(
        request, slug, version_id, services.model_version_promote, "is now serving"
    )


@login_required
@require_POST
def version_retire(request, slug, version_id):
    return _state_change(request, slug, version_id, services.model_version_retire, "is retired")


@login_required
@require_GET
def lineage_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    context = {
        "project": project,
        "graph": selectors.lineage_graph(),
        "incumbent": selectors.incumbent(),
        "can_manage": can(user=request.user, project=project, capability=MANAGE),
        "can_view_data": True,
    }
    return render(request, "models_registry/lineage.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    form = ModelImportForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                version = services.model_version_import(**form.cleaned_data)
            except ServiceError as refusal:
                form.add_error(None, refusal.message)
            else:
                messages.success(request, f"Imported {version.name} as a candidate.")
                return redirect("model_version", slug=project.slug, version_id=version.pk)
    context = {"project": project, "form": form, "can_manage": True, "can_view_data": True}
    return render(request, "models_registry/import.html", context, status=status)


def _readable_metrics(metrics) -> list[tuple[str, str]]:
    """Metric names and values, numbers to 4 significant digits."""
    if not isinstance(metrics, dict):
        return []
    return [
        (name, f"{value:.4g}" if isinstance(value, float) else str(value))
        for name, value in sorted(metrics.items())
    ]


def _endpoint_form_for(version: ModelVersion) -> ServingEndpointForm:
    """The endpoint form, filled with the endpoint set (never the key)."""
    return ServingEndpointForm(
        initial={"url": version.serving_url, "served_model_name": version.served_model_name}
    )


@login_required
@require_POST
def version_endpoint(request, slug, version_id):
    """Generate this version on an OpenAI-compatible inference server (admins)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = get_object_or_404(ModelVersion, pk=version_id)
    form = ServingEndpointForm(request.POST)
    if not form.is_valid():
        return render_version_page(
            request, project, version.pk, error=form_error(form), status=400, endpoint_form=form
        )
    try:
        serving_endpoint_set(
            version=version,
            url=form.cleaned_data["url"],
            served_model_name=form.cleaned_data["served_model_name"],
            # An empty key field keeps the key already set.
            api_key=form.cleaned_data["api_key"] or None,
        )
    except ServiceError as refusal:
        return render_version_page(
            request, project, version.pk, error=refusal.message, status=400, endpoint_form=form
        )
    messages.success(request, f"{version.name} now generates on {version.serving_url}.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)


@login_required
@require_POST
def version_endpoint_clear(request, slug, version_id):
    """Generate this version in-process from its files again (admins)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = get_object_or_404(ModelVersion, pk=version_id)
    serving_endpoint_clear(version=version)
    messages.success(request, f"{version.name} generates in-process again.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)
