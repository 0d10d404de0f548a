"""URLs of the export pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.datasets import api, views

urlpatterns = [
    path("p/<slug:slug>/export/", views.export_page, name="export"),
    path("p/<slug:slug>/export.jsonl", views.export_download, name="export_download"),
    path(
        "api/projects/<slug:slug>/export/",
        api.PreferenceExportApi.as_view(),
        name="api_export",
    ),
]
