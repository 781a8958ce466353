"""Who may act on a project, and in which states. Pure rules; they raise the domain errors
(403 naming the rule, 409 naming the state) and change nothing."""

from organisations.models import UserProfile
from tre.errors import Forbidden, WrongState
from tre.roles import Role, has_role, require_role

from .models import Project, ProjectMembership

S = Project.Status

EDITABLE = (S.DRAFT, S.RETURNED)  # PATCH, submit
MEMBERSHIP_OPEN = (S.DRAFT, S.SUBMITTED, S.RETURNED, S.APPROVED, S.SUSPENDED)  # adding members
DAC_PROJECT_MEMBER = "dac_project_member"
DAC_SAME_ORGANISATION = "dac_same_organisation"


def is_member(user, project) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return ProjectMembership.objects.filter(project_id=project.pk, user_id=user.pk).exists()


def is_lead(user, project) -> bool:
    return getattr(user, "is_authenticated", False) and project.lead_id == user.pk


def require_lead(user, project, doing: str) -> None:
    if not is_lead(user, project):
        raise Forbidden(f"only the project's lead may {doing}", rule="lead_only")


def dac_conflict(user, project) -> tuple[str, str] | None:
    """The conflict of interest that bars a DAC member from acting on ``project``, if any."""
    if is_member(user, project):
        return DAC_PROJECT_MEMBER, "a DAC member may not act on a project they belong to"
    org_id = UserProfile.objects.filter(user_id=user.pk).values_list("organisation_id", flat=True).first()
    if org_id is not None and org_id == project.organisation_id:
        return DAC_SAME_ORGANISATION, "a DAC member may not act on a project of their own organisation"
    return None


def dac_eligible(user, project) -> bool:
    """The one eligibility rule for a DAC vote, applied when voting and again when counting:
    an active DAC member with no conflict of interest with ``project``."""
    return bool(user.is_active and has_role(user, Role.DAC) and dac_conflict(user, project) is None)


def require_eligible_dac(user, project) -> None:
    """403 unless ``user`` is in the ``dac`` group and has no conflict with ``project``."""
    require_role(user, Role.DAC)
    conflict = dac_conflict(user, project)
    if conflict:
        raise Forbidden(conflict[1], rule=conflict[0])


def require_lead_or_eligible_dac(user, project, doing: str) -> None:
    if is_lead(user, project):
        return
    if not has_role(user, Role.DAC):
        raise Forbidden(f"only the project's lead or a DAC member may {doing}", rule="lead_or_dac")
    require_eligible_dac(user, project)


def wrong_state(project, allowed, doing: str) -> WrongState:
    status = project.effective_status()
    return WrongState(f"the project is {status}; it can {doing} only when {' or '.join(allowed)}", status=status)


def require_status(project, allowed, doing: str) -> None:
    """409 unless the project's *effective* status (expired counts) is one of ``allowed``."""
    if project.effective_status() not in allowed:
        raise wrong_state(project, allowed, doing)
