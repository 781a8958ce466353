import pytest


def held(user, project) -> set[str]:
    """The guardian permissions ``user`` holds directly on ``project``."""
    from projects.models import ProjectUserObjectPermission

    return set(ProjectUserObjectPermission.objects.filter(user=user, content_object=project)
               .values_list("permission__codename", flat=True))


def actions(project=None, *, since=0) -> list[str]:
    """The audit actions recorded (for ``project``), in order."""
    from audit.models import AuditEvent

    qs = AuditEvent.objects.filter(seq__gt=since)
    if project is not None:
        qs = qs.filter(project=project.pk)
    return list(qs.order_by("seq").values_list("action", flat=True))


def last_seq() -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


@pytest.fixture
def dac(db):
    """``dac()`` → a DAC member of an organisation of their own (eligible for any project)."""
    from tests.factories import OrganisationFactory, UserFactory

    return lambda **kw: UserFactory(role="dac", organisation=kw.pop("organisation", None) or OrganisationFactory(), **kw)
