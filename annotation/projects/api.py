"""API of projects (DRF): the caller's projects and a project's counts."""

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects import selectors
from annotation.projects.guidelines import guidelines_publish
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    VIEW_DATA,
    project_for,
    projects_visible_to,
)
from config.api_schema import OBJECT


@extend_schema_view(
    get=extend_schema(
        operation_id="projects_list",
        responses={
            200: inline_serializer(
                "ProjectItem",
                {
                    "slug": drf_serializers.SlugField(),
                    "workspace": drf_serializers.SlugField(),
                    "name": drf_serializers.CharField(),
                    "description": drf_serializers.CharField(),
                },
                many=True,
            )
        },
    ),
)
class ProjectListApi(APIView):
    def get(self, request):
        projects = projects_visible_to(request.user).select_related("workspace").order_by("slug")
        return Response(
            [
                {
                    "slug": p.slug,
                    "workspace": p.workspace.slug,
                    "name": p.name,
                    "description": p.description,
                }
                for p in projects
            ]
        )


@extend_schema_view(
    get=extend_schema(operation_id="project_stats", responses={200: OBJECT}),
)
class ProjectStatsApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(selectors.project_overview(project=project))


def _guidelines_item(guidelines) -> dict:
    return {
        "version": guidelines.version,
        "text": guidelines.text,
        "created_by": guidelines.created_by.username if guidelines.created_by else None,
        "created_at": guidelines.created_at,
    }


GUIDELINES_ITEM = {
    "version": drf_serializers.IntegerField(),
    "text": drf_serializers.CharField(),
    "created_by": drf_serializers.CharField(allow_null=True),
    "created_at": drf_serializers.DateTimeField(),
}


@extend_schema_view(
    get=extend_schema(
        operation_id="guidelines_get",
        description="The current guidelines (null before any) and every version, newest first.",
        responses={
            200: inline_serializer(
                "GuidelinesHistory",
                {
                    "current": inline_serializer(
                        "GuidelinesCurrent", GUIDELINES_ITEM, allow_null=True
                    ),
                    "versions": inline_serializer("GuidelinesVersion", GUIDELINES_ITEM, many=True),
                },
            )
        },
    ),
    post=extend_schema(
        operation_id="guidelines_publish",
        description="Admins: publish the next version ({'text': markdown}).",
        request=inline_serializer("GuidelinesPublish", {"text": drf_serializers.CharField()}),
        responses={201: inline_serializer("GuidelinesPublished", GUIDELINES_ITEM)},
    ),
)
class GuidelinesApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        versions = [entry["guidelines"] for entry in selectors.guidelines_history(project)]
        return Response(
            {
                "current": _guidelines_item(versions[0]) if versions else None,
                "versions": [_guidelines_item(guidelines) for guidelines in versions],
            }
        )

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        text = request.data.get("text") if hasattr(request.data, "get") else None
        published = guidelines_publish(project=project, text=text, author=request.user)
        return Response(_guidelines_item(published), status=201)
