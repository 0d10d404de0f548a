"""The registry's API: versions, their import and serving endpoint. Promotion and
retirement, which record a version's head-to-head against the incumbent, are
annotation/leaderboard/api.py; a release is annotation/candidates/api.py."""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import MANAGE, project_for
from config.api_schema import OBJECT, OBJECT_LIST
from models_registry import selectors, services
from models_registry.endpoints import (
    serving_endpoint_clear,
    serving_endpoint_set,
    serving_endpoint_summary,
)
from models_registry.models import ModelVersion, StateChange


def version_payload(version: ModelVersion) -> dict:
    return {
        "id": version.pk,
        "model_id": version.model_id,
        "name": version.name,
        "kind": version.kind,
        "method": version.method,
        "state": version.state,
        "intermediate": version.intermediate,
        "parent": version.parent_id,
        "lineage": [v.name for v in version.lineage()],
        "snapshot_hash": version.snapshot_hash,
        "seed": version.seed,
        "config": version.config,
        "library_versions": version.library_versions,
        "metrics": version.metrics,
        "created_at": version.created_at,
        "promoted_at": version.promoted_at,
        "imported_from": version.imported_from,
        "training_run": version.training_run_id,
        "children": [child.pk for child in version.children.all()],
        "serving_endpoint": serving_endpoint_summary(version),
    }


def change_payload(change: StateChange) -> dict:
    return {
        "id": change.pk,
        "version": change.version_id,
        "from_state": change.from_state,
        "to_state": change.to_state,
        "incumbent": change.incumbent_id,
        "evidence": change.evidence,
        "note": change.note,
        "user": change.user.username if change.user else None,
        "created_at": change.created_at,
    }


@extend_schema_view(
    get=extend_schema(
        operation_id="model_versions_list",
        parameters=[OpenApiParameter("kind", str, enum=list(ModelVersion.Kind.values))],
        responses={200: OBJECT_LIST},
    ),
)
class ModelVersionListApi(APIView):
    def get(self, request):
        """Registered versions; ``?kind=policy`` or ``?kind=reward`` for one kind."""
        kind = request.query_params.get("kind") or None
        if kind not in (None, *ModelVersion.Kind.values):
            raise ValidationError({"kind": f"choose one of {', '.join(ModelVersion.Kind.values)}"})
        return Response([version_payload(v) for v in selectors.versions(kind=kind)])


# --- registry ---------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(operation_id="model_version_detail", responses={200: OBJECT}),
)
class ModelVersionDetailApi(APIView):
    def get(self, request, version_id):
        """One version, its children and its state history (promotions, retirements)."""
        version = selectors.version_detail(version_id=version_id)
        payload = version_payload(version)
        payload["changes"] = [change_payload(change) for change in version.changes.all()]
        return Response(payload)


class StateChangeInputSerializer(serializers.Serializer):
    """The body of a promotion, retirement or release (annotation/leaderboard/api.py,
    annotation/candidates/api.py)."""

    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class ModelVersionImportInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    source = serializers.CharField(max_length=500)
    kind = serializers.ChoiceField(choices=ModelVersion.Kind.choices, default="policy")


@extend_schema_view(
    post=extend_schema(
        operation_id="model_version_import",
        request=ModelVersionImportInputSerializer,
        responses={201: OBJECT},
    ),
)
class ModelVersionImportApi(APIView):
    def post(self, request, slug):
        """Import a model from a server folder, a .gguf file or a hub id (201)."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = ModelVersionImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.model_version_import(
            **data.validated_data,
            workspace=project.workspace,
            import_root=settings.MODEL_IMPORT_ROOT,
        )
        return Response(version_payload(version), status=201)


# --- serving endpoint -------------------------------------------------------------------


class ServingEndpointInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=500, allow_blank=True)
    served_model_name = serializers.CharField(max_length=200, allow_blank=True)
    # Omitted: the key already set stays; "": no key.
    api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, trim_whitespace=True
    )


@extend_schema_view(
    put=extend_schema(
        operation_id="model_version_endpoint_set",
        request=ServingEndpointInputSerializer,
        responses={200: OBJECT},
    ),
    delete=extend_schema(
        operation_id="model_version_endpoint_clear", request=None, responses={200: OBJECT}
    ),
)
class ModelVersionEndpointApi(APIView):
    def put(self, request, slug, version_id):
        """Generate this version on an OpenAI-compatible server: ``{"url",
        "served_model_name", "api_key"?}`` (``api_key`` omitted keeps the one set). The
        answer shows whether a key is set, never the key; 400 with a detail if refused."""
        project_for(user=request.user, slug=slug, capability=MANAGE)
        version = get_object_or_404(ModelVersion, pk=version_id)
        data = ServingEndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        serving_endpoint_set(
            version=version,
            url=data.validated_data["url"],
            served_model_name=data.validated_data["served_model_name"],
            api_key=data.validated_data.get("api_key"),
        )
        return Response(version_payload(selectors.version_detail(version_id=version.pk)))

    def delete(self, request, slug, version_id):
        """Generate this version in-process from its files again."""
        project_for(user=request.user, slug=slug, capability=MANAGE)
        version = get_object_or_404(ModelVersion, pk=version_id)
        serving_endpoint_clear(version=version)
        return Response(version_payload(selectors.version_detail(version_id=version.pk)))
