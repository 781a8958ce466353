"""Who may act on an output, and in which states. Pure rules over models: they raise the domain
errors (403 naming the rule, 409 naming the state) and change nothing.

- A *member* is a member of the output's project (lead or member).
- A *checker* is in the ``output_checkers`` group. A checker never checks, nor sees as a checker,
  an output of a project they belong to (they see it as a member).
"""

from projects.policies import is_member
from tre.errors import Forbidden, WrongState
from tre.roles import Role, has_role, require_role

CHECKER_PROJECT_MEMBER = "checker_project_member"
MEMBER_ONLY = "project_member_only"
VIEW_OUTPUT = "view_output"


def may_view_output(user, project) -> bool:
    """guardian ``view_output`` on the project: members of an approved, running project hold it;
    suspension, closure and expiry take it away."""
    return getattr(user, "is_authenticated", False) and user.has_perm("projects.view_output", project)


def sees_checker_view(user, output, *, member: bool | None = None) -> bool:
    """``user`` sees ``output`` as a checker: raw values, flags, votes."""
    if not has_role(user, Role.OUTPUT_CHECKER):
        return False
    if member is None:
        member = is_member(user, output.project)
    return not member


def require_member(user, output, doing: str) -> None:
    """403 unless ``user`` belongs to the output's project and still holds ``view_output`` on it."""
    if not is_member(user, output.project):
        raise Forbidden(f"only a member of the output's project may {doing}", rule=MEMBER_ONLY)
    if not may_view_output(user, output.project):
        raise Forbidden(f"you may not {doing}: the project is not approved and running "
                        "(its members have no view_output permission)", rule=VIEW_OUTPUT)


def checker_eligible(user, output) -> bool:
    """The one eligibility rule for a checker's vote, applied when voting and again when counting:
    an active output checker who does not belong to the output's project."""
    return bool(user.is_active and has_role(user, Role.OUTPUT_CHECKER) and not is_member(user, output.project))


def require_eligible_checker(user, output) -> None:
    """403 unless ``user`` is an output checker who does not belong to the output's project."""
    require_role(user, Role.OUTPUT_CHECKER)
    if is_member(user, output.project):
        raise Forbidden("an output checker may not check an output of a project they belong to",
                        rule=CHECKER_PROJECT_MEMBER)


def require_status(output, allowed, doing: str) -> None:
    if output.status not in allowed:
        raise WrongState(f"the output is {output.status}; it can {doing} only when {' or '.join(allowed)}",
                         status=output.status)
