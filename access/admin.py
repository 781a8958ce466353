"""Read-only admin for agreements (custodians and DAC members may view; writes go through services)."""

from django.contrib import admin

from tre.admin import GovernanceAdmin

from .models import Agreement


@admin.register(Agreement)
class AgreementAdmin(GovernanceAdmin):
    list_display = ["title", "reference", "organisation", "status", "commercial_use_allowed", "valid_from",
                    "valid_until"]
    list_filter = ["status", "commercial_use_allowed"]
    list_select_related = ["organisation"]
    search_fields = ["title", "reference", "organisation__name"]
