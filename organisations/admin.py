"""Read-only admin for organisations and people (custodians and DAC members may view)."""

from django.contrib import admin

from tre.admin import GovernanceAdmin

from .models import Organisation, UserProfile


@admin.register(Organisation)
class OrganisationAdmin(GovernanceAdmin):
    list_display = ["name", "sector", "created_at"]
    list_filter = ["sector"]
    search_fields = ["name"]


@admin.register(UserProfile)
class UserProfileAdmin(GovernanceAdmin):
    list_display = ["user", "organisation"]
    list_select_related = ["user", "organisation"]
    search_fields = ["user__username", "organisation__name"]
