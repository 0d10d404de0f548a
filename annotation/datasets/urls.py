"""URLs of the export and data pages and APIs (included from config/urls.py)."""

from django.urls import path

from annotation.datasets import api, data_api, pages, views
from annotation.datasets.browser import urls as browser_urls

VERSION = "<slug:name>/<int:number>/"

urlpatterns = [
    path("p/<slug:slug>/export/", views.export_page, name="export"),
    path("p/<slug:slug>/export.jsonl", views.export_download, name="export_download"),
    path(
        "api/projects/<slug:slug>/export/",
        api.PreferenceExportApi.as_view(),
        name="api_export",
    ),
    # The data engine: import files, curate versions, export them.
    path("p/<slug:slug>/data/import/", pages.data_import, name="data_import"),
    path(
        "p/<slug:slug>/data/import/preview/",
        pages.data_import_preview,
        name="data_import_preview",
    ),
    path(
        "p/<slug:slug>/data/import/confirm/",
        pages.data_import_confirm,
        name="data_import_confirm",
    ),
    path("p/<slug:slug>/data/versions/", pages.data_versions, name="data_versions"),
    path(f"p/<slug:slug>/data/versions/{VERSION}", pages.data_version, name="data_version"),
    path(
        f"p/<slug:slug>/data/versions/{VERSION}export/",
        pages.data_version_export,
        name="data_version_export",
    ),
    path(
        "api/projects/<slug:slug>/data/imports/",
        data_api.DataImportsApi.as_view(),
        name="api_data_imports",
    ),
    path(
        "api/projects/<slug:slug>/data/versions/",
        data_api.DatasetVersionsApi.as_view(),
        name="api_data_versions",
    ),
    path(
        f"api/projects/<slug:slug>/data/versions/{VERSION}",
        data_api.DatasetVersionApi.as_view(),
        name="api_data_version",
    ),
    path(
        f"api/projects/<slug:slug>/data/versions/{VERSION}export/",
        data_api.DatasetVersionExportApi.as_view(),
        name="api_data_version_export",
    ),
]

# The data browser: its own package's routes.
urlpatterns += browser_urls.urlpatterns
