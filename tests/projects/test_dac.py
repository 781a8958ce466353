"""What the DAC relies on: the list filters (``?status=``, ``?awaiting_my_vote=true``), no approval
while agreements are missing (409 naming each gap, nothing recorded), and a reason on suspend,
reinstate, close and an agreement's revoke (400 without one)."""

import datetime as dt

import pytest
from django.utils import timezone

from access.models import Agreement
from audit.models import AuditEvent
from projects import services
from projects.models import Project, ProjectReview
from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory
from tests.projects.conftest import last_seq
from tre.errors import Invalid, WrongState

pytestmark = pytest.mark.django_db

API = "/api/v1"
TODAY = timezone.localdate()


@pytest.fixture
def org():
    return OrganisationFactory(name="Alpha University")


@pytest.fixture
def lead(org):
    return UserFactory(username="lena", organisation=org)


@pytest.fixture
def episodes(org):
    dataset = DatasetFactory(name="episodes")
    AgreementFactory(organisation=org, datasets=[dataset])
    return dataset


def _ids(response):
    assert response.status_code == 200, response.content
    return {p["id"] for p in response.json()["results"]}


# --- ?status= and ?awaiting_my_vote=true -------------------------------------------------------

def test_status_filter(lead, client_for):
    made = {s: ProjectFactory(lead=lead, status=s) for s in ("draft", "submitted", "approved", "suspended")}
    expired = ProjectFactory(lead=lead, status="approved")
    Project.objects.filter(pk=expired.pk).update(end_date=TODAY - dt.timedelta(days=1))
    client = client_for(lead)
    assert _ids(client.get(f"{API}/projects/?status=submitted")) == {made["submitted"].pk}
    assert _ids(client.get(f"{API}/projects/?status=approved")) == {made["approved"].pk}  # not the expired one
    assert _ids(client.get(f"{API}/projects/?status=expired")) == {expired.pk}
    assert _ids(client.get(f"{API}/projects/?status=draft,suspended")) == {made["draft"].pk, made["suspended"].pk}
    assert len(_ids(client.get(f"{API}/projects/"))) == 5


def test_an_unknown_status_is_a_400_naming_the_choices(lead, client_for):
    response = client_for(lead).get(f"{API}/projects/?status=pending")
    assert response.status_code == 400
    assert response.json() == {"status": ["unknown status 'pending': one of draft, submitted, returned, approved, "
                                          "rejected, suspended, closed, expired"]}
    bad = client_for(lead).get(f"{API}/projects/?awaiting_my_vote=perhaps")
    assert bad.status_code == 400 and list(bad.json()) == ["awaiting_my_vote"]


def test_the_list_needs_a_login(anon):
    assert anon.get(f"{API}/projects/?awaiting_my_vote=true").status_code == 401


def test_awaiting_my_vote_lists_only_what_I_may_and_have_not_voted_on(org, lead, client_for, settings):
    settings.TRE_DAC_APPROVALS = 3
    me = UserFactory(username="dina", role="dac", organisation="DAC Org")
    mine = OrganisationFactory(name="DAC Org")
    waiting = ProjectFactory(lead=lead, status="submitted")
    voted = ProjectFactory(lead=lead, status="submitted")
    services.project_review(project=voted, actor=me, decision="return", comment="more detail please")
    resubmitted = Project.objects.get(pk=voted.pk)  # a return starts a new round: it awaits me again
    services.project_submit(project=resubmitted, actor=lead)
    already = ProjectFactory(lead=lead, status="submitted")
    ProjectReview.objects.create(project=already, reviewer=me, decision="reject", comment="x", round=1)
    as_member = ProjectFactory(lead=lead, members=[me], status="submitted")  # conflict: a member
    own_org = ProjectFactory(lead=UserFactory(organisation=mine), status="submitted")  # conflict: same organisation
    ProjectFactory(lead=lead, status="draft")
    ProjectFactory(lead=lead, status="approved")
    dac = client_for(me)
    assert _ids(dac.get(f"{API}/projects/?awaiting_my_vote=true")) == {waiting.pk, voted.pk}
    assert _ids(dac.get(f"{API}/projects/?awaiting_my_vote=true&status=approved")) == set()
    everything = _ids(dac.get(f"{API}/projects/?awaiting_my_vote=false"))
    assert {already.pk, as_member.pk, own_org.pk} <= everything
    # anyone who is not in the DAC awaits nothing
    assert _ids(client_for(lead).get(f"{API}/projects/?awaiting_my_vote=true")) == set()


