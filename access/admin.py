"""Read-only admin for custodians and DAC members. Writes go through the API's services (so they
are audited); nothing can be added, changed or deleted here.

Django's admin lets in only users with ``is_staff`` (``tre_user NAME --staff``); once in, a
custodian or DAC member can *view* these models, and nobody can change them.
"""

from django.contrib import admin

from tre.admin import ReadOnlyModelAdmin
from tre.roles import Role, has_role

from .models import Agreement, Organisation, UserProfile


def may_read_governance(user) -> bool:
    return bool(user.is_active and (user.is_superuser or has_role(user, Role.CUSTODIAN) or has_role(user, Role.DAC)))


class ReadOnlyAdmin(ReadOnlyModelAdmin):
    def has_module_permission(self, request):
        return may_read_governance(request.user)

    def has_view_permission(self, request, obj=None):
        return may_read_governance(request.user)



@admin.register(Organisation)
class OrganisationAdmin(ReadOnlyAdmin):
    list_display = ["name", "sector", "created_at"]
    list_filter = ["sector"]
    search_fields = ["name"]


@admin.register(UserProfile)
class UserProfileAdmin(ReadOnlyAdmin):
    list_display = ["user", "organisation"]
    list_select_related = ["user", "organisation"]
    search_fields = ["user__username", "organisation__name"]


@admin.register(Agreement)
class AgreementAdmin(ReadOnlyAdmin):
    list_display = ["title", "reference", "organisation", "status", "commercial_use_allowed", "valid_from",
                    "valid_until"]
    list_filter = ["status", "commercial_use_allowed"]
    list_select_related = ["organisation"]
    search_fields = ["title", "reference", "organisation__name"]
