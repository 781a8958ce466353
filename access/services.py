"""Writes for organisations and people. Every write audits itself in the same transaction."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from audit.services import audit_record
from tre.errors import Invalid
from tre.roles import ROLE_ALIASES

from .models import Organisation, Sector, UserProfile


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
    audit_record(actor=actor, action="organisation.created", target=org, data={"name": org.name, "sector": org.sector})
    return org, True


@transaction.atomic
def user_upsert(*, username: str, password: str | None, roles=(), organisation: str | None = None,
                sector: str = Sector.ACADEMIC, actor=None):
    """Create or update a user: password, role groups, organisation. Idempotent."""
    unknown = [r for r in roles if r not in ROLE_ALIASES]
    if unknown:
        raise Invalid(fields={"role": [f"unknown role {r!r}; one of dac, output_checker, custodian, auditor" for r in unknown]})
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    if created:
        audit_record(actor=actor, action="user.created", target=("user", user.pk), data={"username": username})
    for role in roles:
        group, _ = Group.objects.get_or_create(name=ROLE_ALIASES[role].value)
        if not user.groups.filter(pk=group.pk).exists():
            user.groups.add(group)
            audit_record(actor=actor, action="role.granted", target=("user", user.pk), data={"username": username, "role": group.name})
    profile, _ = UserProfile.objects.get_or_create(user=user)
    if organisation:
        org, _ = organisation_get_or_create(name=organisation, sector=sector, actor=actor)
        if profile.organisation_id != org.pk:
            if profile.organisation_id is not None:
                raise Invalid(fields={"organisation": [f"{username} already belongs to {profile.organisation.name}; a user belongs to one organisation"]})
            profile.organisation = org
            profile.save(update_fields=["organisation"])
            audit_record(actor=actor, action="user.organisation_set", target=("user", user.pk), data={"username": username, "organisation": org.pk})
    return user, created
