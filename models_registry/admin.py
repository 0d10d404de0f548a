from django.contrib import admin

from models_registry.models import GenerationJob, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "method", "state", "parent", "created_at"]
    list_filter = ["kind", "method", "state"]
    readonly_fields = ["base_path", "adapter_path", "snapshot_hash", "library_versions", "metrics"]


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "model_version", "status", "done", "total", "created_at"]
    list_filter = ["status"]
