"""The projects HTTP contract: shapes, validation (400), states (409), visibility and query counts."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from projects.models import Project
from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory
from tests.projects.conftest import held

pytestmark = pytest.mark.django_db

API = "/api/v1"
TODAY = timezone.localdate()


@pytest.fixture
def org():
    return OrganisationFactory(name="Alpha University")


@pytest.fixture
def lead(org):
    return UserFactory(username="lena", organisation=org)


def body(**over):
    return {"title": "Asthma and air quality", "lay_summary": "Does air pollution make asthma worse?",
            "purpose": "Estimate admissions by pollution level", "purpose_categories": ["health_research"],
            "public_benefit": "Better clean-air policy", "legal_basis": "GDPR 6(1)(e), 9(2)(j)", "commercial": False,
            "datasets": [DatasetFactory(name="episodes").pk], "start_date": "2026-01-01", "end_date": "2026-12-31",
            "ethics_reference": "REC 24/AB/0001", **over}


def test_create_answers_the_whole_project(lead, org, client_for):
    response = client_for(lead).post(f"{API}/projects/", body(), format="json")
    assert response.status_code == 201, response.content
    got = response.json()
    assert got["status"] == "draft" and got["organisation"] == org.pk and got["organisation_name"] == "Alpha University"
    assert got["lead"] == "lena" and got["members"] == [{"username": "lena", "role": "lead"}]
    for field, value in body().items():
        if field != "datasets":
            assert got[field] == value, field
    assert got["datasets"] == [Project.objects.get().datasets.get().pk] and got["dataset_names"] == ["episodes"]
    assert got["agreement_gaps"] == [{"dataset": got["datasets"][0], "dataset_name": "episodes",
                                      "reason": "no_active_agreement"}]
    assert got["approved_at"] is None and got["id"] and got["created_at"]


def test_create_minimal_and_without_organisation(client_for):
    response = client_for(UserFactory()).post(f"{API}/projects/", {"title": "Just a title"}, format="json")
    assert response.status_code == 201
    got = response.json()
    assert got["organisation"] is None and got["organisation_name"] is None and got["datasets"] == []


@pytest.mark.parametrize("bad, field", [
    ({"start_date": "2026-05-01", "end_date": "2026-04-30"}, "end_date"),
    ({"datasets": [999999]}, "datasets"),
    ({"datasets": ["x"]}, "datasets"),
    ({"datasets": [2**70]}, "datasets"),
    ({"purpose_categories": ["espionage"]}, "purpose_categories"),
    ({"purpose_categories": "health_research"}, "purpose_categories"),
    ({"commercial": "perhaps"}, "commercial"),
    ({"start_date": "yesterday"}, "start_date"),
    ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": "nul\x00byte"}, "title"),
])
def test_create_refuses_bad_input_naming_the_field(lead, client_for, bad, field):
    response = client_for(lead).post(f"{API}/projects/", body(**bad), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Project.objects.exists() and not AuditEvent.objects.filter(action="project.created").exists()


def test_create_needs_login(anon):
    assert anon.post(f"{API}/projects/", body(), format="json").status_code == 401


def test_patch(lead, client_for):
    project = ProjectFactory(lead=lead)
    client = client_for(lead)
    response = client.patch(f"{API}/projects/{project.pk}/", {"title": "Renamed", "commercial": True}, format="json")
    assert response.status_code == 200 and response.json()["title"] == "Renamed" and response.json()["commercial"]
    response = client.patch(f"{API}/projects/{project.pk}/", {"end_date": str(project.start_date - dt.timedelta(days=1))},
                            format="json")
    assert response.status_code == 400 and "end_date" in response.json()
    client.post(f"{API}/projects/{project.pk}/submit/")
    response = client.patch(f"{API}/projects/{project.pk}/", {"title": "Too late"}, format="json")
    assert response.status_code == 409 and response.json()["status"] == "submitted"
    assert Project.objects.get(pk=project.pk).title == "Renamed"


def test_members_endpoints(lead, client_for):
    project = ProjectFactory(lead=lead)
    newcomer = UserFactory(username="nia")
    client = client_for(lead)
    response = client.post(f"{API}/projects/{project.pk}/members/", {"username": "nia"}, format="json")
    assert response.status_code == 201
    assert {"username": "nia", "role": "member"} in response.json()["members"]
    assert held(newcomer, project) == {"view_project"}
    assert client.post(f"{API}/projects/{project.pk}/members/", {"username": "nia"}, format="json").status_code == 409
    unknown = client.post(f"{API}/projects/{project.pk}/members/", {"username": "ghost"}, format="json")
    assert unknown.status_code == 400 and "username" in unknown.json()
    assert client.post(f"{API}/projects/{project.pk}/members/", {}, format="json").status_code == 400
    assert client.delete(f"{API}/projects/{project.pk}/members/lena/").status_code == 409
    assert client.delete(f"{API}/projects/{project.pk}/members/ghost/").status_code == 404
    response = client.delete(f"{API}/projects/{project.pk}/members/nia/")
    assert response.status_code == 200 and [m["username"] for m in response.json()["members"]] == ["lena"]
    assert client_for(newcomer).get(f"{API}/projects/{project.pk}/").status_code == 404


def test_a_member_may_leave(lead, client_for):
    member = UserFactory(username="milo")
    project = ProjectFactory(lead=lead, members=[member])
    assert client_for(member).delete(f"{API}/projects/{project.pk}/members/milo/").status_code == 204
    assert held(member, project) == set()


def test_submit_states_and_completeness(lead, client_for):
    client = client_for(lead)
    project = ProjectFactory(lead=lead)
    response = client.post(f"{API}/projects/{project.pk}/submit/")
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert client.post(f"{API}/projects/{project.pk}/submit/").status_code == 409
    bare = client.post(f"{API}/projects/", {"title": "Bare"}, format="json").json()
    response = client.post(f"{API}/projects/{bare['id']}/submit/")
    assert response.status_code == 400 and {"lay_summary", "datasets", "start_date"} <= set(response.json())


def test_the_review_flow_over_http(lead, org, client_for, settings):
    member = UserFactory(username="milo")
    dataset = DatasetFactory()
    AgreementFactory(organisation=org, datasets=[dataset])  # no agreement gap (tests/projects/test_dac.py)
    project = ProjectFactory(lead=lead, members=[member], datasets=[dataset], status="submitted")
    d1 = UserFactory(role="dac", organisation="DAC One")
    d2 = UserFactory(role="dac", organisation="DAC Two")
    url = f"{API}/projects/{project.pk}/reviews/"
    assert client_for(d1).post(url, {"decision": "approve"}, format="json").status_code == 400
    assert client_for(d1).post(url, {"decision": "approve", "comment": "  "}, format="json").status_code == 400
    assert client_for(d1).post(url, {"decision": "sure", "comment": "ok"}, format="json").status_code == 400
    first = client_for(d1).post(url, {"decision": "approve", "comment": "sound design"}, format="json")
    assert first.status_code == 200 and first.json()["status"] == "submitted"
    again = client_for(d1).post(url, {"decision": "approve", "comment": "again"}, format="json")
    assert again.status_code == 409
    second = client_for(d2).post(url, {"decision": "approve", "comment": "agreed"}, format="json")
    assert second.status_code == 200 and second.json()["status"] == "approved" and second.json()["approved_at"]
    assert held(member, project) == {"view_project", "run_query", "view_output"}
    late = client_for(UserFactory(role="dac")).post(url, {"decision": "reject", "comment": "late"}, format="json")
    assert late.status_code == 409
    # reviews: DAC members see who voted; the project's members see the decisions and comments only
    as_dac = client_for(d1).get(url).json()
    assert as_dac["count"] == 2
    assert [(r["reviewer"], r["decision"], r["comment"], r["round"], r["current"]) for r in as_dac["results"]] == [
        (d1.username, "approve", "sound design", 1, True), (d2.username, "approve", "agreed", 1, True)]
    as_lead = client_for(lead).get(url).json()
    assert [r["reviewer"] for r in as_lead["results"]] == [None, None]
    assert [r["comment"] for r in as_lead["results"]] == ["sound design", "agreed"]


def test_conflicted_dac_member_gets_403_naming_the_rule(lead, org, client_for):
    project = ProjectFactory(lead=lead, status="submitted")
    colleague = UserFactory(role="dac", organisation=org)
    response = client_for(colleague).post(f"{API}/projects/{project.pk}/reviews/",
                                          {"decision": "approve", "comment": "ok"}, format="json")
    assert response.status_code == 403 and response.json()["rule"] == "dac_same_organisation"
    insider = UserFactory(role="dac", organisation="Elsewhere")
    client_for(lead).post(f"{API}/projects/{project.pk}/members/", {"username": insider.username}, format="json")
    response = client_for(insider).post(f"{API}/projects/{project.pk}/reviews/",
                                        {"decision": "approve", "comment": "ok"}, format="json")
    assert response.status_code == 403 and response.json()["rule"] == "dac_project_member"
    assert "belong" in response.json()["detail"]


def test_return_then_resubmit(lead, client_for):
    project = ProjectFactory(lead=lead, status="submitted")
    dac = UserFactory(role="dac", organisation="DAC")
    response = client_for(dac).post(f"{API}/projects/{project.pk}/reviews/",
                                    {"decision": "return", "comment": "say more about consent"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "returned"
    assert response.json()["review_round"] == 2
    client = client_for(lead)
    assert client.patch(f"{API}/projects/{project.pk}/", {"purpose": "clearer"}, format="json").status_code == 200
    assert client.post(f"{API}/projects/{project.pk}/submit/").json()["status"] == "submitted"
    reviews = client.get(f"{API}/projects/{project.pk}/reviews/").json()["results"]
    assert [(r["round"], r["current"]) for r in reviews] == [(1, False)]
    # the same DAC member may vote again in the new round
    again = client_for(dac).post(f"{API}/projects/{project.pk}/reviews/",
                                 {"decision": "reject", "comment": "still no consent"}, format="json")
    assert again.json()["status"] == "rejected"


def test_suspend_reinstate_close_over_http(lead, client_for):
    project = ProjectFactory(lead=lead, status="approved")
    dac = client_for(UserFactory(role="dac", organisation="DAC"))
    url = f"{API}/projects/{project.pk}"
    assert dac.post(f"{url}/reinstate/").status_code == 409
    assert dac.post(f"{url}/suspend/", {"reason": "audit finding"}, format="json").json()["status"] == "suspended"
    assert dac.post(f"{url}/suspend/").status_code == 409
    assert dac.post(f"{url}/reinstate/", {"reason": "resolved"}, format="json").json()["status"] == "approved"
    closed = client_for(lead).post(f"{url}/close/", {"reason": "done"}, format="json")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    for action in ("suspend", "reinstate", "close"):
        assert dac.post(f"{url}/{action}/").status_code == 409
    assert client_for(lead).post(f"{url}/close/").status_code == 409
    draft = ProjectFactory(lead=lead)
    assert client_for(lead).post(f"{API}/projects/{draft.pk}/close/").status_code == 409


def test_expired_reads_as_expired(lead, client_for):
    project = ProjectFactory(lead=lead, status="approved")
    Project.objects.filter(pk=project.pk).update(end_date=TODAY - dt.timedelta(days=1))
    assert client_for(lead).get(f"{API}/projects/{project.pk}/").json()["status"] == "expired"
    assert client_for(lead).get(f"{API}/me/").json()["projects"][0]["status"] == "expired"


def test_agreement_gaps(lead, org, client_for):
    covered, uncovered, commercial_only = (DatasetFactory(name=n) for n in ("covered", "uncovered", "restricted"))
    AgreementFactory(organisation=org, datasets=[covered, commercial_only], commercial_use_allowed=False)
    AgreementFactory(organisation=OrganisationFactory(), datasets=[uncovered])  # someone else's
    response = client_for(lead).post(f"{API}/projects/", body(datasets=[covered.pk, uncovered.pk]), format="json")
    assert response.json()["agreement_gaps"] == [
        {"dataset": uncovered.pk, "dataset_name": "uncovered", "reason": "no_active_agreement"}]
    # a gap does not stop submission, and the DAC sees it
    pk = response.json()["id"]
    assert client_for(lead).post(f"{API}/projects/{pk}/submit/").status_code == 200
    seen = client_for(UserFactory(role="dac")).get(f"{API}/projects/{pk}/").json()
    assert [g["dataset_name"] for g in seen["agreement_gaps"]] == ["uncovered"]
    commercial = client_for(lead).post(f"{API}/projects/", body(datasets=[commercial_only.pk], commercial=True),
                                       format="json").json()
    assert commercial["agreement_gaps"][0]["reason"] == "commercial_use_not_allowed"


def test_lists_show_only_visible_projects(lead, client_for):
    mine = ProjectFactory(lead=lead)
    other_lead = UserFactory()
    hidden_draft = ProjectFactory(lead=other_lead)
    submitted = ProjectFactory(lead=other_lead, status="submitted")
    rejected = ProjectFactory(lead=other_lead, status="rejected")

    def ids(user):
        return {p["id"] for p in client_for(user).get(f"{API}/projects/").json()["results"]}

    assert ids(lead) == {mine.pk}
    assert ids(other_lead) == {hidden_draft.pk, submitted.pk, rejected.pk}
    assert ids(UserFactory(role="dac")) == {submitted.pk, rejected.pk}
    assert ids(UserFactory(role="custodian")) == set()
    assert ids(UserFactory(role="auditor")) == set()


def test_me_lists_my_projects_with_roles(lead, client_for):
    led = ProjectFactory(lead=lead, title="Led")
    joined = ProjectFactory(lead=UserFactory(), members=[lead], status="approved", title="Joined")
    ProjectFactory(lead=UserFactory(), title="Not mine")
    projects = client_for(lead).get(f"{API}/me/").json()["projects"]
    assert sorted(projects, key=lambda p: p["id"]) == [
        {"id": led.pk, "title": "Led", "status": "draft", "role": "lead"},
        {"id": joined.pk, "title": "Joined", "status": "approved", "role": "member"}]


def _many_projects(lead, n):
    datasets = [DatasetFactory(), DatasetFactory()]
    AgreementFactory(organisation=lead.profile.organisation, datasets=datasets[:1])
    for _ in range(n):
        ProjectFactory(lead=lead, members=[UserFactory()], datasets=datasets)


@pytest.mark.parametrize("n", [5, 50])
def test_project_list_costs_the_same_for_5_or_50(lead, client_for, django_assert_max_num_queries, n):
    _many_projects(lead, n)
    client = client_for(lead)
    with django_assert_max_num_queries(8):
        response = client.get(f"{API}/projects/?page_size=100")
    assert response.json()["count"] == n and len(response.json()["results"]) == n


@pytest.mark.parametrize("n", [5, 50])
def test_dac_project_list_costs_the_same_for_5_or_50(lead, client_for, django_assert_max_num_queries, n):
    _many_projects(lead, n)
    Project.objects.update(status="submitted", submitted_at=timezone.now())
    client = client_for(UserFactory(role="dac"))
    with django_assert_max_num_queries(8):
        response = client.get(f"{API}/projects/?page_size=100")
    assert response.json()["count"] == n


@pytest.mark.parametrize("n", [5, 50])
def test_me_costs_the_same_for_5_or_50(lead, client_for, django_assert_max_num_queries, n):
    _many_projects(lead, n)
    with django_assert_max_num_queries(4):
        assert len(client_for(lead).get(f"{API}/me/").json()["projects"]) == n


def test_invisible_and_unknown_projects_are_404(lead, client_for):
    project = ProjectFactory(lead=lead)
    stranger = client_for(UserFactory())
    for path in ("", "reviews/"):
        assert stranger.get(f"{API}/projects/{project.pk}/{path}").status_code == 404
    assert client_for(lead).get(f"{API}/projects/{project.pk + 1000}/").status_code == 404
    assert client_for(lead).get(f"{API}/projects/99999999999999999999/").status_code == 404


def test_schema_declares_the_answers(client_for, anon):
    import yaml

    schema = yaml.safe_load(anon.get("/api/schema/").content)
    paths = schema["paths"]
    review = paths["/api/v1/projects/{id}/reviews/"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(review)
    assert {"201", "400", "401"} <= set(paths["/api/v1/projects/"]["post"]["responses"])
    assert {"200", "401", "403", "404", "409"} <= set(paths["/api/v1/agreements/{id}/activate/"]["post"]["responses"])
    register = paths["/api/v1/register/"]["get"]
    assert {p["name"] for p in register["parameters"]} >= {"organisation", "dataset", "commercial", "page"}
    assert register["security"] == [{}]  # public: no authentication required


JUNK = [[], [1, 2], "text", 7, None, {"title": {"nested": True}}, {"datasets": {"1": 2}}, {"decision": ["approve"]},
        {"comment": 5, "decision": 5}, {"username": ["x"]}, {"start_date": "2026-02-30"}, {"organisation": "x"},
        {"datasets": [True]}, {"valid_from": 20260101}, {"name": None, "sector": None}]


def test_junk_input_never_causes_a_500(lead, client_for):
    """Every write endpoint, as the user entitled to it, fed malformed bodies: 4xx, never 5xx."""
    from tests.factories import AgreementFactory as AF

    project = ProjectFactory(lead=lead, members=[UserFactory(username="mona")])
    submitted = ProjectFactory(lead=UserFactory(), status="submitted")
    dac = client_for(UserFactory(role="dac"))
    custodian = client_for(UserFactory(role="custodian"))
    agreement = AF(status="draft")
    calls = [
        (client_for(lead), "post", f"{API}/projects/"),
        (client_for(lead), "patch", f"{API}/projects/{project.pk}/"),
        (client_for(lead), "post", f"{API}/projects/{project.pk}/members/"),
        (dac, "post", f"{API}/projects/{submitted.pk}/reviews/"),
        (dac, "post", f"{API}/projects/{submitted.pk}/suspend/"),
        (custodian, "post", f"{API}/organisations/"),
        (custodian, "post", f"{API}/agreements/"),
        (custodian, "post", f"{API}/agreements/{agreement.pk}/revoke/"),
    ]
    for client, method, url in calls:
        for junk in JUNK:
            response = getattr(client, method)(url, junk, format="json")
            assert response.status_code < 500, (url, junk, response.status_code)
        response = getattr(client, method)(url, "{not json", content_type="application/json")
        assert response.status_code == 400, url
    assert Project.objects.get(pk=project.pk).title == project.title
