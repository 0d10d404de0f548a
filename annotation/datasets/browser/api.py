"""The data browser's API (DRF): judgments with the page's filters and a ``next`` cursor;
soft delete and restore of prompts and responses (admins). A ServiceError becomes a 4xx
``{"detail": ...}`` (config/api_errors.py)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from annotation.datasets.browser import selectors, services
from annotation.datasets.browser.forms import BrowseForm
from annotation.models import Judgment, Prompt, Response
from annotation.projects.permissions import MANAGE, VIEW_DATA, project_for
from config.api_schema import OBJECT
from config.errors import ServiceError

FILTERS = [
    OpenApiParameter(name, OpenApiTypes.STR, required=False)
    for name in ("q", "source", "import_name", "labeler", "model_version", "kind", "agreement")
] + [
    OpenApiParameter("date_from", OpenApiTypes.DATE, required=False),
    OpenApiParameter("date_to", OpenApiTypes.DATE, required=False),
    OpenApiParameter("flagged", OpenApiTypes.BOOL, required=False),
    OpenApiParameter("deleted", OpenApiTypes.BOOL, required=False),
    OpenApiParameter("after", OpenApiTypes.INT64, required=False),
]
DELETE_REQUEST = inline_serializer(
    "SoftDelete", {"reason": drf_serializers.CharField(max_length=500)}
)


def judgment_data(judgment: Judgment) -> dict:
    return {
        "id": judgment.pk,
        "kind": judgment.kind,
        "source": judgment.source,
        "created_at": judgment.created_at.isoformat(),
        "labeler": judgment.labeler.username if judgment.labeler else None,
        "prompt_id": judgment.prompt_id,
        "prompt": judgment.prompt.text,
        "prompt_external_id": judgment.prompt.external_id,
        "task_id": judgment.task_id,
        "shown_order": judgment.shown_order,
        "response_a": judgment.response_a_id,
        "response_b": judgment.response_b_id,
        "choice": judgment.choice,
        "strength": judgment.strength,
        "ranking": judgment.ranking,
        "rated_response": judgment.rated_response_id,
        "scores": judgment.scores,
        "flags": judgment.flags,
        "rationale": judgment.rationale,
        "text": judgment.text,
        "time_spent_ms": judgment.time_spent_ms,
        "supersedes": judgment.supersedes_id,
        "guidelines": judgment.guidelines_id,
        "import": judgment.source_import.source if judgment.source_import else None,
        "import_details": judgment.import_details,
        "judge": judgment.judge.name if judgment.judge else None,
    }


@extend_schema_view(
    get=extend_schema(
        operation_id="data_judgments_list",
        parameters=FILTERS,
        responses={
            200: inline_serializer(
                "DataJudgmentsPage",
                {
                    "results": drf_serializers.ListField(child=drf_serializers.DictField()),
                    "next": drf_serializers.IntegerField(allow_null=True),
                },
            )
        },
    )
)
class DataJudgmentsApi(APIView):
    """GET: the project's judgments newest first, 50 a page, with the browser's filters
    (kind, source, import_name, labeler, model_version, date_from, date_to, flagged,
    agreement, deleted, q); ``next`` is the ``after`` of the next page, or null."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        form = BrowseForm(request.query_params)
        if not form.is_valid():
            raise ServiceError(form.problem())
        page = selectors.browse_judgments(project=project, filters=form.cleaned_data)
        return ApiResponse(
            {"results": [judgment_data(row) for row in page.rows], "next": page.next_after}
        )


def _reason(request) -> str:
    reason = request.data.get("reason", "") if hasattr(request.data, "get") else ""
    return reason if isinstance(reason, str) else ""


@extend_schema_view(
    post=extend_schema(
        operation_id="data_prompt_delete", request=DELETE_REQUEST, responses={200: OBJECT}
    )
)
class DataPromptDeleteApi(APIView):
    """POST ``{"reason": ...}``: delete the prompt softly and expire its pending
    assignments (admins)."""

    def post(self, request, slug, prompt_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        prompt = get_object_or_404(Prompt, project=project, pk=prompt_id)
        expired = services.prompt_delete(prompt=prompt, by=request.user, reason=_reason(request))
        return ApiResponse({"id": prompt.pk, "deleted": True, "expired_assignments": expired})


@extend_schema_view(
    post=extend_schema(operation_id="data_prompt_restore", request=None, responses={200: OBJECT})
)
class DataPromptRestoreApi(APIView):
    def post(self, request, slug, prompt_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        prompt = get_object_or_404(Prompt, project=project, pk=prompt_id)
        services.prompt_restore(prompt=prompt)
        return ApiResponse({"id": prompt.pk, "deleted": False})


@extend_schema_view(
    post=extend_schema(
        operation_id="data_response_delete", request=DELETE_REQUEST, responses={200: OBJECT}
    )
)
class DataResponseDeleteApi(APIView):
    def post(self, request, slug, response_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        response = get_object_or_404(Response, prompt__project=project, pk=response_id)
        services.response_delete(response=response, by=request.user, reason=_reason(request))
        return ApiResponse({"id": response.pk, "deleted": True})


@extend_schema_view(
    post=extend_schema(operation_id="data_response_restore", request=None, responses={200: OBJECT})
)
class DataResponseRestoreApi(APIView):
    def post(self, request, slug, response_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        response = get_object_or_404(Response, prompt__project=project, pk=response_id)
        services.response_restore(response=response)
        return ApiResponse({"id": response.pk, "deleted": False})
