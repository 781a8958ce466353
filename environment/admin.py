"""Read-only admin: writes go through ``environment.services`` (and are audited there)."""

from django.contrib import admin

from .models import Dataset, DatasetVersion, ErasureRun, OptOut, SandboxLease


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Dataset)
class DatasetAdmin(ReadOnly):
    list_display = ("name", "title", "current_version", "created_at")
    search_fields = ("name", "title")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnly):
    list_display = ("dataset", "number", "status", "origin", "row_count", "person_count", "optout_watermark", "created_at")
    list_filter = ("status", "origin")


@admin.register(OptOut)
class OptOutAdmin(ReadOnly):
    list_display = ("id", "registered_at", "registered_by")


@admin.register(SandboxLease)
class SandboxLeaseAdmin(ReadOnly):
    list_display = ("version", "holder", "created_at", "expires_at")


@admin.register(ErasureRun)
class ErasureRunAdmin(ReadOnly):
    list_display = ("finished_at", "optout_watermark", "datasets_checked", "datasets_rewritten", "rows_removed", "persons_removed")
