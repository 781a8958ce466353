"""Per-object permissions on projects (django-guardian): granted and revoked here and nowhere
else, each change audited in the caller's transaction."""

from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from audit.actions import AuditAction
from audit.services import audit_record

from .models import ProjectUserObjectPermission

# The per-object permissions on a project, and the two that only an approved, running project gives.
PROJECT_PERMISSIONS = ("view_project", "run_query", "view_output")
RESEARCH_PERMISSIONS = ("run_query", "view_output")


def _held(project, user) -> set[str]:
    return set(ProjectUserObjectPermission.objects.filter(user=user, content_object=project)
               .values_list("permission__codename", flat=True))


@transaction.atomic
def project_permissions_grant(*, project, user, permissions, actor, reason: str, request=None) -> list[str]:
    """Give ``user`` the named permissions on ``project``; audits ``permission.granted`` with the
    ones that were actually new (none new: nothing written). Returns them."""
    unknown = set(permissions) - set(PROJECT_PERMISSIONS)
    if unknown:
        raise ValueError(f"not a project permission: {sorted(unknown)}")
    held = _held(project, user)
    new = [p for p in permissions if p not in held]
    for perm in new:
        assign_perm(perm, user, project)
    if new:
        audit_record(actor=actor, action=AuditAction.PERMISSION_GRANTED, target=project,
               data={"username": user.get_username(), "permissions": new, "reason": reason}, request=request)
    return new


@transaction.atomic
def project_permissions_revoke(*, project, user, permissions, actor, reason: str, request=None) -> list[str]:
    """Take the named permissions on ``project`` from ``user``; audits ``permission.revoked`` with
    the ones the user actually held. Returns them."""
    held = _held(project, user)
    gone = [p for p in permissions if p in held]
    for perm in gone:
        remove_perm(perm, user, project)
    if gone:
        audit_record(actor=actor, action=AuditAction.PERMISSION_REVOKED, target=project,
               data={"username": user.get_username(), "permissions": gone, "reason": reason}, request=request)
    return gone
