"""Read-only admin: pages that show and never write (every write goes through a service, which
audits it). Django's admin lets in only users with ``is_staff`` (``tre_user NAME --staff``); once in,
a custodian or DAC member can *view* the governance models, and nobody can change them."""

from django.contrib import admin

from .roles import Role, has_role


def may_read_governance(user) -> bool:
    return bool(user.is_active and (user.is_superuser or has_role(user, Role.CUSTODIAN) or has_role(user, Role.DAC)))


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Admin pages that show and never write: every write goes through a service, which audits it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class GovernanceAdmin(ReadOnlyModelAdmin):
    """Read-only pages that custodians and DAC members may view."""

    def has_module_permission(self, request):
        return may_read_governance(request.user)

    def has_view_permission(self, request, obj=None):
        return may_read_governance(request.user)
