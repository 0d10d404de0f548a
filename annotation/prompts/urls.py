"""URLs of the prompt pool's page and API (included from config/urls.py)."""

from django.urls import path

from annotation.prompts import api, views

urlpatterns = [
    path("p/<slug:slug>/prompts/", views.prompts, name="prompts"),
    path(
        "api/projects/<slug:slug>/prompts/import/",
        api.PromptImportApi.as_view(),
        name="api_prompt_import",
    ),
]
