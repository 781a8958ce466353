"""Every write of a project, its membership and its reviews.

Each service runs in one transaction, locks the project row, checks who may act (403) and in
which state (409), writes, and records its audit event(s) in the same transaction: if anything
fails, nothing changed. guardian grants go through ``access.services`` (audited there).

Permission semantics (docs/governance.md):
- membership gives ``view_project``; leaving the project removes all three permissions;
- approval gives ``run_query`` and ``view_output`` to every member (and to members who join an
  approved project later);
- suspension, closure and expiry remove ``run_query`` and ``view_output`` (members keep
  ``view_project`` so they still see their project and its history); reinstatement restores them.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from access.selectors import agreement_gaps_for
from audit import transitions
from audit.actions import AuditAction
from audit.services import audit_record
from environment.models import Dataset
from notifications.models import Kind
from notifications.services import notify
from organisations.models import UserProfile
from tre import rounds
from tre.errors import Forbidden, Invalid, NotFound, WrongState
from tre.roles import Role

from . import policies
from .grants import PROJECT_PERMISSIONS, RESEARCH_PERMISSIONS, project_permissions_grant, project_permissions_revoke
from .models import TRANSITIONS, Project, ProjectMembership, ProjectReview

S = Project.Status
Vote = ProjectReview.Decision

# The fields a lead writes (besides ``datasets``).
EDITABLE_FIELDS = ("title", "lay_summary", "purpose", "purpose_categories", "public_benefit", "legal_basis",
                   "commercial", "start_date", "end_date", "ethics_reference")
# What a project must say before the DAC sees it.
REQUIRED_TO_SUBMIT = ("title", "lay_summary", "purpose", "public_benefit", "start_date", "end_date")


def _lock(project) -> Project:
    return Project.objects.select_for_update().get(pk=project.pk)


def _check_dates(start_date, end_date) -> None:
    if start_date is not None and end_date is not None and end_date < start_date:
        raise Invalid(fields={"end_date": ["end_date must not be before start_date"]})


def _datasets(ids) -> list[Dataset]:
    ids = list(dict.fromkeys(ids))
    found = list(Dataset.objects.filter(pk__in=ids))
    missing = sorted(set(ids) - {d.pk for d in found})
    if missing:
        raise Invalid(fields={"datasets": [f"unknown dataset id(s): {', '.join(map(str, missing))}"]})
    return found


def _members(project):
    return list(get_user_model().objects.filter(project_memberships__project=project).order_by("pk"))


def _grant_all(project, permissions, *, actor, reason, request=None) -> None:
    for user in _members(project):
        project_permissions_grant(project=project, user=user, permissions=permissions, actor=actor, reason=reason,
                                  request=request)


def _revoke_all(project, permissions, *, actor, reason, request=None) -> None:
    for user in _members(project):
        project_permissions_revoke(project=project, user=user, permissions=permissions, actor=actor, reason=reason,
                                   request=request)


# --- Create and edit ----------------------------------------------------------------------

@transaction.atomic
def project_create(*, actor, data: dict, request=None) -> Project:
    """A draft project led by ``actor``, for ``actor``'s organisation (None if they have none).

    ``data`` holds validated values of EDITABLE_FIELDS and ``datasets`` (ids)."""
    data = dict(data)
    datasets = _datasets(data.pop("datasets", []))
    fields = {k: v for k, v in data.items() if k in EDITABLE_FIELDS}
    _check_dates(fields.get("start_date"), fields.get("end_date"))
    org_id = UserProfile.objects.filter(user_id=actor.pk).values_list("organisation_id", flat=True).first()
    project = Project.objects.create(lead=actor, organisation_id=org_id, **fields)
    project.datasets.set(datasets)
    ProjectMembership.objects.create(project=project, user=actor, role=ProjectMembership.Role.LEAD, added_by=actor)
    audit_record(actor=actor, action=AuditAction.PROJECT_CREATED, target=project, request=request,
           data={"title": project.title, "organisation": org_id, "lead": actor.get_username(),
                 "datasets": sorted(d.pk for d in datasets), "commercial": project.commercial})
    project_permissions_grant(project=project, user=actor, permissions=("view_project",), actor=actor,
                              reason="project.created", request=request)
    return project


@transaction.atomic
def project_update(*, project, actor, data: dict, request=None) -> Project:
    """The lead edits a draft or returned project (``data``: a validated partial update)."""
    project = _lock(project)
    policies.require_lead(actor, project, "edit it")
    policies.require_status(project, policies.EDITABLE, "be edited")
    data = dict(data)
    dataset_ids = data.pop("datasets", None)
    changed = []
    for field, value in data.items():
        if field in EDITABLE_FIELDS and getattr(project, field) != value:
            setattr(project, field, value)
            changed.append(field)
    _check_dates(project.start_date, project.end_date)
    if dataset_ids is not None:
        datasets = _datasets(dataset_ids)
        if {d.pk for d in datasets} != set(project.datasets.values_list("pk", flat=True)):
            project.datasets.set(datasets)
            changed.append("datasets")
    if changed:
        project.save()
        audit_record(actor=actor, action=AuditAction.PROJECT_UPDATED, target=project, request=request, data={"fields": changed})
    return project


# --- Membership ---------------------------------------------------------------------------

@transaction.atomic
def project_member_add(*, project, actor, username: str, request=None) -> ProjectMembership:
    project = _lock(project)
    policies.require_lead(actor, project, "add members")
    policies.require_status(project, policies.MEMBERSHIP_OPEN, "take new members")
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise Invalid(fields={"username": [f"no active user named {username!r}"]})
    if ProjectMembership.objects.filter(project=project, user=user).exists():
        raise WrongState(f"{username} is already a member of this project")
    membership = ProjectMembership.objects.create(project=project, user=user, role=ProjectMembership.Role.MEMBER,
                                                  added_by=actor)
    audit_record(actor=actor, action=AuditAction.PROJECT_MEMBER_ADDED, target=project, request=request,
           data={"username": user.get_username(), "role": membership.role})
    permissions: tuple[str, ...] = ("view_project",)
    if project.effective_status() == S.APPROVED:
        permissions += RESEARCH_PERMISSIONS
    project_permissions_grant(project=project, user=user, permissions=permissions, actor=actor,
                              reason="project.member_added", request=request)
    return membership


@transaction.atomic
def project_member_remove(*, project, actor, username: str, request=None) -> None:
    """The lead removes a member, or a member leaves. The lead cannot be removed (409)."""
    project = _lock(project)
    if not policies.is_lead(actor, project) and actor.get_username() != username:
        raise Forbidden("only the project's lead may remove other members", rule="lead_only")
    membership = (ProjectMembership.objects.select_related("user")
                  .filter(project=project, user__username=username).first())
    if membership is None:
        raise NotFound(f"{username} is not a member of this project")
    if membership.role == ProjectMembership.Role.LEAD:
        raise WrongState("the project's lead cannot be removed from the project")
    user = membership.user
    membership.delete()
    audit_record(actor=actor, action=AuditAction.PROJECT_MEMBER_REMOVED, target=project, request=request,
           data={"username": user.get_username(), "left": actor.pk == user.pk})
    project_permissions_revoke(project=project, user=user, permissions=PROJECT_PERMISSIONS, actor=actor,
                               reason="project.member_removed", request=request)


# --- Submission and review ----------------------------------------------------------------

def _apply(project, action: str, *, actor, fields=None, data=None, request=None) -> Project:
    return transitions.apply(TRANSITIONS, project, action, actor=actor, fields=fields, data=data, request=request,
                             status=project.effective_status())


@transaction.atomic
def project_submit(*, project, actor, now=None, request=None) -> Project:
    project = _lock(project)
    policies.require_lead(actor, project, "submit it")
    transitions.check(TRANSITIONS, project, "submit", status=project.effective_status())
    missing = {f: ["required before the project is submitted"] for f in REQUIRED_TO_SUBMIT
               if getattr(project, f) in (None, "")}
    datasets = list(project.datasets.all())
    if not datasets:
        missing["datasets"] = ["a project must request at least one dataset before it is submitted"]
    if missing:
        raise Invalid(fields=missing)
    gaps = agreement_gaps_for([project])[project.pk]
    _apply(project, "submit", actor=actor, request=request, fields={"submitted_at": now or timezone.now()},
           data={"round": project.review_round,
                 "agreement_gaps": [{"dataset": g["dataset"], "reason": g["reason"]} for g in gaps]})
    notify(users=eligible_dac_members(project), kind=Kind.PROJECT_SUBMITTED, target=project,
           text=f"Project {project.pk} “{project.title}” awaits your DAC vote (round {project.review_round})",
           link=f"/api/v1/projects/{project.pk}/")
    return project


def eligible_dac_members(project):
    """The active DAC members who may vote on ``project`` (policies.dac_eligible, as one query)."""
    qs = (get_user_model().objects.filter(groups__name=Role.DAC.value, is_active=True)
          .exclude(project_memberships__project=project).order_by("pk").distinct())
    if project.organisation_id is not None:
        qs = qs.exclude(profile__organisation_id=project.organisation_id)
    return qs


def approval_gaps(project) -> list[dict]:
    """The agreement gaps that bar an approve vote (DESIGN §2): datasets the project requests with
    no active, in-date agreement for its organisation that allows its use. Empty: it may be approved."""
    return agreement_gaps_for([project])[project.pk]


def _ballots(project) -> list[rounds.Ballot]:
    """The current round's votes, each with its voter's eligibility checked again now (a voter who
    since joined the project or left the DAC does not count)."""
    votes = (ProjectReview.objects.filter(project=project, round=project.review_round)
             .select_related("reviewer").order_by("created_at", "id"))
    return [rounds.Ballot(voter=v.reviewer.get_username(), decision=v.decision,
                          eligible=policies.dac_eligible(v.reviewer, project)) for v in votes]


@transaction.atomic
def project_review(*, project, actor, decision: str, comment: str, now=None, request=None) -> ProjectReview:
    """One DAC vote. ``TRE_DAC_APPROVALS`` approvals in a round approve; any reject rejects; a
    return sends the project back to its lead and starts a new round (tre/rounds.py)."""
    project = _lock(project)
    policies.require_eligible_dac(actor, project)
    comment = (comment or "").strip()
    if decision not in Vote.values:
        raise Invalid(fields={"decision": [f"one of {', '.join(Vote.values)}"]})
    if not comment:
        raise Invalid(fields={"comment": ["a review needs a comment"]})
    if project.status != S.SUBMITTED:
        raise policies.wrong_state(project, [S.SUBMITTED], "be reviewed")
    this_round = project.review_round
    if ProjectReview.objects.filter(project=project, reviewer=actor, round=this_round).exists():
        raise WrongState(f"you have already voted in review round {this_round}", status=project.status)
    if decision == Vote.APPROVE:
        gaps = approval_gaps(project)
        if gaps:
            named = "; ".join(f"{g['dataset_name']} ({g['reason']})" for g in gaps)
            raise WrongState(f"the project cannot be approved while datasets lack a usable agreement: {named}",
                             status=project.status, agreement_gaps=gaps)
    now = now or timezone.now()
    review = ProjectReview.objects.create(project=project, reviewer=actor, decision=decision, comment=comment,
                                          round=this_round)
    audit_record(actor=actor, action=AuditAction.PROJECT_REVIEWED, target=project, request=request,
                 data={"decision": decision, "comment": comment, "round": this_round, "review": review.pk})
    result = rounds.tally(_ballots(project), rule=rounds.Rule.FIRST_OBJECTION, required=settings.TRE_DAC_APPROVALS)
    if result.outcome == rounds.Outcome.REJECTED:
        _apply(project, "reject", actor=actor, request=request, fields={"rejected_at": now},
               data={"comment": comment, "round": this_round})
    elif result.outcome == rounds.Outcome.RETURNED:
        _apply(project, "return", actor=actor, request=request, fields={"review_round": this_round + 1},
               data={"comment": comment, "round": this_round})
    elif result.outcome == rounds.Outcome.APPROVED:
        _apply(project, "approve", actor=actor, request=request, fields={"approved_at": now},
               data={"round": this_round, "approvals": sorted(result.approvers), "comment": comment})
        if project.is_past_end(timezone.localdate(now)):
            _expire(project, now=now)  # approved after its end date: it reads as expired at once
        else:
            _grant_all(project, RESEARCH_PERMISSIONS, actor=actor, reason="project.approved", request=request)
    if result.outcome in _DECIDED:
        kind, verb = _DECIDED[result.outcome]
        notify(users=[project.lead], kind=kind, target=project, link=f"/api/v1/projects/{project.pk}/",
               text=f"Project {project.pk} “{project.title}” was {verb} by the DAC")
    return review


_DECIDED = {
    rounds.Outcome.APPROVED: (Kind.PROJECT_APPROVED, "approved"),
    rounds.Outcome.REJECTED: (Kind.PROJECT_REJECTED, "rejected"),
    rounds.Outcome.RETURNED: (Kind.PROJECT_RETURNED, "returned to you"),
}


# --- Suspend, reinstate, close, expire -----------------------------------------------------

def _require_reason(reason) -> str:
    """Suspend, reinstate, close and revoke each need a non-empty reason (DESIGN §3). Checked
    after the state, so a request that could never succeed answers 409 rather than 400. (The
    services' ``comment`` argument is the deprecated name of ``reason``.)"""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid(fields={"reason": ["a reason is required"]})
    return reason


@transaction.atomic
def project_suspend(*, project, actor, reason: str = "", comment: str = "", now=None, request=None) -> Project:
    project = _lock(project)
    policies.require_eligible_dac(actor, project)
    transitions.check(TRANSITIONS, project, "suspend", status=project.effective_status())
    reason = _require_reason(reason or comment)
    _apply(project, "suspend", actor=actor, request=request, fields={"suspended_at": now or timezone.now()},
           data={"reason": reason})
    _revoke_all(project, RESEARCH_PERMISSIONS, actor=actor, reason="project.suspended", request=request)
    return project


@transaction.atomic
def project_reinstate(*, project, actor, reason: str = "", comment: str = "", request=None) -> Project:
    project = _lock(project)
    policies.require_eligible_dac(actor, project)
    transitions.check(TRANSITIONS, project, "reinstate", status=project.effective_status())  # not when expired
    reason = _require_reason(reason or comment)
    _apply(project, "reinstate", actor=actor, request=request, fields={"suspended_at": None},
           data={"reason": reason})
    _grant_all(project, RESEARCH_PERMISSIONS, actor=actor, reason="project.reinstated", request=request)
    return project


@transaction.atomic
def project_close(*, project, actor, reason: str = "", comment: str = "", now=None, request=None) -> Project:
    """The lead or an eligible DAC member closes an approved, suspended or expired project."""
    project = _lock(project)
    policies.require_lead_or_eligible_dac(actor, project, "close it")
    previous = project.effective_status()
    transitions.check(TRANSITIONS, project, "close", status=previous)
    reason = _require_reason(reason or comment)
    _apply(project, "close", actor=actor, request=request, fields={"closed_at": now or timezone.now()},
           data={"reason": reason, "previous_status": previous})
    _revoke_all(project, RESEARCH_PERMISSIONS, actor=actor, reason="project.closed", request=request)
    return project


def _expire(project, *, now) -> None:
    project.expired_at = now
    project.save(update_fields=["expired_at", "updated_at"])
    audit_record(actor=None, action=AuditAction.PROJECT_EXPIRED, target=project, data={"end_date": project.end_date})
    _revoke_all(project, RESEARCH_PERMISSIONS, actor=None, reason="project.expired")


@transaction.atomic
def project_expire(*, project_id: int, today=None, now=None) -> bool:
    """Revoke the research permissions of one approved/suspended project past its end date and
    record ``project.expired``, once. Returns whether it did anything (idempotent)."""
    project = Project.objects.select_for_update().filter(pk=project_id).first()
    today = today or timezone.localdate()
    if (project is None or project.expired_at is not None or project.status not in (S.APPROVED, S.SUSPENDED)
            or not project.is_past_end(today)):
        return False
    _expire(project, now=now or timezone.now())
    return True


def projects_expire(*, today=None) -> list[int]:
    """Expire every project due (each in its own transaction). Returns the ids expired now."""
    today = today or timezone.localdate()
    due = list(Project.objects.filter(status__in=[S.APPROVED, S.SUSPENDED], end_date__lt=today,
                                      expired_at__isnull=True).order_by("pk").values_list("pk", flat=True))
    return [pk for pk in due if project_expire(project_id=pk, today=today)]
