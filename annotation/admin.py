from django.contrib import admin

from annotation.models import Comparison, ComparisonTask, Membership, Project, Prompt


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


@admin.register(ComparisonTask)
class ComparisonTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "assigned_count", "overlap_target"]
    list_filter = ["project"]
    raw_id_fields = ["prompt", "response_a", "response_b"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    """Read-only: judgments are append-only; a correction is a new, superseding row."""

    list_display = ["id", "project", "labeler", "choice", "source", "created_at"]
    list_filter = ["project", "choice", "source"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
