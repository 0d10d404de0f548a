"""URLs of the project pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.projects import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("api/projects/", api.ProjectListApi.as_view(), name="api_projects"),
    path(
        "api/projects/<slug:slug>/stats/",
        api.ProjectStatsApi.as_view(),
        name="api_project_stats",
    ),
]
