"""A model version's page and its forms: promote, retire and its serving endpoint. The page
is the registry's (models_registry.views.version_page_context) plus the version's record
against the incumbent in battles (selectors.py), which is why it lives on this side: the
registry reads nothing of annotation. A release is annotation/candidates/views.py. Thin
callers of services.py and the registry's services."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.leaderboard import services
from annotation.leaderboard.selectors import evidence_against_incumbent
from annotation.projects.permissions import MANAGE, VIEW_DATA, page_capabilities, project_for
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry import services as registry_services
from models_registry.endpoints import serving_endpoint_clear, serving_endpoint_set
from models_registry.forms import ServingEndpointForm, StateChangeForm
from models_registry.models import ModelVersion
from models_registry.views import form_error, version_page_context


def render_version_page(
    request, project, version_id: int, *, error: str = "", status: int = 200, endpoint_form=None
):
    """The version page, with ``error`` (a refused action) shown at its top; also used by
    the release (annotation/candidates/views.py)."""
    context = version_page_context(
        request, project, version_id, error=error, endpoint_form=endpoint_form
    )
    if context["can_promote"]:
        context["evidence"] = evidence_against_incumbent(context["version"], project=project)
    return render(request, "models_registry/version.html", context, status=status)


@login_required
@require_GET
def version_page(request, slug, version_id):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    return render_version_page(request, project, version_id)


def _state_change(request, slug, version_id, service, done: str):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_in_project(project=project, version_id=version_id)
    form = StateChangeForm(request.POST)
    if not form.is_valid():
        return render_version_page(request, project, version.pk, error=form_error(form), status=400)
    try:
        service(version=version, project=project, user=request.user, note=form.cleaned_data["note"])
    except ServiceError as refusal:
        return render_version_page(request, project, version.pk, error=refusal.message, status=400)
    messages.success(request, f"{version.name} {done}.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)


# --- promotion: a confirmation step first ------------------------------------------------

PROMOTE_CONFIRM_PAGE = "annotation/leaderboard/promote_confirm.html"
NOT_CONFIRMED = (
    "Nothing changed: a promotion from this page needs confirming. Check the record "
    "against the incumbent below, then confirm."
)
INCUMBENT_CHANGED = (
    "Nothing changed: the incumbent changed since this page was shown. Check the new record "
    "below, then confirm again."
)


def _promotion_refusal(version, incumbent) -> str:
    """Why ``version`` cannot be promoted (the service's own reasons, said before the
    click), or ""."""
    if version.kind != ModelVersion.Kind.POLICY:
        return f"{version.name} is a reward model: only policies are promoted to serving."
    if version.intermediate:
        return f"{version.name} is an intermediate stage of a run: release it first."
    if incumbent is not None and incumbent.pk == version.pk:
        return f"{version.name} is already the incumbent."
    return ""


def _percent(share) -> str:
    return f"{share * 100:.1f}%"


def _verdict(evidence: dict) -> dict:
    """What the record says, for the page: the rates as percentages and whether the
    interval lies above, below or around 50%."""
    if not evidence or not evidence.get("battles"):
        return {"verdict": "none"}
    low, high = evidence["low"], evidence["high"]
    verdict = "better" if low > 0.5 else "worse" if high < 0.5 else "undecided"
    return {
        "verdict": verdict,
        "win_rate": _percent(evidence["win_rate"]),
        "low": _percent(low),
        "high": _percent(high),
    }


def _render_promote_confirm(request, project, version, *, error="", note="", status=200):
    incumbent = registry_selectors.incumbent(project=project)
    evidence = evidence_against_incumbent(version, project=project)
    context = {
        "project": project,
        "version": version,
        "incumbent": incumbent,
        "evidence": evidence,
        "shown": _verdict(evidence),
        "refusal": _promotion_refusal(version, incumbent),
        "error": error,
        "note": note,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, PROMOTE_CONFIRM_PAGE, context, status=status)


@login_required
@require_GET
def version_promote_confirm(request, slug, version_id):
    """Before a promotion: the candidate's record against the incumbent (win rate, its 95%
    interval, the battles behind it), a warning when the interval includes 50%, and the
    button that promotes (a POST with confirm=1)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_in_project(project=project, version_id=version_id)
    return _render_promote_confirm(request, project, version)


@login_required
@require_POST
def version_promote(request, slug, version_id):
    """Promote, once confirmed: a post without confirm=1 (or made against another incumbent
    than the one shown) changes nothing and shows the confirmation step again."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_in_project(project=project, version_id=version_id)
    note = request.POST.get("note", "")
    if request.POST.get("confirm") != "1":
        return _render_promote_confirm(
            request, project, version, error=NOT_CONFIRMED, note=note, status=400
        )
    if "incumbent" in request.POST and request.POST["incumbent"] != _incumbent_key(project):
        return _render_promote_confirm(
            request, project, version, error=INCUMBENT_CHANGED, note=note, status=409
        )
    return _state_change(
        request, slug, version_id, services.promote_with_evidence, "is now serving"
    )


def _incumbent_key(project) -> str:
    """The incumbent as the confirmation form carries it: its id, or "" when none."""
    incumbent = registry_selectors.incumbent(project=project)
    return str(incumbent.pk) if incumbent else ""


@login_required
@require_POST
def version_retire(request, slug, version_id):
    return _state_change(request, slug, version_id, services.retire_with_evidence, "is retired")


@login_required
@require_POST
def version_endpoint(request, slug, version_id):
    """Generate this version on an OpenAI-compatible inference server (admins)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_owned_from(
        project=project, version_id=version_id, user=request.user
    )
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
    version = registry_selectors.version_owned_from(
        project=project, version_id=version_id, user=request.user
    )
    serving_endpoint_clear(version=version)
    messages.success(request, f"{version.name} generates in-process again.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)


@login_required
@require_POST
def version_share(request, slug, version_id):
    """Share a version this workspace owns with another workspace, or stop (``unshare``)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_owned_from(
        project=project, version_id=version_id, user=request.user
    )
    try:
        registry_services.model_version_share(
            version=version,
            workspace_slug=request.POST.get("workspace", ""),
            share=request.POST.get("action") != "unshare",
        )
    except ServiceError as refusal:
        return render_version_page(request, project, version.pk, error=refusal.message, status=400)
    messages.success(request, f"{version.name} is shared with: {_shared_list(version)}.")
    return redirect("model_version", slug=project.slug, version_id=version.pk)


def _shared_list(version) -> str:
    return ", ".join(sorted(w.slug for w in version.shared_with.all())) or "no other workspace"
