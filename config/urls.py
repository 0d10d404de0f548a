from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.defaults import page_not_found
from django.views.generic import RedirectView
from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import api_schema, health, throttles  # noqa: F401 (api_schema: the API keys' schemes)

pages = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset by mail (Django's views; the form with a rate on its mails).
    path(
        "password-reset/",
        throttles.ThrottledPasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("healthz", health.healthz, name="healthz"),
]

# The API's OpenAPI schema (YAML; JSON with `Accept: application/json` or at schema.json,
# since `?format=` is the export's parameter) and Swagger UI on it. Signed-in users only,
# like every other route here: Loop is an internal tool, and the schema lists its admin
# operations (model import from server folders, serving endpoints, training); anyone who
# may call the API has a session or a key that opens it.
schema = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path(
        "api/schema.json",
        SpectacularAPIView.as_view(renderer_classes=[OpenApiJsonRenderer]),
        name="api_schema_json",
    ),
    path(
        "api/docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api_schema")),
        name="api_docs",
    ),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever a page links; the icon is a static file, whose
    # name (hashed in production) is known only once the storage is up, hence lazy.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"))),
    *pages,
    *schema,
    path("", include("annotation.projects.urls")),
    path("", include("annotation.labeling.urls")),
    path("", include("annotation.prompts.urls")),
    path("", include("annotation.candidates.urls")),
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


def not_found(request, exception):
    """An /api/ path no route matches (a negative id, a bad slug) answers the API's JSON
    error like its views' own 404s; pages keep Django's page (/v1 has its own catch-all)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
