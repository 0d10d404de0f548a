"""Leaderboard API: a thin caller of annotation/leaderboard/selectors.py."""

from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.leaderboard import selectors
from annotation.projects.permissions import VIEW_DATA, project_for


class ProjectLeaderboardApi(APIView):
    """GET: the project's leaderboard for one judge source (?source=human, the default, or
    ?source=ai): ratings with intervals and ranks, online Elo, win rates, Elo history."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        source = selectors.parse_source(request.query_params.get("source"))
        board = selectors.project_leaderboard(project=project, source=source)
        return Response({"project": project.slug, **board})
