"""URLs of the labeling queue, the admin's tasks page and the judgment API (included from
config/urls.py)."""

from django.urls import path

from annotation.labeling import api, views

urlpatterns = [
    path("p/<slug:slug>/label/", views.label, name="label"),
    path(
        "p/<slug:slug>/label/judgments/<int:judgment_id>/",
        views.label_change,
        name="label_change",
    ),
    path("p/<slug:slug>/label/recent/", views.label_recent, name="label_recent"),
    path("p/<slug:slug>/tasks/", views.tasks_page, name="tasks"),
    path("api/projects/<slug:slug>/tasks/next/", api.TaskNextApi.as_view(), name="api_task_next"),
    path(
        "api/projects/<slug:slug>/judgments/",
        api.JudgmentSubmitApi.as_view(),
        name="api_judgments",
    ),
    path(
        "api/projects/<slug:slug>/judgments/<int:judgment_id>/change/",
        api.JudgmentChangeApi.as_view(),
        name="api_judgment_change",
    ),
    path(
        "api/projects/<slug:slug>/assignments/<int:assignment_id>/skip/",
        api.AssignmentSkipApi.as_view(),
        name="api_assignment_skip",
    ),
]
