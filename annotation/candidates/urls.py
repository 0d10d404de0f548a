"""URLs of candidates: the project's Models page with its generation jobs, their API, and
the release of a run's intermediate stage (included from config/urls.py)."""

from django.urls import path

from annotation.candidates import api, views

jobs_api = "api/projects/<slug:slug>/generation-jobs/"

urlpatterns = [
    path("p/<slug:slug>/models/", views.models_page, name="models"),
    path("p/<slug:slug>/models/jobs/", views.generation_jobs_fragment, name="generation_jobs"),
    path(
        "p/<slug:slug>/models/jobs/<int:job_id>/cancel/",
        views.generation_job_cancel,
        name="generation_job_cancel",
    ),
    path(
        "p/<slug:slug>/models/preview/",
        views.generation_preview_fragment,
        name="generation_preview",
    ),
    path(
        "p/<slug:slug>/models/<int:version_id>/release/",
        views.version_release,
        name="model_version_release",
    ),
    path(jobs_api, api.GenerationJobApi.as_view(), name="api_generation_jobs"),
    path(f"{jobs_api}preview/", api.GenerationPreviewApi.as_view(), name="api_generation_preview"),
    path(
        f"{jobs_api}<int:job_id>/cancel/",
        api.GenerationJobCancelApi.as_view(),
        name="api_generation_job_cancel",
    ),
    path(
        "api/projects/<slug:slug>/model-versions/<int:version_id>/release/",
        api.ModelVersionReleaseApi.as_view(),
        name="api_version_release",
    ),
]
