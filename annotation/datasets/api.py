"""Export API: a thin caller of annotation/datasets/selectors.py."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework.views import APIView

from annotation.datasets import selectors
from annotation.datasets.views import export_response
from annotation.projects.permissions import VIEW_DATA, project_for
from config.errors import ServiceError


@extend_schema_view(
    get=extend_schema(
        operation_id="preferences_export",
        parameters=[
            OpenApiParameter("format", str, enum=list(selectors.FORMATS)),
            OpenApiParameter("ai", str, enum=["exclude", "trusted", "include", "only"]),
            OpenApiParameter("container", str, enum=list(selectors.CONTAINERS)),
        ],
        responses={
            (200, "application/jsonl"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    ),
)
class PreferenceExportApi(APIView):
    """GET ?format=dpo|sft|ranking|rating|kto&ai=exclude|trusted|include|only
    &container=jsonl|csv: the JSONL file, or CSV for the tabular formats (no ai: the
    project's setting, which leaves AI labels out unless an admin chose otherwise); every
    row carries its source (human, ai, review), for AI rows judge, constitution version and
    principle, and prompt_id, external_id, labeler (a pseudonym) and judged_at."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        export_format = request.query_params.get("format", "dpo")
        if export_format not in selectors.FORMATS:
            raise ServiceError(
                f"Unknown format {export_format!r}; choose one of {', '.join(selectors.FORMATS)}."
            )
        container = request.query_params.get("container") or "jsonl"
        selectors.check_container(export_format, container)
        selection = selectors.ai_selection(project, request.query_params.get("ai") or None)
        return export_response(project, export_format, selection, container)
