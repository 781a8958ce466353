"""Reads for organisations and people."""

from tre.errors import NotFound

from .models import Organisation, UserProfile


def organisation_list():
    return Organisation.objects.all()


def organisation_get(*, pk) -> Organisation:
    org = Organisation.objects.filter(pk=pk).first()
    if org is None:
        raise NotFound("no such organisation")
    return org


def organisation_of(user) -> Organisation | None:
    """The user's organisation (a user belongs to at most one), or None."""
    profile = UserProfile.objects.select_related("organisation").filter(user_id=user.pk).first()
    return profile.organisation if profile else None
