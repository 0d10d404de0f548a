"""Leaderboard API: the project's leaderboard, and a version's promotion and retirement,
which record its head-to-head against the incumbent (services.py). Thin callers of
selectors.py and services.py; the rest of the version API is models_registry/api.py."""

from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.leaderboard import selectors, services
from annotation.projects.permissions import MANAGE, VIEW_DATA, project_for
from config.api_schema import OBJECT
from models_registry import selectors as registry_selectors
from models_registry.api import StateChangeInputSerializer, change_payload, version_payload


@extend_schema_view(
    get=extend_schema(
        operation_id="leaderboard",
        parameters=[OpenApiParameter("source", str, enum=["human", "ai"])],
        responses={200: OBJECT},
    ),
)
class ProjectLeaderboardApi(APIView):
    """GET: the project's leaderboard for one judge source (?source=human, the default, or
    ?source=ai): ratings with intervals and ranks, online Elo, win rates, Elo history."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        source = selectors.parse_source(request.query_params.get("source"))
        board = selectors.project_leaderboard(project=project, source=source)
        return Response({"project": project.slug, **board})


# --- a version against the incumbent --------------------------------------------------


def _state_change(request, slug, version_id, service):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    version = registry_selectors.version_in_project(project=project, version_id=version_id)
    data = StateChangeInputSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    change = service(
        version=version, project=project, user=request.user, note=data.validated_data["note"]
    )
    detail = registry_selectors.version_detail(version_id=version.pk, project=project)
    payload = version_payload(detail)
    return Response({**payload, "change": change_payload(change)})


@extend_schema_view(
    post=extend_schema(
        operation_id="model_version_promote",
        request=StateChangeInputSerializer,
        responses={200: OBJECT},
    ),
)
class ModelVersionPromoteApi(APIView):
    def post(self, request, slug, version_id):
        """Promote a policy to serving (the new incumbent), recording its head-to-head
        against the incumbent it replaces; 400 with a detail if refused."""
        return _state_change(request, slug, version_id, services.promote_with_evidence)


@extend_schema_view(
    post=extend_schema(
        operation_id="model_version_retire",
        request=StateChangeInputSerializer,
        responses={200: OBJECT},
    ),
)
class ModelVersionRetireApi(APIView):
    def post(self, request, slug, version_id):
        """Retire a version; the last serving policy is refused with 400."""
        return _state_change(request, slug, version_id, services.retire_with_evidence)
