"""API of projects (DRF): the caller's projects and a project's counts."""

from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects import selectors
from annotation.projects.permissions import VIEW_DATA, project_for, projects_visible_to


class ProjectListApi(APIView):
    def get(self, request):
        projects = projects_visible_to(request.user).order_by("slug")
        return Response(
            [{"slug": p.slug, "name": p.name, "description": p.description} for p in projects]
        )


class ProjectStatsApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(selectors.project_overview(project=project))
