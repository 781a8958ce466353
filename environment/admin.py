"""Read-only admin: writes go through ``environment.services`` (and are audited there)."""

from django.contrib import admin

from tre.admin import ReadOnlyModelAdmin

from .models import Dataset, DatasetVersion, ErasureRun, OptOut, SandboxLease


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyModelAdmin):
    list_display = ("name", "title", "current_version", "created_at")
    search_fields = ("name", "title")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyModelAdmin):
    list_display = ("dataset", "number", "status", "origin", "row_count", "person_count", "optout_watermark", "created_at")
    list_filter = ("status", "origin")


@admin.register(OptOut)
class OptOutAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "registered_at", "registered_by")


@admin.register(SandboxLease)
class SandboxLeaseAdmin(ReadOnlyModelAdmin):
    list_display = ("version", "holder", "created_at", "expires_at")


@admin.register(ErasureRun)
class ErasureRunAdmin(ReadOnlyModelAdmin):
    list_display = ("finished_at", "optout_watermark", "datasets_checked", "datasets_rewritten", "rows_removed", "persons_removed")
