"""Data pages: import a dataset file (upload, preview, confirm), curate versions (preview
the recipe's report, then create), a version's card and its downloads. Thin callers of
uploads.py, imports.py, versions.py and exports.py."""

import json
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.datasets import uploads, writers
from annotation.datasets.exports import version_export
from annotation.datasets.forms import DataImportConfirmForm, DataImportForm, VersionForm
from annotation.datasets.versions import curate, dataset_version_create, parse_recipe
from annotation.models import DatasetVersion, PromptImport
from annotation.projects.permissions import (
    MANAGE,
    VIEW_DATA,
    can,
    page_capabilities,
    project_for,
)
from config.errors import NotFound, ServiceError

DOWNLOAD_CONTAINERS = ("jsonl", "parquet", "csv")
CONTENT_TYPES = {
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
}


def import_message(batch: PromptImport) -> str:
    return (
        f"Imported {batch.file_name} ({batch.format}) as {batch.source!r}: "
        f"{batch.record_count} records, {batch.prompt_count} new prompts "
        f"({batch.existing_count} already there), {batch.response_count} new responses, "
        f"{batch.judgment_count} new judgments."
    )


# --- import ----------------------------------------------------------------------------


def _import_page(request, project, *, form=None, preview=None, error="", status=200):
    context = {
        "project": project,
        "form": form or DataImportForm(),
        "preview": preview,
        "import_error": error,
        "imports": PromptImport.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-created_at")[:100],
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/datasets/data_import.html", context, status=status)


def _preview_of(stored, form_data: dict, chosen: str, rows) -> dict:
    return {
        "token": stored.token,
        "file_name": stored.file_name,
        "format": form_data["format"],
        "detected": chosen,
        "source": form_data["source"],
        "rows": [
            {"raw": json.dumps(raw, ensure_ascii=False, indent=1, default=str)[:1200], **summary}
            for raw, summary in rows
        ],
    }


@login_required
@require_GET
def data_import(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    return _import_page(request, project)


@login_required
@require_POST
def data_import_preview(request, slug):
    """Store the upload and show how its first records map; nothing is imported yet."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    form = DataImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _import_page(request, project, form=form, status=400)
    stored = None
    try:
        stored = uploads.upload_save(project=project, upload=form.cleaned_data["file"])
        chosen, rows = uploads.upload_preview(stored, form.cleaned_data["format"])
    except ServiceError as error:
        if stored is not None:
            uploads.upload_discard(project=project, token=stored.token)
        form.add_error("file", error.message)
        return _import_page(request, project, form=form, status=400)
    preview = _preview_of(stored, form.cleaned_data, chosen, rows)
    return _import_page(request, project, form=form, preview=preview)


@login_required
@require_POST
def data_import_confirm(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    confirm = DataImportConfirmForm(request.POST)
    if not confirm.is_valid():
        raise Http404("No such upload in this project: send the file again.")
    try:
        stored = uploads.upload_find(project=project, token=confirm.cleaned_data["token"])
    except NotFound as error:
        raise Http404(error.message) from None
    try:
        batch = uploads.upload_import(
            project=project,
            stored=stored,
            format=confirm.cleaned_data["format"],
            source=confirm.cleaned_data["source"],
            user=request.user,
        )
    except ServiceError as error:
        form = DataImportForm(initial=confirm.cleaned_data)
        message = f"{stored.file_name}: {error.message}"
        return _import_page(request, project, form=form, error=message, status=400)
    messages.success(request, import_message(batch))
    return redirect("data_import", slug=project.slug)


# --- versions --------------------------------------------------------------------------


def _versions_page(request, project, form, *, curated=None, status=200):
    context = {
        "project": project,
        "form": form,
        "curated": curated,
        "versions": DatasetVersion.objects.filter(project=project)
        .select_related("created_by")
        .order_by("name", "-number"),
        **page_capabilities(user=request.user, project=project),
    }
    # The Preview button's fragment, with the field errors the form above it cannot show.
    fragment = bool(request.htmx) and request.method == "POST"
    template = "annotation/datasets/versions.html" + ("#preview" if fragment else "")
    return render(request, template, {**context, "fragment": fragment}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def data_versions(request, slug):
    """GET: the versions and the recipe form. POST ``action=preview``: the recipe's dry
    run (rows kept, what each step removed or changed); ``action=create``: the version."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    if request.method == "GET":
        return _versions_page(request, project, VersionForm(project=project))
    form = VersionForm(request.POST, project=project)
    if not form.is_valid():
        return _versions_page(request, project, form, status=400)
    try:
        recipe = parse_recipe(
            project,
            **form.recipe_fields(),
            may_keep_pii=can(user=request.user, project=project, capability=MANAGE),
        )
        if request.POST.get("action") != "create":
            return _versions_page(request, project, form, curated=curate(project, recipe))
        version, created = dataset_version_create(
            project=project, name=form.cleaned_data["name"], recipe=recipe, user=request.user
        )
    except ServiceError as error:
        form.add_error(None, error.message)
        return _versions_page(request, project, form, status=400)
    verb = "Created" if created else "Already there (the same rows):"
    messages.success(request, f"{verb} {version.name} v{version.number}, {version.row_count} rows.")
    return redirect("data_version", slug=project.slug, name=version.name, number=version.number)


def _version_of(project, name: str, number: int) -> DatasetVersion:
    version = DatasetVersion.objects.filter(project=project, name=name, number=number).first()
    if version is None:
        raise Http404(f"No dataset version {name} v{number} in this project.")
    return version


@login_required
@require_GET
def data_version(request, slug, name, number):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    version = _version_of(project, name, number)
    card_metadata, card_body = writers.split_card(version.card)
    context = {
        "project": project,
        "version": version,
        "card_metadata": card_metadata,
        "card_body": card_body,
        "recipe_json": json.dumps(version.recipe, indent=2, ensure_ascii=False),
        "parents": version.parents.order_by("name", "number"),
        "formats": writers.FORMATS_OF_KIND.get(version.kind, ()),
        "containers": DOWNLOAD_CONTAINERS,
        "csv_formats": writers.CSV_FORMATS,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/datasets/version.html", context)


def version_file_response(version: DatasetVersion, fmt: str, container: str) -> FileResponse:
    """The version exported as ``fmt`` in ``container``, written under DATA_DIR and sent.
    The file is opened, then its folder removed: the open handle keeps the data readable
    until the response is sent (POSIX), so no export is left behind."""
    if container not in DOWNLOAD_CONTAINERS:
        raise ServiceError(
            f"Unknown container {container!r}; choose one of {', '.join(DOWNLOAD_CONTAINERS)}."
        )
    root = Path(settings.DATA_DIR) / "exports" / "downloads"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root))
    try:
        output = folder / f"{version.name}-v{version.number}-{fmt}.{container}"
        version_export(version=version, fmt=fmt, output=output, container=container)
        stream = output.open("rb")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return FileResponse(
        stream, as_attachment=True, filename=output.name, content_type=CONTENT_TYPES[container]
    )


@login_required
@require_GET
def data_version_export(request, slug, name, number):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    version = _version_of(project, name, number)
    try:
        return version_file_response(
            version, request.GET.get("format", ""), request.GET.get("container", "jsonl")
        )
    except ServiceError as error:
        return JsonResponse({"detail": error.message}, status=400)
