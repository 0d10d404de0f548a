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
from annotation.projects.permissions import VIEW_DATA, project_for, projects_visible_to
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
