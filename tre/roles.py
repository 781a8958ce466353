"""Roles are Django groups. One place names them and checks them."""

from enum import StrEnum

from .errors import Forbidden


class Role(StrEnum):
    DAC = "dac"
    OUTPUT_CHECKER = "output_checkers"
    CUSTODIAN = "custodians"
    AUDITOR = "auditors"


# The names ``tre_user --role`` accepts, mapped to groups.
ROLE_ALIASES = {
    "dac": Role.DAC,
    "output_checker": Role.OUTPUT_CHECKER,
    "output_checkers": Role.OUTPUT_CHECKER,
    "custodian": Role.CUSTODIAN,
    "custodians": Role.CUSTODIAN,
    "auditor": Role.AUDITOR,
    "auditors": Role.AUDITOR,
}

ROLE_LABELS = {
    Role.DAC: "DAC member",
    Role.OUTPUT_CHECKER: "output checker",
    Role.CUSTODIAN: "data custodian",
    Role.AUDITOR: "auditor",
}


def user_roles(user) -> set[str]:
    """The role groups of ``user`` (cached on the instance for the request)."""
    if not getattr(user, "is_authenticated", False):
        return set()
    cached = getattr(user, "_tre_roles", None)
    if cached is None:
        valid = {r.value for r in Role}
        cached = {name for name in user.groups.values_list("name", flat=True) if name in valid}
        user._tre_roles = cached
    return cached


def has_role(user, role: Role) -> bool:
    return role.value in user_roles(user)


def require_role(user, role: Role) -> None:
    """403 naming the rule unless ``user`` holds ``role``."""
    if not has_role(user, role):
        raise Forbidden(f"only a {ROLE_LABELS[role]} (group '{role.value}') may do this", rule=f"role_{role.value}")
