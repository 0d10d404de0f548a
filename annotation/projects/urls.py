"""URLs of the project pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.projects import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("projects/new/", views.project_create, name="project_create"),
    path("p/<slug:slug>/members/", views.members, name="members"),
    path("p/<slug:slug>/guidelines/", views.guidelines, name="guidelines"),
    path("api/projects/", api.ProjectListApi.as_view(), name="api_projects"),
    path(
        "api/projects/<slug:slug>/stats/",
        api.ProjectStatsApi.as_view(),
        name="api_project_stats",
    ),
    path("api/projects/<slug:slug>/members/", api.MemberListApi.as_view(), name="api_members"),
    path(
        "api/projects/<slug:slug>/members/<int:user_id>/",
        api.MemberApi.as_view(),
        name="api_member",
    ),
    path(
        "api/projects/<slug:slug>/guidelines/",
        api.GuidelinesApi.as_view(),
        name="api_guidelines",
    ),
]
