"""URLs of the training pages and API (included from config/urls.py)."""

from django.urls import path

from training import api, views

run = "p/<slug:slug>/training/<int:run_id>/"
api_run = "api/projects/<slug:slug>/training-runs/<int:run_id>/"

urlpatterns = [
    path("p/<slug:slug>/training/", views.runs_page, name="training"),
    path(run, views.run_detail, name="training_run"),
    path(f"{run}cancel/", views.run_cancel, name="training_run_cancel"),
    path(f"{run}resume/", views.run_resume, name="training_run_resume"),
    path(
        "api/projects/<slug:slug>/training-runs/",
        api.TrainingRunListApi.as_view(),
        name="api_training_runs",
    ),
    path(api_run, api.TrainingRunDetailApi.as_view(), name="api_training_run"),
    path(f"{api_run}cancel/", api.TrainingRunCancelApi.as_view(), name="api_training_run_cancel"),
    path(f"{api_run}resume/", api.TrainingRunResumeApi.as_view(), name="api_training_run_resume"),
]
