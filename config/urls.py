from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from config import health
from models_registry import api as registry_api
from models_registry import views as registry_views

pages = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("p/<slug:slug>/models/", registry_views.models_page, name="models"),
    path(
        "p/<slug:slug>/models/jobs/",
        registry_views.generation_jobs_fragment,
        name="generation_jobs",
    ),
    path(
        "p/<slug:slug>/models/jobs/<int:job_id>/cancel/",
        registry_views.generation_job_cancel,
        name="generation_job_cancel",
    ),
    path(
        "p/<slug:slug>/models/preview/",
        registry_views.generation_preview_fragment,
        name="generation_preview",
    ),
]

api = [
    path(
        "api/projects/<slug:slug>/generation-jobs/",
        registry_api.GenerationJobApi.as_view(),
        name="api_generation_jobs",
    ),
    path(
        "api/projects/<slug:slug>/generation-jobs/preview/",
        registry_api.GenerationPreviewApi.as_view(),
        name="api_generation_preview",
    ),
    path(
        "api/projects/<slug:slug>/generation-jobs/<int:job_id>/cancel/",
        registry_api.GenerationJobCancelApi.as_view(),
        name="api_generation_job_cancel",
    ),
    path("api/model-versions/", registry_api.ModelVersionListApi.as_view(), name="api_versions"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever a page links; the icon is a static file, whose
    # name (hashed in production) is known only once the storage is up, hence lazy.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"))),
    *pages,
    *api,
    path("", include("annotation.projects.urls")),
    path("", include("annotation.labeling.urls")),
    path("", include("annotation.prompts.urls")),
    path("", include("annotation.review.urls")),
    path("", include("annotation.chat.urls")),
    path("", include("annotation.arena.urls")),
    path("", include("annotation.leaderboard.urls")),
    path("", include("annotation.judges.urls")),
    path("", include("annotation.datasets.urls")),
    path("", include("models_registry.urls")),
    path("", include("training.urls")),
    path("", include("models_registry.urls_openai")),
]
