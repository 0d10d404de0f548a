from django.contrib import admin

from annotation.models import (
    ChatTurn,
    GenerationJob,
    Judgment,
    Membership,
    Project,
    Prompt,
    Task,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "overlap_target", "created_at"]
    inlines = [MembershipInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "external_id", "created_at"]
    list_filter = ["project"]
    search_fields = ["text", "external_id"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "prompt", "assigned_count", "overlap_target"]
    list_filter = ["project", "kind", "is_gold", "flagged"]
    raw_id_fields = ["prompt"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    """Read-only: judgments are append-only; a correction is a new, superseding row."""

    list_display = ["id", "project", "kind", "labeler", "source", "created_at"]
    list_filter = ["project", "kind", "source"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ChatTurn)
class ChatTurnAdmin(admin.ModelAdmin):
    """Read-only: a turn is a job; the worker and the chat's services change it."""

    list_display = ["id", "session", "message_index", "status", "attempts", "heartbeat_at"]
    list_filter = ["status"]
    raw_id_fields = ["session", "prompt"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "model_version", "status", "done", "total", "created_at"]
    list_filter = ["status"]
