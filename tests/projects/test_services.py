"""Project services: each transition, its audit rows, its guardian grants, and rollback."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from projects import services
from projects.models import Project, ProjectMembership, ProjectReview
from tests.factories import DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory
from tests.projects.conftest import actions, held, last_seq
from tre.errors import Forbidden, Invalid, NotFound, WrongState

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()
ALL = {"view_project", "run_query", "view_output"}


def _data(**over):
    return {"title": "Asthma and air quality", "lay_summary": "Does air pollution make asthma worse?",
            "purpose": "Estimate admissions by pollution level", "purpose_categories": ["health_research"],
            "public_benefit": "Better clean-air policy", "legal_basis": "GDPR 6(1)(e)", "commercial": False,
            "datasets": [DatasetFactory().pk], "start_date": TODAY, "end_date": TODAY + dt.timedelta(days=90),
            "ethics_reference": "REC 1", **over}


@pytest.fixture(autouse=True)
def _no_agreement_gaps(monkeypatch):
    """These tests are about votes and transitions; the rule that an approve vote needs every
    requested dataset covered by an agreement is tested with real agreements in test_dac.py."""
    monkeypatch.setattr(services, "approval_gaps", lambda project: [])


@pytest.fixture
def org():
    return OrganisationFactory(name="Alpha University")


@pytest.fixture
def lead(org):
    return UserFactory(username="lena", organisation=org)


@pytest.fixture
def member(org):
    return UserFactory(username="milo", organisation=org)


# --- create / update ------------------------------------------------------------------------

def test_create_makes_a_draft_led_by_the_creator(lead, org):
    project = services.project_create(actor=lead, data=_data())
    assert project.status == "draft" and project.lead == lead and project.organisation == org
    assert list(project.memberships.values_list("user__username", "role")) == [("lena", "lead")]
    assert held(lead, project) == {"view_project"}
    assert lead.has_perm("projects.view_project", project) and not lead.has_perm("projects.run_query", project)
    assert actions(project) == ["project.created", "permission.granted"]
    event = AuditEvent.objects.get(action="project.created")
    assert event.actor == "lena" and event.target_type == "project" and event.data["lead"] == "lena"


def test_create_without_an_organisation():
    project = services.project_create(actor=UserFactory(), data=_data())
    assert project.organisation is None


def test_create_refuses_dates_in_the_wrong_order_and_writes_nothing(lead):
    with pytest.raises(Invalid) as info:
        services.project_create(actor=lead, data=_data(start_date=TODAY, end_date=TODAY - dt.timedelta(days=1)))
    assert "end_date" in info.value.fields
    assert not Project.objects.exists() and not AuditEvent.objects.exists()


def test_create_refuses_unknown_datasets(lead):
    with pytest.raises(Invalid) as info:
        services.project_create(actor=lead, data=_data(datasets=[987654]))
    assert "987654" in info.value.fields["datasets"][0]
    assert not Project.objects.exists()


def test_update_by_the_lead_in_draft_and_returned(lead, dac):
    project = ProjectFactory(lead=lead)
    ds = DatasetFactory()
    services.project_update(project=project, actor=lead, data={"title": "New title", "datasets": [ds.pk]})
    project.refresh_from_db()
    assert project.title == "New title" and list(project.datasets.all()) == [ds]
    event = AuditEvent.objects.filter(action="project.updated").get()
    assert event.data == {"fields": ["title", "datasets"]}
    # an update that changes nothing records nothing
    services.project_update(project=project, actor=lead, data={"title": "New title"})
    assert AuditEvent.objects.filter(action="project.updated").count() == 1
    returned = ProjectFactory(lead=lead, status="returned")
    services.project_update(project=returned, actor=lead, data={"purpose": "clearer"})
    assert Project.objects.get(pk=returned.pk).purpose == "clearer"


def test_update_refuses_others_wrong_states_and_bad_dates(lead, member):
    project = ProjectFactory(lead=lead, members=[member])
    with pytest.raises(Forbidden) as info:
        services.project_update(project=project, actor=member, data={"title": "x"})
    assert info.value.extra["rule"] == "lead_only"
    with pytest.raises(Invalid) as info:
        services.project_update(project=project, actor=lead, data={"end_date": project.start_date - dt.timedelta(days=1)})
    assert "end_date" in info.value.fields
    for status in ("submitted", "approved", "rejected"):
        other = ProjectFactory(lead=lead, status=status)
        with pytest.raises(WrongState):
            services.project_update(project=other, actor=lead, data={"title": "x"})
        assert Project.objects.get(pk=other.pk).title != "x"


# --- membership -------------------------------------------------------------------------------

def test_add_member_to_a_draft_gives_view_only(lead, member):
    project = ProjectFactory(lead=lead)
    since = last_seq()
    services.project_member_add(project=project, actor=lead, username="milo")
    assert ProjectMembership.objects.get(project=project, user=member).role == "member"
    assert held(member, project) == {"view_project"}
    assert actions(project, since=since) == ["project.member_added", "permission.granted"]
    grant = AuditEvent.objects.get(seq__gt=since, action="permission.granted")
    assert grant.data == {"username": "milo", "permissions": ["view_project"], "reason": "project.member_added"}


def test_add_member_to_an_approved_project_gives_all_three(lead, member):
    project = ProjectFactory(lead=lead, status="approved")
    services.project_member_add(project=project, actor=lead, username="milo")
    assert held(member, project) == ALL


def test_add_member_refusals(lead, member):
    project = ProjectFactory(lead=lead, members=[member])
    with pytest.raises(WrongState):
        services.project_member_add(project=project, actor=lead, username="milo")
    with pytest.raises(Invalid) as info:
        services.project_member_add(project=project, actor=lead, username="nobody")
    assert "username" in info.value.fields
    with pytest.raises(Forbidden):
        services.project_member_add(project=project, actor=member, username=UserFactory().username)
    for status in ("rejected", "closed"):
        with pytest.raises(WrongState):
            services.project_member_add(project=ProjectFactory(lead=lead, status=status), actor=lead,
                                        username=UserFactory().username)


def test_remove_member_revokes_everything(lead, member):
    project = ProjectFactory(lead=lead, members=[member], status="approved")
    assert held(member, project) == ALL
    since = last_seq()
    services.project_member_remove(project=project, actor=lead, username="milo")
    assert held(member, project) == set()
    assert not ProjectMembership.objects.filter(project=project, user=member).exists()
    assert actions(project, since=since) == ["project.member_removed", "permission.revoked"]
    revoke = AuditEvent.objects.get(seq__gt=since, action="permission.revoked")
    assert sorted(revoke.data["permissions"]) == sorted(ALL)


def test_remove_refusals_and_leaving(lead, member):
    other = UserFactory()
    project = ProjectFactory(lead=lead, members=[member, other])
    with pytest.raises(WrongState):
        services.project_member_remove(project=project, actor=lead, username="lena")
    with pytest.raises(Forbidden):
        services.project_member_remove(project=project, actor=member, username=other.username)
    with pytest.raises(NotFound):
        services.project_member_remove(project=project, actor=lead, username="nobody")
    services.project_member_remove(project=project, actor=member, username="milo")  # leaving
    assert held(member, project) == set() and project.memberships.count() == 2


# --- submit and review --------------------------------------------------------------------------

def test_submit(lead):
    project = ProjectFactory(lead=lead)
    since = last_seq()
    services.project_submit(project=project, actor=lead)
    project.refresh_from_db()
    assert project.status == "submitted" and project.submitted_at
    assert actions(project, since=since) == ["project.submitted"]
    with pytest.raises(WrongState):
        services.project_submit(project=project, actor=lead)


def test_submit_needs_a_complete_project(lead):
    project = services.project_create(actor=lead, data={"title": "Only a title"})
    with pytest.raises(Invalid) as info:
        services.project_submit(project=project, actor=lead)
    assert {"lay_summary", "purpose", "public_benefit", "start_date", "end_date", "datasets"} <= set(info.value.fields)
    assert Project.objects.get(pk=project.pk).status == "draft"


def test_two_approvals_approve_and_grant(lead, member, dac):
    project = ProjectFactory(lead=lead, members=[member], status="submitted")
    first, second = dac(), dac()
    since = last_seq()
    services.project_review(project=project, actor=first, decision="approve", comment="good")
    assert Project.objects.get(pk=project.pk).status == "submitted"
    assert held(member, project) == {"view_project"}
    services.project_review(project=project, actor=second, decision="approve", comment="agreed")
    project.refresh_from_db()
    assert project.status == "approved" and project.approved_at
    assert held(member, project) == ALL and held(lead, project) == ALL
    assert actions(project, since=since) == ["project.reviewed", "project.reviewed", "project.approved",
                                             "permission.granted", "permission.granted"]
    reviewed = AuditEvent.objects.filter(seq__gt=since, action="project.reviewed").first()
    assert reviewed.data["decision"] == "approve" and reviewed.data["comment"] == "good" and reviewed.data["round"] == 1
    approved = AuditEvent.objects.get(seq__gt=since, action="project.approved")
    assert approved.actor == second.username
    assert approved.data["approvals"] == sorted([first.username, second.username])
    assert approved.data["comment"] == "agreed"


def test_approvals_needed_come_from_settings(lead, dac, settings):
    settings.TRE_DAC_APPROVALS = 1
    project = ProjectFactory(lead=lead, status="submitted")
    services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    assert Project.objects.get(pk=project.pk).status == "approved"


def test_any_reject_rejects(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    since = last_seq()
    services.project_review(project=project, actor=dac(), decision="reject", comment="no legal basis")
    project.refresh_from_db()
    assert project.status == "rejected" and project.rejected_at and project.approved_at is None
    assert actions(project, since=since) == ["project.reviewed", "project.rejected"]
    assert AuditEvent.objects.get(action="project.rejected").data == {"comment": "no legal basis", "round": 1}
    with pytest.raises(WrongState):
        services.project_review(project=project, actor=dac(), decision="approve", comment="too late")


def test_return_clears_the_round_but_keeps_history(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    d1, d2, d3 = dac(), dac(), dac()
    services.project_review(project=project, actor=d1, decision="approve", comment="ok")
    services.project_review(project=project, actor=d2, decision="return", comment="clarify the purpose")
    project.refresh_from_db()
    assert project.status == "returned" and project.review_round == 2
    assert AuditEvent.objects.get(action="project.returned").data == {"comment": "clarify the purpose", "round": 1}
    services.project_update(project=project, actor=lead, data={"purpose": "clearer"})
    services.project_submit(project=project, actor=lead)
    # d1's round-1 approval no longer counts: d3's approval in round 2 is the only one
    services.project_review(project=project, actor=d3, decision="approve", comment="ok")
    assert Project.objects.get(pk=project.pk).status == "submitted"
    # d1 may vote again in the new round, and that makes two
    services.project_review(project=project, actor=d1, decision="approve", comment="still ok")
    assert Project.objects.get(pk=project.pk).status == "approved"
    assert list(ProjectReview.objects.filter(project=project).values_list("reviewer__username", "round")) == [
        (d1.username, 1), (d2.username, 1), (d3.username, 2), (d1.username, 2)]


def test_a_second_vote_in_a_round_is_refused_and_changes_nothing(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    voter = dac()
    services.project_review(project=project, actor=voter, decision="approve", comment="ok")
    since = last_seq()
    with pytest.raises(WrongState):
        services.project_review(project=project, actor=voter, decision="approve", comment="again")
    with pytest.raises(WrongState):
        services.project_review(project=project, actor=voter, decision="reject", comment="changed my mind")
    assert ProjectReview.objects.filter(project=project).count() == 1
    assert Project.objects.get(pk=project.pk).status == "submitted" and last_seq() == since


def test_dac_conflicts_and_roles(org, lead, member, dac):
    project = ProjectFactory(lead=lead, members=[member], status="submitted")
    cases = [
        (UserFactory(), "role_dac"),  # not in the DAC
        (dac(organisation=org), "dac_same_organisation"),
    ]
    insider = dac()
    services.project_member_add(project=project, actor=lead, username=insider.username)
    cases.append((insider, "dac_project_member"))
    for voter, rule in cases:
        with pytest.raises(Forbidden) as info:
            services.project_review(project=project, actor=voter, decision="approve", comment="ok")
        assert info.value.extra["rule"] == rule and info.value.detail
    assert not ProjectReview.objects.exists()


def test_review_needs_a_comment_and_a_known_decision(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    voter = dac()
    with pytest.raises(Invalid):
        services.project_review(project=project, actor=voter, decision="approve", comment="   ")
    with pytest.raises(Invalid):
        services.project_review(project=project, actor=voter, decision="maybe", comment="hm")
    assert not ProjectReview.objects.exists()


def test_review_only_while_submitted(lead, dac):
    for status in ("returned", "approved", "suspended", "closed"):
        project = ProjectFactory(lead=lead, status=status)
        with pytest.raises(WrongState):
            services.project_review(project=project, actor=dac(), decision="approve", comment="ok")


def test_a_voter_who_joined_the_project_no_longer_counts(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    turncoat = dac()
    services.project_review(project=project, actor=turncoat, decision="approve", comment="ok")
    services.project_member_add(project=project, actor=lead, username=turncoat.username)
    services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    assert Project.objects.get(pk=project.pk).status == "submitted"


# --- suspend, reinstate, close ------------------------------------------------------------------

def test_suspend_and_reinstate_move_the_research_permissions(lead, member, dac):
    project = ProjectFactory(lead=lead, members=[member], status="approved")
    judge = dac()
    since = last_seq()
    services.project_suspend(project=project, actor=judge, reason="breach reported")
    project.refresh_from_db()
    assert project.status == "suspended"
    assert held(member, project) == {"view_project"} and held(lead, project) == {"view_project"}
    assert actions(project, since=since) == ["project.suspended", "permission.revoked", "permission.revoked"]
    assert AuditEvent.objects.get(action="project.suspended").data == {"reason": "breach reported"}
    with pytest.raises(WrongState):
        services.project_suspend(project=project, actor=judge)
    since = last_seq()
    services.project_reinstate(project=project, actor=judge, reason="resolved")
    assert Project.objects.get(pk=project.pk).status == "approved" and held(member, project) == ALL
    assert actions(project, since=since) == ["project.reinstated", "permission.granted", "permission.granted"]
    with pytest.raises(WrongState):
        services.project_reinstate(project=project, actor=judge)


def test_suspend_needs_an_eligible_dac_member(org, lead, member, dac):
    project = ProjectFactory(lead=lead, members=[member], status="approved")
    for actor in (lead, member, dac(organisation=org)):
        with pytest.raises(Forbidden):
            services.project_suspend(project=project, actor=actor)
    assert Project.objects.get(pk=project.pk).status == "approved"


def test_close_by_lead_or_dac(lead, member, dac):
    approved = ProjectFactory(lead=lead, members=[member], status="approved")
    with pytest.raises(Forbidden) as info:
        services.project_close(project=approved, actor=member)
    assert info.value.extra["rule"] == "lead_or_dac"
    services.project_close(project=approved, actor=lead, reason="finished")
    approved.refresh_from_db()
    assert approved.status == "closed" and approved.closed_at and held(member, approved) == {"view_project"}
    assert AuditEvent.objects.get(action="project.closed", project=approved.pk).data["reason"] == "finished"
    suspended = ProjectFactory(lead=lead, status="suspended")
    services.project_close(project=suspended, actor=dac(), reason="ethics lapsed")
    assert Project.objects.get(pk=suspended.pk).status == "closed"
    for status in ("draft", "submitted", "returned", "rejected", "closed"):
        with pytest.raises(WrongState):
            services.project_close(project=ProjectFactory(lead=lead, status=status), actor=lead)


def test_expired_reads_as_expired_and_cannot_be_reinstated_or_suspended(lead, dac):
    project = ProjectFactory(lead=lead, status="suspended")
    Project.objects.filter(pk=project.pk).update(end_date=TODAY - dt.timedelta(days=1))
    project.refresh_from_db()
    assert project.status == "suspended" and project.effective_status() == "expired"
    with pytest.raises(WrongState):
        services.project_reinstate(project=project, actor=dac())
    approved = ProjectFactory(lead=lead, status="approved")
    Project.objects.filter(pk=approved.pk).update(end_date=TODAY - dt.timedelta(days=1))
    with pytest.raises(WrongState):
        services.project_suspend(project=approved, actor=dac())
    services.project_close(project=approved, actor=lead, reason="ended")  # an expired project may still be closed
    assert Project.objects.get(pk=approved.pk).effective_status() == "closed"


def test_approved_after_its_end_date_expires_at_once(lead, member, dac, settings):
    settings.TRE_DAC_APPROVALS = 1
    project = ProjectFactory(lead=lead, members=[member], status="submitted")
    Project.objects.filter(pk=project.pk).update(start_date=TODAY - dt.timedelta(days=10),
                                                 end_date=TODAY - dt.timedelta(days=1))
    services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    project.refresh_from_db()
    assert project.effective_status() == "expired" and project.expired_at
    assert held(member, project) == {"view_project"}
    assert "project.expired" in actions(project)


# --- rollback ----------------------------------------------------------------------------------

class Boom(Exception):
    pass


def _boom(*args, **kwargs):
    raise Boom("audit log unavailable")


def test_create_rolls_back_when_the_audit_fails(lead, monkeypatch):
    monkeypatch.setattr("projects.services.audit_record", _boom)
    monkeypatch.setattr("projects.grants.audit_record", _boom)
    monkeypatch.setattr("audit.transitions.audit_record", _boom)
    with pytest.raises(Boom):
        services.project_create(actor=lead, data=_data())
    assert not Project.objects.exists() and not ProjectMembership.objects.exists()
    assert not AuditEvent.objects.exists()


def test_approval_rolls_back_when_a_grant_fails(lead, member, dac, monkeypatch):
    project = ProjectFactory(lead=lead, members=[member], status="submitted")
    services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    since = last_seq()
    monkeypatch.setattr("projects.grants.assign_perm", _boom)
    with pytest.raises(Boom):
        services.project_review(project=project, actor=dac(), decision="approve", comment="ok")
    project.refresh_from_db()
    assert project.status == "submitted" and project.approved_at is None
    assert ProjectReview.objects.filter(project=project).count() == 1
    assert held(member, project) == {"view_project"} and last_seq() == since


@pytest.mark.parametrize("step", ["member_add", "member_remove", "submit", "suspend", "close"])
def test_each_transition_rolls_back_when_its_audit_event_fails(step, lead, member, dac, monkeypatch):
    status = {"suspend": "approved", "close": "approved"}.get(step, "draft")
    project = ProjectFactory(lead=lead, members=[member] if step == "member_remove" else [], status=status)
    judge = dac()
    before = (Project.objects.filter(pk=project.pk).values().get(), held(member, project),
              list(project.memberships.values_list("user_id", flat=True)), last_seq())
    call = {
        "member_add": lambda: services.project_member_add(project=project, actor=lead, username="milo"),
        "member_remove": lambda: services.project_member_remove(project=project, actor=lead, username="milo"),
        "submit": lambda: services.project_submit(project=project, actor=lead),
        "suspend": lambda: services.project_suspend(project=project, actor=judge, reason="breach"),
        "close": lambda: services.project_close(project=project, actor=lead, reason="done"),
    }[step]
    monkeypatch.setattr("projects.services.audit_record", _boom)
    monkeypatch.setattr("projects.grants.audit_record", _boom)
    monkeypatch.setattr("audit.transitions.audit_record", _boom)
    with pytest.raises(Boom):
        call()
    after = (Project.objects.filter(pk=project.pk).values().get(), held(member, project),
             list(project.memberships.values_list("user_id", flat=True)), last_seq())
    assert after == before


def test_a_comment_the_audit_log_refuses_is_a_400_not_a_500(lead, dac):
    project = ProjectFactory(lead=lead, status="submitted")
    with pytest.raises(Invalid) as info:
        services.project_review(project=project, actor=dac(), decision="reject", comment="call 0123456789")
    assert "comment" in info.value.fields
    assert Project.objects.get(pk=project.pk).status == "submitted" and not ProjectReview.objects.exists()