def test_awaiting_my_vote_costs_the_same_for_3_or_30(lead, client_for, django_assert_max_num_queries):
    me = UserFactory(role="dac", organisation="DAC Org")
    for _ in range(30):
        ProjectFactory(lead=lead, status="submitted")
    with django_assert_max_num_queries(12):
        assert len(_ids(client_for(me).get(f"{API}/projects/?awaiting_my_vote=true&page_size=100"))) == 30


# --- no approval while agreements are missing ---------------------------------------------------

def test_an_approve_vote_is_refused_while_agreements_are_missing(org, lead, episodes, client_for):
    deaths = DatasetFactory(name="deaths")
    commercial = DatasetFactory(name="prescriptions")
    AgreementFactory(organisation=org, datasets=[commercial], commercial_use_allowed=False)
    project = ProjectFactory(lead=lead, datasets=[episodes, deaths, commercial], status="submitted", commercial=True)
    dac = client_for(UserFactory(role="dac", organisation="DAC Org"))
    since = last_seq()
    response = dac.post(f"{API}/projects/{project.pk}/reviews/", {"decision": "approve", "comment": "ok"},
                        format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "submitted"
    assert body["agreement_gaps"] == [
        {"dataset": deaths.pk, "dataset_name": "deaths", "reason": "no_active_agreement"},
        {"dataset": episodes.pk, "dataset_name": "episodes", "reason": "commercial_use_not_allowed"},
        {"dataset": commercial.pk, "dataset_name": "prescriptions", "reason": "commercial_use_not_allowed"}]
    for name in ("deaths (no_active_agreement)", "episodes (commercial_use_not_allowed)", "prescriptions"):
        assert name in body["detail"]
    assert not ProjectReview.objects.filter(project=project).exists() and last_seq() == since
    # returning or rejecting is still possible: it is approval that needs the agreements
    back = dac.post(f"{API}/projects/{project.pk}/reviews/", {"decision": "return", "comment": "agreements?"},
                    format="json")
    assert back.status_code == 200 and back.json()["status"] == "returned"


def test_approval_goes_through_once_the_gap_is_closed(org, lead, settings):
    settings.TRE_DAC_APPROVALS = 1
    dataset = DatasetFactory(name="deaths")
    project = ProjectFactory(lead=lead, datasets=[dataset], status="submitted")
    voter = UserFactory(role="dac", organisation="DAC Org")
    with pytest.raises(WrongState) as info:
        services.project_review(project=project, actor=voter, decision="approve", comment="ok")
    assert info.value.extra["agreement_gaps"] == [{"dataset": dataset.pk, "dataset_name": "deaths",
                                                   "reason": "no_active_agreement"}]
    AgreementFactory(organisation=org, datasets=[dataset])
    services.project_review(project=project, actor=voter, decision="approve", comment="ok")
    assert Project.objects.get(pk=project.pk).status == "approved"


def test_a_project_without_an_organisation_cannot_be_approved(settings):
    settings.TRE_DAC_APPROVALS = 1
    dataset = DatasetFactory(name="deaths")
    AgreementFactory(datasets=[dataset])  # someone else's agreement
    project = ProjectFactory(lead=UserFactory(), datasets=[dataset], status="submitted")
    with pytest.raises(WrongState):
        services.project_review(project=project, actor=UserFactory(role="dac"), decision="approve", comment="ok")
    assert Project.objects.get(pk=project.pk).status == "submitted"


# --- a reason on suspend, reinstate, close and revoke ---------------------------------------------

@pytest.mark.parametrize("action, status, who, audited", [
    ("suspend", "approved", "dac", "project.suspended"), ("reinstate", "suspended", "dac", "project.reinstated"),
    ("close", "approved", "lead", "project.closed"), ("close", "suspended", "dac", "project.closed")])
def test_a_reason_is_required(action, status, who, audited, lead, client_for):
    project = ProjectFactory(lead=lead, status=status)
    actor = lead if who == "lead" else UserFactory(role="dac", organisation="DAC Org")
    client = client_for(actor)
    url = f"{API}/projects/{project.pk}/{action}/"
    since = last_seq()
    for body in (None, {}, {"reason": ""}, {"reason": "   "}, {"comment": ""}):
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json() == {"reason": ["a reason is required"]}
    assert Project.objects.get(pk=project.pk).status == status and last_seq() == since
    done = client.post(url, {"reason": "  ethics approval lapsed "}, format="json")
    assert done.status_code == 200 and done.json()["status"] != status
    event = AuditEvent.objects.get(seq__gt=since, action=audited)
    assert event.data["reason"] == "ethics approval lapsed" and event.actor == actor.username


@pytest.mark.parametrize("action, status", [("suspend", "approved"), ("reinstate", "suspended"),
                                            ("close", "approved")])
def test_reason_errors_come_after_401_403_404_409(action, status, lead, client_for, anon):
    project = ProjectFactory(lead=lead, status=status)
    url = f"{API}/projects/{project.pk}/{action}/"
    assert anon.post(url, {}, format="json").status_code == 401
    member = UserFactory()
    services.project_member_add(project=project, actor=lead, username=member.username)
    assert client_for(member).post(url, {}, format="json").status_code == 403
    assert client_for(UserFactory()).post(url, {}, format="json").status_code == 404
    wrong = ProjectFactory(lead=lead, status="submitted")  # visible to the DAC, wrong state for each
    dac = client_for(UserFactory(role="dac", organisation="DAC Org"))
    closer = client_for(lead) if action == "close" else dac
    assert closer.post(f"{API}/projects/{wrong.pk}/{action}/", {}, format="json").status_code == 409


def test_services_refuse_a_blank_reason(lead):
    project = ProjectFactory(lead=lead, status="approved")
    with pytest.raises(Invalid) as info:
        services.project_suspend(project=project, actor=UserFactory(role="dac"), reason=" ")
    assert info.value.fields == {"reason": ["a reason is required"]}


def test_agreement_revoke_needs_a_reason(client_for, anon):
    custodian = client_for(UserFactory(role="custodian"))
    agreement = AgreementFactory(status="active")
    url = f"{API}/agreements/{agreement.pk}/revoke/"
    assert anon.post(url, {"reason": "x"}, format="json").status_code == 401
    assert client_for(UserFactory()).post(url, {"reason": "x"}, format="json").status_code == 403
    assert custodian.post(f"{API}/agreements/999999/revoke/", {"reason": "x"}, format="json").status_code == 404
    for body in (None, {"reason": ""}, {"comment": "  "}):
        response = custodian.post(url, body, format="json")
        assert response.status_code == 400 and response.json() == {"reason": ["a reason is required"]}
    assert Agreement.objects.get(pk=agreement.pk).status == "active"
    done = custodian.post(url, {"reason": "data breach at the applicant"}, format="json")
    assert done.status_code == 200 and done.json()["revoke_reason"] == "data breach at the applicant"
    assert AuditEvent.objects.get(action="agreement.revoked").data["reason"] == "data breach at the applicant"
    assert custodian.post(url, {}, format="json").status_code == 409  # the state is checked first


def test_comment_is_still_accepted_as_the_deprecated_name_of_reason(lead, client_for):
    project = ProjectFactory(lead=lead, status="approved")
    dac = client_for(UserFactory(role="dac", organisation="DAC Org"))
    response = dac.post(f"{API}/projects/{project.pk}/suspend/", {"comment": "older client"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "suspended"
    assert AuditEvent.objects.get(action="project.suspended").data == {"reason": "older client"}
    both = dac.post(f"{API}/projects/{project.pk}/reinstate/", {"reason": "wins", "comment": "ignored"}, format="json")
    assert both.status_code == 200 and AuditEvent.objects.get(action="project.reinstated").data == {"reason": "wins"}
    agreement = AgreementFactory(status="active")
    revoked = client_for(UserFactory(role="custodian")).post(f"{API}/agreements/{agreement.pk}/revoke/",
                                                             {"comment": "older client"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["revoke_reason"] == "older client"
