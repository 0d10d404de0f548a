"""Export pages: the form and the JSONL or CSV download, thin callers of selectors.py."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.datasets import selectors
from annotation.datasets.writers import csv_lines
from annotation.judges.trust import ai_label_plan
from annotation.projects import selectors as project_selectors
from annotation.projects.permissions import VIEW_DATA, page_capabilities, project_for
from config.errors import ServiceError


@login_required
def export_page(request, slug):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    context = {
        "project": project,
        "overview": project_selectors.project_overview(project=project),
        "formats": selectors.FORMATS,
        "containers": selectors.CONTAINERS,
        "csv_formats": selectors.CSV_FORMATS,
        "ai_options": list(selectors.AI_LABELS.items()),
        "ai_plan": ai_label_plan(project=project),
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/datasets/export.html", context)


EXPORT_NAME_SUFFIX = {
    "include": "",
    "exclude": "-no-ai",
    "only": "-ai-only",
    "trusted": "-trusted-ai",
}


def export_response(
    project, export_format: str, ai: selectors.AiOption = None, container: str = "jsonl"
) -> StreamingHttpResponse:
    """The JSONL (or CSV) file; ``ai`` None takes the project's setting."""
    selection = selectors.ai_selection(project, ai)
    rows = selectors.preference_rows(project, export_format=export_format, ai=selection)
    if container == "csv":
        lines, content_type = csv_lines(rows), "text/csv; charset=utf-8"
    else:
        lines, content_type = selectors.jsonl_lines(rows), "application/jsonl"
    response = StreamingHttpResponse(lines, content_type=content_type)
    filename = f"{project.slug}-{export_format}{EXPORT_NAME_SUFFIX[selection.ai]}.{container}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_GET
def export_download(request, slug):
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    export_format = request.GET.get("format", "dpo")
    if export_format not in selectors.FORMATS:
        return JsonResponse(
            {"detail": f"Unknown format {export_format!r}; choose one of {selectors.FORMATS}."},
            status=400,
        )
    container = request.GET.get("container") or "jsonl"
    try:
        selectors.check_container(export_format, container)
        selection = selectors.ai_selection(project, request.GET.get("ai") or None)
    except ServiceError as error:
        return JsonResponse({"detail": error.message}, status=400)
    return export_response(project, export_format, selection, container)
