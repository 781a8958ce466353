"""The access decision: may ``user`` read ``datasets`` within ``project`` today?

One function, used before a query is accepted and again when the worker starts it (DESIGN §2).
The rules run in this order and the first that fails names the refusal:

| rule                         | passes when                                                           |
|------------------------------|-----------------------------------------------------------------------|
| ``not_member``               | the user is a member (lead or member) of the project                   |
| ``project_not_approved``     | the project's stored status is ``approved`` (not draft, submitted,     |
|                              | returned, rejected, suspended or closed)                              |
| ``project_not_started``      | today ≥ ``start_date``                                                 |
| ``project_ended``            | today ≤ ``end_date`` (an approved project past it reads as ``expired``) |
| ``dataset_not_approved``     | every dataset is among the project's approved datasets                 |
| ``no_active_agreement``      | for every dataset an ``active`` agreement between the project's        |
|                              | organisation and the dataset is in date today                         |
| ``commercial_use_not_allowed`` | a commercial project: every such agreement allows commercial use     |
| ``prohibited_use``           | no purpose category of the project is among such an agreement's       |
|                              | prohibited uses                                                       |

"Such an agreement" is every agreement in force for the organisation and the dataset: where more
than one covers a dataset, the most restrictive wins.

``access`` sits below ``projects`` in the layers (DESIGN §1): the decision reads the project it is
given (its ``status``, dates, ``memberships`` and ``datasets``) and never imports the projects app.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from tre.errors import Forbidden

from .models import Agreement

APPROVED = "approved"  # the one project status that may use data

RULES = (
    "not_member",
    "project_not_approved",
    "project_not_started",
    "project_ended",
    "dataset_not_approved",
    "no_active_agreement",
    "commercial_use_not_allowed",
    "prohibited_use",
)

# The rules that judge one dataset's agreements (shared with the projects' ``agreement_gaps``).
AGREEMENT_RULES = ("no_active_agreement", "commercial_use_not_allowed", "prohibited_use")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str | None = None
    message: str = "access allowed"
    dataset: str | None = None  # the dataset a dataset rule refused, by name

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def _deny(rule: str, message: str, dataset: str | None = None) -> Decision:
    return Decision(False, rule, message, dataset)


def agreement_problem(rule: str, *, project, dataset_name: str, agreements) -> str | None:
    """The message if ``rule`` (one of AGREEMENT_RULES) fails for a dataset whose in-force
    agreements with the project's organisation are ``agreements``; ``None`` if it passes."""
    if rule == "no_active_agreement":
        if project.organisation_id is None:
            return (f"the project has no organisation, so no agreement can cover dataset '{dataset_name}'")
        if not agreements:
            return (f"no active, in-date data-access agreement between the project's organisation and "
                    f"dataset '{dataset_name}'")
        return None
    if rule == "commercial_use_not_allowed":
        if project.commercial:
            refusing = [a for a in agreements if not a.commercial_use_allowed]
            if refusing:
                return (f"the project is commercial but agreement '{refusing[0].reference or refusing[0].title}' "
                        f"for dataset '{dataset_name}' does not allow commercial use")
        return None
    if rule == "prohibited_use":
        purposes = set(project.purpose_categories or [])
        for a in agreements:
            clash = sorted(purposes & set(a.prohibited_uses or []))
            if clash:
                return (f"agreement '{a.reference or a.title}' for dataset '{dataset_name}' prohibits "
                        f"{', '.join(clash)}")
        return None
    raise ValueError(f"not an agreement rule: {rule}")


def agreements_in_force(*, organisation_id, dataset_ids, today) -> dict[int, list]:
    """``{dataset_id: [agreements in force]}`` for one organisation, in one query."""

    found: dict[int, list] = defaultdict(list)
    if organisation_id is None or not dataset_ids:
        return found
    through = Agreement.datasets.through
    rows = (through.objects.filter(dataset_id__in=list(dataset_ids), agreement__organisation_id=organisation_id,
                                   agreement__in=Agreement.objects.in_force(today))
            .select_related("agreement").order_by("agreement_id"))
    for row in rows:
        found[row.dataset_id].append(row.agreement)
    return found


def _requested(datasets, approved: dict) -> list[tuple[str, object]]:
    """``[(label, approved Dataset or None)]`` for Dataset instances, names or ids."""
    by_name = {d.name.lower(): d for d in approved.values()}
    out = []
    for item in datasets:
        if isinstance(item, str):
            out.append((item, by_name.get(item.strip().lower())))
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append((str(item), approved.get(item)))
        else:  # a Dataset instance
            out.append((item.name, approved.get(item.pk)))
    return out


def check_access(*, user, project, datasets, today=None) -> Decision:
    """Decide whether ``user`` may read ``datasets`` (Dataset instances, names or ids) in ``project``.

    ``project`` is used as given: pass a freshly loaded instance. Costs at most three queries.
    """
    today = today or timezone.localdate()
    if (not getattr(user, "is_authenticated", False)
            or not project.memberships.filter(user_id=user.pk).exists()):
        return _deny("not_member", "you are not a member of this project")
    if project.status != APPROVED:
        return _deny("project_not_approved",
                     f"the project is {project.effective_status(today)}; only an approved project may use data")
    if project.start_date is None or today < project.start_date:
        return _deny("project_not_started", f"the project starts on {project.start_date}")
    if project.end_date is None or today > project.end_date:
        return _deny("project_ended", f"the project ended on {project.end_date} (expired)")

    requested = _requested(list(datasets), {d.pk: d for d in project.datasets.all()})
    for label, dataset in requested:
        if dataset is None:
            return _deny("dataset_not_approved", f"dataset '{label}' is not among the project's approved datasets",
                         label)
    approved: list[Any] = [d for _, d in requested]
    in_force = agreements_in_force(organisation_id=project.organisation_id,
                                   dataset_ids={d.pk for d in approved}, today=today)
    for rule in AGREEMENT_RULES:
        for dataset in approved:
            message = agreement_problem(rule, project=project, dataset_name=dataset.name,
                                        agreements=in_force.get(dataset.pk, []))
            if message:
                return _deny(rule, message, dataset.name)
    return ALLOWED


def require_access(*, user, project, datasets, today=None) -> Decision:
    """:func:`check_access`, raising ``tre.errors.Forbidden(message, rule=rule)`` (403) on refusal."""
    decision = check_access(user=user, project=project, datasets=datasets, today=today)
    if not decision.allowed:
        raise Forbidden(decision.message, rule=decision.rule)
    return decision
