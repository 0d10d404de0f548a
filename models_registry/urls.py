"""URLs of the model registry's version pages, lineage graph, import and their API
(included from config/urls.py). A version's release, which generates its candidates, and
the project's Models page are annotation/candidates/urls.py."""

from django.urls import path

from models_registry import api, registry_views

version = "p/<slug:slug>/models/<int:version_id>/"
api_version = "api/projects/<slug:slug>/model-versions/<int:version_id>/"

urlpatterns = [
    path("p/<slug:slug>/models/lineage/", registry_views.lineage_page, name="model_lineage"),
    path("p/<slug:slug>/models/import/", registry_views.import_page, name="model_import"),
    path(version, registry_views.version_page, name="model_version"),
    path(f"{version}promote/", registry_views.version_promote, name="model_version_promote"),
    path(f"{version}retire/", registry_views.version_retire, name="model_version_retire"),
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
        f"{api_version}promote/", api.ModelVersionPromoteApi.as_view(), name="api_version_promote"
    ),
    path(f"{api_version}retire/", api.ModelVersionRetireApi.as_view(), name="api_version_retire"),
    path(f"{version}endpoint/", registry_views.version_endpoint, name="model_version_endpoint"),
    path(
        f"{version}endpoint/clear/",
        registry_views.version_endpoint_clear,
        name="model_version_endpoint_clear",
    ),
    path(
        f"{api_version}endpoint/",
        api.ModelVersionEndpointApi.as_view(),
        name="api_version_endpoint",
    ),
]
