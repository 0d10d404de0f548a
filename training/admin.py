from django.contrib import admin

from training.models import DatasetSnapshot, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "method", "status", "step", "total_steps", "created_at"]
    list_filter = ["status", "method"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "format", "row_count", "content_hash", "created_at"]
