"""Writes for organisations and people. Every write audits itself in the same transaction."""

"""Writes for organisations, people, data-access agreements and per-object project grants.

Every write audits itself in the same transaction: if the audit event cannot be written, nothing
changed. guardian permissions on projects are granted and revoked here and nowhere else.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid, WrongState
from tre.roles import ROLE_ALIASES

from .models import Agreement, Organisation, Sector, UserProfile

# The per-object permissions on a project, and the two that only an approved, running project gives.
PROJECT_PERMISSIONS = ("view_project", "run_query", "view_output")
RESEARCH_PERMISSIONS = ("run_query", "view_output")




@transaction.atomic
def organisation_get_or_create(*, name: str, sector: str = Sector.ACADEMIC, actor=None) -> tuple[Organisation, bool]:
    name = name.strip()
    if not name:
        raise Invalid(fields={"name": ["an organisation needs a name"]})
    if sector not in Sector.values:
        raise Invalid(fields={"sector": [f"unknown sector {sector!r}; one of {', '.join(Sector.values)}"]})
    org = Organisation.objects.filter(name__iexact=name).first()
    if org:
        return org, False
    org = Organisation.objects.create(name=name, sector=sector)
    audit_record(actor=actor, action=AuditAction.ORGANISATION_CREATED, target=org, data={"name": org.name, "sector": org.sector})
    return org, True


@transaction.atomic
def organisation_create(*, name: str, sector: str, actor, request=None) -> Organisation:
    """A new organisation (``POST /organisations/``): a name already taken (any case) is a 400."""
    name = (name or "").strip()
    if not name:
        raise Invalid(fields={"name": ["an organisation needs a name"]})
    if sector not in Sector.values:
        raise Invalid(fields={"sector": [f"unknown sector {sector!r}; one of {', '.join(Sector.values)}"]})
    if Organisation.objects.filter(name__iexact=name).exists():
        raise Invalid(fields={"name": [f"an organisation named {name!r} already exists"]})
    org = Organisation.objects.create(name=name, sector=sector)
    audit_record(actor=actor, action=AuditAction.ORGANISATION_CREATED, target=org, data={"name": org.name, "sector": org.sector},
           request=request)
    return org


@transaction.atomic
def user_upsert(*, username: str, password: str | None, roles=(), organisation: str | None = None,
                sector: str = Sector.ACADEMIC, actor=None, staff: bool | None = None):
    """Create or update a user: password, role groups, organisation, (optionally) the staff flag
    that lets a custodian or DAC member read the admin. Idempotent."""
    unknown = [r for r in roles if r not in ROLE_ALIASES]
    if unknown:
        raise Invalid(fields={"role": [f"unknown role {r!r}; one of dac, output_checker, custodian, auditor" for r in unknown]})
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    if created:
        audit_record(actor=actor, action=AuditAction.USER_CREATED, target=("user", user.pk), data={"username": username})
    for role in roles:
        group, _ = Group.objects.get_or_create(name=ROLE_ALIASES[role].value)
        if not user.groups.filter(pk=group.pk).exists():
            user.groups.add(group)
            audit_record(actor=actor, action=AuditAction.ROLE_GRANTED, target=("user", user.pk), data={"username": username, "role": group.name})
    if staff is not None and user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
        audit_record(actor=actor, action=AuditAction.USER_STAFF_SET, target=("user", user.pk), data={"username": username, "staff": staff})
    profile, _ = UserProfile.objects.get_or_create(user=user)
    if organisation:
        org, _ = organisation_get_or_create(name=organisation, sector=sector, actor=actor)
        if profile.organisation_id != org.pk:
            if profile.organisation_id is not None:
                raise Invalid(fields={"organisation": [f"{username} already belongs to {profile.organisation.name}; a user belongs to one organisation"]})
            profile.organisation = org
            profile.save(update_fields=["organisation"])
            audit_record(actor=actor, action=AuditAction.USER_ORGANISATION_SET, target=("user", user.pk), data={"username": username, "organisation": org.pk})
    return user, created


# --- Data-access agreements ---------------------------------------------------------------

def _agreement_data(agreement) -> dict:
    return {"organisation": agreement.organisation_id, "title": agreement.title, "reference": agreement.reference,
            "datasets": sorted(d.pk for d in agreement.datasets.all()), "status": agreement.status,
            "commercial_use_allowed": agreement.commercial_use_allowed,
            "prohibited_uses": agreement.prohibited_uses,
            "valid_from": agreement.valid_from, "valid_until": agreement.valid_until}


@transaction.atomic
def agreement_create(*, actor, organisation, datasets, title, valid_from, valid_until=None, reference="",
                     permitted_purposes=None, prohibited_uses=(), commercial_use_allowed=False,
                     request=None) -> Agreement:
    """A draft agreement between ``organisation`` and ``datasets`` (validated input)."""
    if valid_until is not None and valid_until < valid_from:
        raise Invalid(fields={"valid_until": ["valid_until must not be before valid_from"]})
    if not datasets:
        raise Invalid(fields={"datasets": ["an agreement covers at least one dataset"]})
    agreement = Agreement.objects.create(
        organisation=organisation, title=title, reference=reference,
        permitted_purposes=permitted_purposes if permitted_purposes is not None else [],
        prohibited_uses=list(dict.fromkeys(prohibited_uses)), commercial_use_allowed=commercial_use_allowed,
        valid_from=valid_from, valid_until=valid_until, created_by=actor)
    agreement.datasets.set(datasets)
    audit_record(actor=actor, action=AuditAction.AGREEMENT_CREATED, target=agreement, data=_agreement_data(agreement),
           request=request)
    return agreement


@transaction.atomic
def agreement_activate(*, agreement, actor, now=None, request=None) -> Agreement:
    agreement = Agreement.objects.select_for_update().get(pk=agreement.pk)
    now = now or timezone.now()
    if agreement.status != Agreement.Status.DRAFT:
        raise WrongState(f"the agreement is {agreement.effective_status()}, not draft", status=agreement.effective_status())
    if agreement.valid_until is not None and agreement.valid_until < timezone.localdate(now):
        raise WrongState(f"the agreement expired on {agreement.valid_until}; it cannot be activated",
                         status=Agreement.EXPIRED)
    agreement.status, agreement.activated_by, agreement.activated_at = Agreement.Status.ACTIVE, actor, now
    agreement.save(update_fields=["status", "activated_by", "activated_at"])
    audit_record(actor=actor, action=AuditAction.AGREEMENT_ACTIVATED, target=agreement,
           data={"organisation": agreement.organisation_id}, request=request)
    return agreement


@transaction.atomic
def agreement_revoke(*, agreement, actor, reason: str = "", now=None, request=None) -> Agreement:
    """``active → revoked`` (a draft may be revoked too, i.e. abandoned). Takes effect at once:
    the access decision only counts active agreements."""
    agreement = Agreement.objects.select_for_update().get(pk=agreement.pk)
    if agreement.status == Agreement.Status.REVOKED:
        raise WrongState("the agreement is already revoked", status=agreement.status)
    previous = agreement.status
    agreement.status, agreement.revoked_by, agreement.revoked_at = Agreement.Status.REVOKED, actor, now or timezone.now()
    agreement.revoke_reason = reason
    agreement.save(update_fields=["status", "revoked_by", "revoked_at", "revoke_reason"])
    audit_record(actor=actor, action=AuditAction.AGREEMENT_REVOKED, target=agreement,
           data={"organisation": agreement.organisation_id, "previous_status": previous, "comment": reason},
           request=request)
    return agreement


# --- Per-object project permissions (django-guardian) -------------------------------------

def _held(project, user) -> set[str]:
    from projects.models import ProjectUserObjectPermission

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
