from django.contrib import admin


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Admin pages that show and never write: every write goes through a service, which audits it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
