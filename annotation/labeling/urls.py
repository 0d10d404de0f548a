"""URLs of the labeling queue, the admin's tasks page and the judgment API (included from
config/urls.py)."""

from django.urls import path

from annotation.labeling import api, views

urlpatterns = [
    path("p/<slug:slug>/label/", views.label, name="label"),
    path("p/<slug:slug>/tasks/", views.tasks_page, name="tasks"),
    path("api/projects/<slug:slug>/tasks/next/", api.TaskNextApi.as_view(), name="api_task_next"),
    path(
        "api/projects/<slug:slug>/judgments/",
        api.JudgmentSubmitApi.as_view(),
        name="api_judgments",
    ),
    path(
        "api/projects/<slug:slug>/assignments/<int:assignment_id>/skip/",
        api.AssignmentSkipApi.as_view(),
        name="api_assignment_skip",
    ),
]
