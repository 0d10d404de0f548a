"""Registry pages: the lineage graph, the import form and the API key page (the key for
the OpenAI-compatible API), plus ``version_page_context``, what a version's page shows of
the registry. Thin callers of selectors.py and services.py.

The version page itself, and its promote, retire and serving-endpoint forms, are
annotation/leaderboard/versions.py: the page shows the version's record against the
incumbent in battles, which annotation counts. A version's release, which generates its
candidates, is annotation/candidates/views.py; the project's Models page too."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from annotation.projects.permissions import MANAGE, VIEW_DATA, can, project_for, workspaces_of
from config.errors import ServiceError
from config.paths import is_under_data_dir
from models_registry import selectors, services
from models_registry.endpoints import serving_endpoint_summary
from models_registry.forms import ModelImportForm, ServingEndpointForm, StateChangeForm
from models_registry.models import ModelVersion
from models_registry.recipe import recipe_table


def form_error(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


def _artifacts_marked(version: ModelVersion) -> dict:
    """The version's artifact folders, each marked ``outside_data_dir`` when it lies outside
    DATA_DIR (a folder imported in place): its path is stored absolute, so only a machine
    with that same folder can load it."""
    artifacts = selectors.artifacts(version)
    for folder in (artifacts["base"], artifacts["adapter"]):
        if folder is not None:
            folder["outside_data_dir"] = not is_under_data_dir(folder["path"])
    return artifacts


def version_page_context(
    request, project, version_id: int, *, error: str = "", endpoint_form=None
) -> dict:
    """What the version page (templates/models_registry/version.html) shows of the
    registry: the version, its lineage, children, state history (states and history being
    ``project``'s), artifacts, metrics,
    serving endpoint and the actions the user may take, with ``error`` (a refused action)
    at its top. The page's view adds the record against the incumbent (``evidence``).
    Http404 for an unknown version."""
    version = selectors.version_detail(version_id=version_id, project=project)
    can_manage = can(user=request.user, project=project, capability=MANAGE)
    incumbent = selectors.incumbent(project=project)
    is_policy = version.kind == ModelVersion.Kind.POLICY
    is_incumbent = incumbent is not None and incumbent.pk == version.pk
    run = version.training_run
    return {
        "project": project,
        "version": version,
        "lineage": version.lineage(),
        "children": list(version.children.all()),
        "changes": list(version.changes.all()),
        "artifacts": _artifacts_marked(version),
        "metrics": _readable_metrics(version.metrics),
        "recipe": recipe_table(version.config),
        "incumbent": incumbent,
        "is_incumbent": is_incumbent,
        "can_promote": is_policy and not is_incumbent,
        "can_retire": version.state != ModelVersion.State.RETIRED,
        "evidence": None,
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
@require_GET
def lineage_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    context = {
        "project": project,
        "graph": selectors.lineage_graph(project=project),
        "incumbent": selectors.incumbent(project=project),
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
                version = services.model_version_import(
                    **form.cleaned_data,
                    workspace=project.workspace,
                    import_root=settings.MODEL_IMPORT_ROOT,
                )
            except ServiceError as refusal:
                form.add_error(None, refusal.message)
            else:
                messages.success(request, f"Imported {version.name} as a candidate.")
                return redirect("model_version", slug=project.slug, version_id=version.pk)
    context = {"project": project, "form": form, "can_manage": True, "can_view_data": True}
    return render(request, "models_registry/import.html", context, status=status)


@never_cache  # the page may hold a new key's secret: no cache keeps a copy
@login_required
@require_http_methods(["GET", "POST"])
def api_key_page(request):
    """The user's API keys (name, prefix, workspace, dates; never a secret). A POST makes a
    named key for one of the user's workspaces and shows its secret once
    (``action=create``), or revokes one of the user's keys (``action=revoke``)."""
    secret, created, error, status = None, None, "", 200
    workspaces = list(workspaces_of(request.user))
    if request.method == "POST":
        action = request.POST.get("action", "create")
        try:
            if action == "revoke":
                revoked = services.api_key_revoke(
                    user=request.user, key_id=request.POST.get("key_id")
                )
                messages.success(request, f"Revoked the key {revoked.name}.")
                return redirect("api_key")
            workspace = next(
                (w for w in workspaces if str(w.pk) == request.POST.get("workspace", "")), None
            )
            created, secret = services.api_key_create(
                user=request.user, workspace=workspace, name=request.POST.get("name", "")
            )
        except ServiceError as refusal:
            error, status = refusal.message, refusal.status_code
    context = {
        "secret": secret,
        "created": created,
        "error": error,
        "keys": selectors.api_keys_of(user=request.user),
        "workspaces": workspaces,
        "base_url": request.build_absolute_uri("/v1"),
        "models": selectors.servable_versions_for_request(user=request.user),
    }
    return render(request, "models_registry/api_key.html", context, status=status)
