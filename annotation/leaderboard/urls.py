"""URLs of the leaderboard pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.leaderboard import api, views

urlpatterns = [
    path("leaderboard/", views.leaderboard_page, name="leaderboard"),
    path(
        "p/<slug:slug>/leaderboard/",
        views.project_leaderboard_page,
        name="project_leaderboard",
    ),
    path(
        "api/projects/<slug:slug>/leaderboard/",
        api.ProjectLeaderboardApi.as_view(),
        name="api_project_leaderboard",
    ),
]
