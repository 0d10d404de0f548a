"""URLs of the leaderboard pages and API, and of a model version's page, its promotion,
retirement and serving-endpoint forms and the promotion and retirement API (they show or
record the version's record against the incumbent; included from config/urls.py)."""

from django.urls import path

from annotation.leaderboard import api, versions, views

version = "p/<slug:slug>/models/<int:version_id>/"
api_version = "api/projects/<slug:slug>/model-versions/<int:version_id>/"

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
    path(version, versions.version_page, name="model_version"),
    path(f"{version}promote/", versions.version_promote, name="model_version_promote"),
    path(
        f"{version}promote/confirm/",
        versions.version_promote_confirm,
        name="model_version_promote_confirm",
    ),
    path(f"{version}retire/", versions.version_retire, name="model_version_retire"),
    path(f"{version}endpoint/", versions.version_endpoint, name="model_version_endpoint"),
    path(
        f"{version}endpoint/clear/",
        versions.version_endpoint_clear,
        name="model_version_endpoint_clear",
    ),
    path(f"{version}share/", versions.version_share, name="model_version_share"),
    path(
        f"{api_version}promote/", api.ModelVersionPromoteApi.as_view(), name="api_version_promote"
    ),
    path(f"{api_version}retire/", api.ModelVersionRetireApi.as_view(), name="api_version_retire"),
]
