"""URLs of the project pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.projects import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("p/<slug:slug>/guidelines/", views.guidelines, name="guidelines"),
    path("api/projects/", api.ProjectListApi.as_view(), name="api_projects"),
    path(
        "api/projects/<slug:slug>/stats/",
        api.ProjectStatsApi.as_view(),
        name="api_project_stats",
    ),
    path(
        "api/projects/<slug:slug>/guidelines/",
        api.GuidelinesApi.as_view(),
        name="api_guidelines",
    ),
]
