"""Routes of the data browser (appended to annotation/datasets/urls.py)."""

from django.urls import path

from annotation.datasets.browser import api, views

PAGES = "p/<slug:slug>/data/"
API = "api/projects/<slug:slug>/data/"

urlpatterns = [
    path(f"{PAGES}browse/", views.data_browser, name="data_browser"),
    path(f"{PAGES}judgments/<int:judgment_id>/", views.data_judgment, name="data_judgment"),
    path(
        f"{PAGES}prompts/<int:prompt_id>/delete/",
        views.data_prompt_delete,
        name="data_prompt_delete",
    ),
    path(
        f"{PAGES}prompts/<int:prompt_id>/restore/",
        views.data_prompt_restore,
        name="data_prompt_restore",
    ),
    path(
        f"{PAGES}responses/<int:response_id>/delete/",
        views.data_response_delete,
        name="data_response_delete",
    ),
    path(
        f"{PAGES}responses/<int:response_id>/restore/",
        views.data_response_restore,
        name="data_response_restore",
    ),
    path(f"{API}judgments/", api.DataJudgmentsApi.as_view(), name="api_data_judgments"),
    path(
        f"{API}prompts/<int:prompt_id>/delete/",
        api.DataPromptDeleteApi.as_view(),
        name="api_data_prompt_delete",
    ),
    path(
        f"{API}prompts/<int:prompt_id>/restore/",
        api.DataPromptRestoreApi.as_view(),
        name="api_data_prompt_restore",
    ),
    path(
        f"{API}responses/<int:response_id>/delete/",
        api.DataResponseDeleteApi.as_view(),
        name="api_data_response_delete",
    ),
    path(
        f"{API}responses/<int:response_id>/restore/",
        api.DataResponseRestoreApi.as_view(),
        name="api_data_response_restore",
    ),
]
