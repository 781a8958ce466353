from django.contrib import admin

from tre.admin import ReadOnlyModelAdmin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "user", "kind", "text", "read_at", "emailed_at")
    list_filter = ("kind",)

