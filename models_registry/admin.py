from django.contrib import admin

from models_registry.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "method", "state", "parent", "created_at"]
    list_filter = ["kind", "method", "state"]
    readonly_fields = ["base_path", "adapter_path", "snapshot_hash", "library_versions", "metrics"]
    # The inference server's key is write-only (models_registry/endpoints.py): never shown here.
    exclude = ["serving_api_key"]
