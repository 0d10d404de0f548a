"""URLs of the leaderboard pages and API (included from config/urls.py)."""

from django.urls import path

from annotation import leaderboard_views

urlpatterns = [
    path("leaderboard/", leaderboard_views.leaderboard_page, name="leaderboard"),
    path(
        "p/<slug:slug>/leaderboard/",
        leaderboard_views.project_leaderboard_page,
        name="project_leaderboard",
    ),
    path(
        "api/projects/<slug:slug>/leaderboard/",
        leaderboard_views.ProjectLeaderboardApi.as_view(),
        name="api_project_leaderboard",
    ),
]
