from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from config import health

pages = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever a page links; the icon is a static file, whose
    # name (hashed in production) is known only once the storage is up, hence lazy.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"))),
    *pages,
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
