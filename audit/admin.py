from django.contrib import admin

from tre.admin import ReadOnlyModelAdmin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("seq", "timestamp", "actor", "action", "target_type", "target_id", "project")
    list_filter = ("action",)
    search_fields = ("actor", "action", "target_id")

