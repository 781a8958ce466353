"""Reads for agreements, scoped by the reader's role."""

from collections import defaultdict

from django.utils import timezone

from tre.errors import NotFound
from tre.roles import Role, require_role

from .decision import AGREEMENT_RULES, agreement_problem
from .models import Agreement


def agreement_list_for(*, user):
    """Every agreement, for custodians (403 for anyone else). Constant queries for any length."""
    require_role(user, Role.CUSTODIAN)
    return (Agreement.objects.select_related("organisation", "created_by", "activated_by", "revoked_by")
            .prefetch_related("datasets"))


def agreement_get_for(*, user, pk) -> Agreement:
    agreement = agreement_list_for(user=user).filter(pk=pk).first()
    if agreement is None:
        raise NotFound("no such agreement")
    return agreement


def agreement_gaps_for(projects, *, today=None) -> dict[int, list[dict]]:
    """``{project id: [{dataset, dataset_name, reason}]}`` for datasets the project requests that
    its organisation has no usable agreement for today. ``reason`` is the access-decision rule
    that would refuse the dataset (``no_active_agreement``, ``commercial_use_not_allowed`` or
    ``prohibited_use``). The projects' ``datasets`` should be prefetched; costs one query."""
    today = today or timezone.localdate()
    projects = list(projects)
    org_ids = {p.organisation_id for p in projects if p.organisation_id is not None}
    in_force: dict[tuple[int, int], list] = defaultdict(list)
    if org_ids:
        rows = (Agreement.datasets.through.objects
                .filter(agreement__in=Agreement.objects.in_force(today).filter(organisation_id__in=org_ids))
                .select_related("agreement").order_by("agreement_id"))
        for row in rows:
            in_force[(row.agreement.organisation_id, row.dataset_id)].append(row.agreement)
    gaps: dict[int, list[dict]] = {}
    for project in projects:
        found = []
        for dataset in sorted(project.datasets.all(), key=lambda d: d.name):
            agreements = in_force.get((project.organisation_id, dataset.pk), [])
            for rule in AGREEMENT_RULES:
                if agreement_problem(rule, project=project, dataset_name=dataset.name, agreements=agreements):
                    found.append({"dataset": dataset.pk, "dataset_name": dataset.name, "reason": rule})
                    break
        gaps[project.pk] = found
    return gaps
