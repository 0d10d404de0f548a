"""The registry's API: versions, their import and serving endpoint. Promotion and
retirement, which record a version's head-to-head against the incumbent, are
annotation/leaderboard/api.py; a release is annotation/candidates/api.py."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
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

from annotation.projects.permissions import MANAGE, project_for, workspaces_of
from config.api_schema import OBJECT, OBJECT_LIST
from models_registry import selectors, services
from models_registry.endpoints import (
    serving_endpoint_clear,
    serving_endpoint_set,
    serving_endpoint_summary,
)
from models_registry.models import ModelVersion, StateChange


def version_payload(version: ModelVersion) -> dict:
    """A version as the API shows it; ``state`` and ``promoted_at`` are what the version
    carries: its state in the URL's project where the caller overlaid it
    (``selectors.version_detail`` and ``selectors.versions`` with a project), else its
    default."""
    return {
        "id": version.pk,
        "model_id": version.model_id,
        "name": version.name,
        "workspace": version.workspace.slug if version.workspace_id else None,
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
        "project": change.project.slug if change.project_id else None,
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
        # No project in the URL: the default states, of the versions the caller's
        # workspaces may see.
        versions = selectors.visible_to_any(_workspaces_of_member(request.user))
        versions = selectors.versions(project=None, kind=kind, rows=versions)
        return Response([version_payload(v) for v in versions])


def _workspaces_of_member(user) -> list:
    """The caller's workspaces; PermissionDenied for a user in no project, who has no
    business with any version."""
    workspaces = list(workspaces_of(user))
    if not workspaces:
        raise PermissionDenied("You are not a member of any project.")
    return workspaces


# --- registry ---------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(operation_id="model_version_detail", responses={200: OBJECT}),
)
class ModelVersionDetailApi(APIView):
    def get(self, request, version_id):
        """One version, its children and its state history (promotions, retirements)."""
        workspaces = _workspaces_of_member(request.user)
        get_object_or_404(selectors.visible_to_any(workspaces), pk=version_id)
        mine = {workspace.pk for workspace in workspaces}
        version = selectors.version_detail(version_id=version_id, project=None)
        payload = version_payload(version)
        payload["changes"] = [
            change_payload(change)
            for change in version.changes.all()
            if change.project_id is None or change.project.workspace_id in mine
        ]
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
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        version = selectors.version_owned_from(
            project=project, version_id=version_id, user=request.user
        )
        data = ServingEndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        serving_endpoint_set(
            version=version,
            url=data.validated_data["url"],
            served_model_name=data.validated_data["served_model_name"],
            api_key=data.validated_data.get("api_key"),
        )
        return Response(
            version_payload(selectors.version_detail(version_id=version.pk, project=project))
        )

    def delete(self, request, slug, version_id):
        """Generate this version in-process from its files again."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        version = selectors.version_owned_from(
            project=project, version_id=version_id, user=request.user
        )
        serving_endpoint_clear(version=version)
        return Response(
            version_payload(selectors.version_detail(version_id=version.pk, project=project))
        )


class VersionShareInputSerializer(serializers.Serializer):
    workspace = serializers.SlugField(max_length=50)
    share = serializers.BooleanField(default=True)


@extend_schema_view(
    post=extend_schema(
        operation_id="model_version_share",
        request=VersionShareInputSerializer,
        responses={200: OBJECT},
    ),
)
class ModelVersionShareApi(APIView):
    def post(self, request, slug, version_id):
        """Let another workspace see, serve and train from a version this workspace owns
        (``{"workspace": slug, "share": true}``), or stop (``"share": false``)."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = VersionShareInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = selectors.version_owned_from(
            project=project, version_id=version_id, user=request.user
        )
        services.model_version_share(
            version=version,
            workspace_slug=data.validated_data["workspace"],
            share=data.validated_data["share"],
        )
        payload = version_payload(selectors.version_detail(version_id=version.pk, project=project))
        payload["shared_with"] = sorted(w.slug for w in version.shared_with.all())
        return Response(payload)
