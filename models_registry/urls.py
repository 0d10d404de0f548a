"""URLs of the model registry's lineage graph, import, version API and serving endpoint API
(included from config/urls.py). A version's page, its promotion, retirement and serving
endpoint forms, and the promotion and retirement API are annotation/leaderboard/urls.py
(they show and record its record against the incumbent); a version's release, which
generates its candidates, and the project's Models page are annotation/candidates/urls.py."""

from django.urls import path

from models_registry import api, views

api_version = "api/projects/<slug:slug>/model-versions/<int:version_id>/"

urlpatterns = [
    path("p/<slug:slug>/models/lineage/", views.lineage_page, name="model_lineage"),
    path("p/<slug:slug>/models/import/", views.import_page, name="model_import"),
    path("api/model-versions/", api.ModelVersionListApi.as_view(), name="api_versions"),
    path(
        "api/model-versions/<int:version_id>/",
        api.ModelVersionDetailApi.as_view(),
        name="api_version",
    ),
    path(
        "api/projects/<slug:slug>/model-versions/import/",
        api.ModelVersionImportApi.as_view(),
        name="api_version_import",
    ),
    path(
        f"{api_version}endpoint/",
        api.ModelVersionEndpointApi.as_view(),
        name="api_version_endpoint",
    ),
    path(f"{api_version}share/", api.ModelVersionShareApi.as_view(), name="api_version_share"),
]
