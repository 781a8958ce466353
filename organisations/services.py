"""Writes for organisations and people. Every write audits itself in the same transaction."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from audit.actions import AuditAction
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
                sector: str = Sector.ACADEMIC, actor=None, staff: bool | None = None, email: str | None = None):
    """Create or update a user: password, e-mail (where notifications go), role groups,
    organisation, (optionally) the staff flag that lets a custodian or DAC member read the admin.
    Idempotent."""
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
    if email is not None:
        email = email.strip()
        if email:
            try:
                validate_email(email)
            except ValidationError:
                raise Invalid(fields={"email": [f"not an e-mail address: {email!r}"]}) from None
        if user.email != email:
            user.email = email
            user.save(update_fields=["email"])
            audit_record(actor=actor, action=AuditAction.USER_EMAIL_SET, target=("user", user.pk),
                         data={"username": username})
    if staff is not None and user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
        audit_record(actor=actor, action=AuditAction.USER_STAFF_SET, target=("user", user.pk), data={"username": username, "staff": staff})
    profile, _ = UserProfile.objects.get_or_create(user=user)
    if organisation:
        org, _ = organisation_get_or_create(name=organisation, sector=sector, actor=actor)
        if profile.organisation_id != org.pk:
            if profile.organisation is not None:
                raise Invalid(fields={"organisation": [f"{username} already belongs to {profile.organisation.name}; a user belongs to one organisation"]})
            profile.organisation = org
            profile.save(update_fields=["organisation"])
            audit_record(actor=actor, action=AuditAction.USER_ORGANISATION_SET, target=("user", user.pk), data={"username": username, "organisation": org.pk})
    return user, created


# --- signing in (shared by the API's token login and the web's session login) ---------------

LOGIN_FAILURE_LIMIT = 10  # failed logins per username (and per client address) ...
LOGIN_FAILURE_WINDOW = 15 * 60  # ... within this many seconds, then refused until the window passes


class LoginThrottled(Exception):
    """Too many failed logins for this username or client address."""


def _failure_keys(request, username: str) -> list[str]:
    return [f"login-fail:user:{username.lower()}", f"login-fail:ip:{request.META.get('REMOTE_ADDR', '')}"]


def login_check(*, request, username: str, password: str):
    """The user these credentials name, or None (audited either way); ``LoginThrottled`` after
    ``LOGIN_FAILURE_LIMIT`` failures in ``LOGIN_FAILURE_WINDOW`` for the username or the address."""
    keys = _failure_keys(request, username)
    if any((cache.get(k) or 0) >= LOGIN_FAILURE_LIMIT for k in keys):
        raise LoginThrottled(username)
    user = authenticate(request, username=username, password=password)
    if user is None:
        for k in keys:
            cache.add(k, 0, LOGIN_FAILURE_WINDOW)
            try:
                cache.incr(k)
            except ValueError:
                cache.set(k, 1, LOGIN_FAILURE_WINDOW)
        with transaction.atomic():
            audit_record(actor=None, action=AuditAction.AUTH_LOGIN_FAILED, data={"username": username[:150]}, request=request)
        return None
    return user


def fresh_token(user) -> Token:
    """The user's API token, replaced by a new one once it has expired (``TRE_TOKEN_TTL_HOURS``)."""
    token, created = Token.objects.get_or_create(user=user)
    if not created and token.created < timezone.now() - timedelta(hours=settings.TRE_TOKEN_TTL_HOURS):
        token.delete()
        token = Token.objects.create(user=user)
    return token


@transaction.atomic
def api_token_for(*, user, request=None) -> tuple[Token, object]:
    """The user's API token and when it expires; audits the login."""
    token = fresh_token(user)
    audit_record(actor=user, action=AuditAction.AUTH_LOGIN_SUCCEEDED, target=("user", user.pk), request=request)
    return token, token.created + timedelta(hours=settings.TRE_TOKEN_TTL_HOURS)
