"""Organisations and data-access agreements: services, HTTP contract, audit, query counts."""

import datetime as dt

import pytest
from django.utils import timezone

from access import services
from access.models import Agreement
from audit.models import AuditEvent
from organisations import services as organisation_services
from organisations.models import Organisation
from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, UserFactory
from tre.errors import Invalid, WrongState

pytestmark = pytest.mark.django_db

API = "/api/v1"
TODAY = timezone.localdate()


@pytest.fixture
def custodian():
    return UserFactory(username="cora", role="custodian")


def agreement_body(org, ds, **over):
    return {"organisation": org.pk, "datasets": [d.pk for d in ds], "title": "Episodes for Alpha",
            "reference": "DSA-2026-001", "permitted_purposes": ["health research", "service evaluation"],
            "prohibited_uses": ["marketing", "insurance"], "commercial_use_allowed": False,
            "valid_from": "2026-01-01", "valid_until": "2027-12-31", **over}


# --- organisations ------------------------------------------------------------------------------

def test_create_and_list_organisations(custodian, client_for):
    response = client_for(custodian).post(f"{API}/organisations/", {"name": "North Trust", "sector": "nhs"},
                                          format="json")
    assert response.status_code == 201
    assert response.json()["name"] == "North Trust" and response.json()["sector"] == "nhs"
    event = AuditEvent.objects.get(action="organisation.created")
    assert event.actor == "cora" and event.data == {"name": "North Trust", "sector": "nhs"}
    reader = client_for(UserFactory())
    listed = reader.get(f"{API}/organisations/").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == response.json()["id"]
    assert reader.get(f"{API}/organisations/{response.json()['id']}/").json()["name"] == "North Trust"
    assert reader.get(f"{API}/organisations/{response.json()['id'] + 1}/").status_code == 404


@pytest.mark.parametrize("bad, field", [
    ({"name": "North Trust", "sector": "pirates"}, "sector"),
    ({"name": "", "sector": "nhs"}, "name"),
    ({"sector": "nhs"}, "name"),
    ({"name": "north trust", "sector": "nhs"}, "name"),  # taken, in any case
])
def test_organisation_bad_input(custodian, client_for, bad, field):
    OrganisationFactory(name="North Trust")
    response = client_for(custodian).post(f"{API}/organisations/", bad, format="json")
    assert response.status_code == 400 and field in response.json()
    assert Organisation.objects.count() == 1


def test_organisation_get_or_create_still_works():
    org, created = organisation_services.organisation_get_or_create(name="Gamma", sector="charity")
    again, created_again = organisation_services.organisation_get_or_create(name="gamma")
    assert created and not created_again and again == org


def test_tre_user_staff_flag():
    from django.core.management import call_command

    call_command("tre_user", "adam", "--password", "long-enough-pw", "--role", "dac", "--staff")
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="adam").is_staff
    call_command("tre_user", "adam")  # re-running without --staff leaves the flag alone
    assert get_user_model().objects.get(username="adam").is_staff


# --- agreements: services --------------------------------------------------------------------------

def test_agreement_lifecycle(custodian):
    org, ds = OrganisationFactory(), DatasetFactory()
    agreement = services.agreement_create(actor=custodian, organisation=org, datasets=[ds], title="A",
                                          valid_from=TODAY, valid_until=TODAY + dt.timedelta(days=10),
                                          prohibited_uses=["marketing"])
    assert agreement.status == "draft" and agreement.effective_status() == "draft"
    services.agreement_activate(agreement=agreement, actor=custodian)
    agreement.refresh_from_db()
    assert agreement.status == "active" and agreement.activated_by == custodian and agreement.activated_at
    with pytest.raises(WrongState):
        services.agreement_activate(agreement=agreement, actor=custodian)
    services.agreement_revoke(agreement=agreement, actor=custodian, reason="breach")
    agreement.refresh_from_db()
    assert agreement.status == "revoked" and agreement.revoke_reason == "breach"
    with pytest.raises(WrongState):
        services.agreement_revoke(agreement=agreement, actor=custodian)
    assert list(AuditEvent.objects.values_list("action", flat=True)) == [
        "agreement.created", "agreement.activated", "agreement.revoked"]
    revoked = AuditEvent.objects.get(action="agreement.revoked")
    assert revoked.data["reason"] == "breach" and revoked.data["previous_status"] == "active"


def test_a_draft_may_be_revoked_but_not_an_expired_draft_activated(custodian):
    draft = AgreementFactory(status="draft")
    services.agreement_revoke(agreement=draft, actor=custodian, reason="abandoned")
    assert Agreement.objects.get(pk=draft.pk).status == "revoked"
    stale = AgreementFactory(status="draft", valid_from=TODAY - dt.timedelta(days=30),
                             valid_until=TODAY - dt.timedelta(days=1))
    assert stale.effective_status() == "expired"
    with pytest.raises(WrongState):
        services.agreement_activate(agreement=stale, actor=custodian)


def test_agreement_create_rolls_back_when_the_audit_fails(custodian, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr("access.services.audit_record", boom)
    with pytest.raises(RuntimeError):
        services.agreement_create(actor=custodian, organisation=OrganisationFactory(), datasets=[DatasetFactory()],
                                  title="A", valid_from=TODAY)
    assert not Agreement.objects.exists()


def test_agreement_activate_rolls_back_when_the_audit_fails(custodian, monkeypatch):
    agreement = AgreementFactory(status="draft")
    monkeypatch.setattr("audit.transitions.audit_record", lambda **kw: (_ for _ in ()).throw(RuntimeError("down")))
    with pytest.raises(RuntimeError):
        services.agreement_activate(agreement=agreement, actor=custodian)
    assert Agreement.objects.get(pk=agreement.pk).status == "draft"


def test_agreement_service_validates_dates(custodian):
    with pytest.raises(Invalid) as info:
        services.agreement_create(actor=custodian, organisation=OrganisationFactory(), datasets=[DatasetFactory()],
                                  title="A", valid_from=TODAY, valid_until=TODAY - dt.timedelta(days=1))
    assert "valid_until" in info.value.fields


# --- agreements: HTTP ----------------------------------------------------------------------------

def test_agreement_http_lifecycle(custodian, client_for):
    org, ds = OrganisationFactory(name="Alpha"), DatasetFactory(name="episodes")
    client = client_for(custodian)
    response = client.post(f"{API}/agreements/", agreement_body(org, [ds]), format="json")
    assert response.status_code == 201, response.content
    got = response.json()
    assert got["status"] == "draft" and got["organisation"] == org.pk and got["organisation_name"] == "Alpha"
    assert got["datasets"] == [ds.pk] and got["dataset_names"] == ["episodes"]
    assert got["prohibited_uses"] == ["marketing", "insurance"] and got["commercial_use_allowed"] is False
    assert got["permitted_purposes"] == ["health research", "service evaluation"]
    assert got["valid_from"] == "2026-01-01" and got["valid_until"] == "2027-12-31" and got["created_by"] == "cora"
    pk = got["id"]
    assert client.get(f"{API}/agreements/{pk}/").json() == got
    active = client.post(f"{API}/agreements/{pk}/activate/")
    assert active.status_code == 200 and active.json()["status"] == "active"
    assert client.post(f"{API}/agreements/{pk}/activate/").status_code == 409
    revoked = client.post(f"{API}/agreements/{pk}/revoke/", {"reason": "ended early"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert revoked.json()["revoke_reason"] == "ended early"
    assert client.post(f"{API}/agreements/{pk}/revoke/").status_code == 409
    assert client.get(f"{API}/agreements/{pk + 1000}/").status_code == 404


def test_free_text_permitted_purposes(custodian, client_for):
    response = client_for(custodian).post(f"{API}/agreements/", agreement_body(
        OrganisationFactory(), [DatasetFactory()], permitted_purposes="research into asthma"), format="json")
    assert response.status_code == 201 and response.json()["permitted_purposes"] == "research into asthma"


@pytest.mark.parametrize("over, field", [
    ({"valid_from": "2026-06-01", "valid_until": "2026-05-31"}, "valid_until"),
    ({"datasets": [999999]}, "datasets"),
    ({"datasets": []}, "datasets"),
    ({"organisation": 999999}, "organisation"),
    ({"prohibited_uses": ["fun"]}, "prohibited_uses"),
    ({"valid_from": None}, "valid_from"),
    ({"title": ""}, "title"),
    ({"permitted_purposes": {"a": 1}}, "permitted_purposes"),
    ({"commercial_use_allowed": "sometimes"}, "commercial_use_allowed"),
])
def test_agreement_bad_input(custodian, client_for, over, field):
    response = client_for(custodian).post(f"{API}/agreements/", agreement_body(OrganisationFactory(), [DatasetFactory()],
                                                                               **over), format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not Agreement.objects.exists() and not AuditEvent.objects.filter(action="agreement.created").exists()


def test_agreement_past_valid_until_reads_expired(custodian, client_for):
    agreement = AgreementFactory(valid_from=TODAY - dt.timedelta(days=30), valid_until=TODAY - dt.timedelta(days=1))
    assert client_for(custodian).get(f"{API}/agreements/{agreement.pk}/").json()["status"] == "expired"


def test_agreement_list_filters(custodian, client_for):
    a, b = OrganisationFactory(), OrganisationFactory()
    ds = DatasetFactory()
    mine = AgreementFactory(organisation=a, datasets=[ds])
    AgreementFactory(organisation=b)
    client = client_for(custodian)
    assert [x["id"] for x in client.get(f"{API}/agreements/?organisation={a.pk}").json()["results"]] == [mine.pk]
    assert [x["id"] for x in client.get(f"{API}/agreements/?dataset={ds.pk}").json()["results"]] == [mine.pk]
    assert client.get(f"{API}/agreements/?dataset=abc").json()["count"] == 0


@pytest.mark.parametrize("n", [5, 50])
def test_agreement_list_costs_the_same_for_5_or_50(custodian, client_for, django_assert_max_num_queries, n):
    datasets = [DatasetFactory(), DatasetFactory()]
    for _ in range(n):
        AgreementFactory(datasets=datasets, created_by=custodian)
    client = client_for(custodian)
    with django_assert_max_num_queries(4):
        body = client.get(f"{API}/agreements/?page_size=100").json()
    assert body["count"] == n and len(body["results"]) == n


def test_admin_is_read_only_for_custodians_and_dac(client):
    from django.contrib import admin

    from access.admin import AgreementAdmin
    from projects.admin import ProjectAdmin
    from projects.models import Project

    class Req:
        def __init__(self, user):
            self.user = user

    for role, may in (("custodian", True), ("dac", True), ("auditor", False), (None, False)):
        req = Req(UserFactory(role=role, is_staff=True))
        for model_admin in (AgreementAdmin(Agreement, admin.site), ProjectAdmin(Project, admin.site)):
            assert model_admin.has_view_permission(req) is may
            assert model_admin.has_module_permission(req) is may
            assert not model_admin.has_add_permission(req)
            assert not model_admin.has_change_permission(req)
            assert not model_admin.has_delete_permission(req)
    staff_custodian = UserFactory(role="custodian", is_staff=True)
    AgreementFactory()
    client.force_login(staff_custodian)
    assert client.get("/admin/access/agreement/").status_code == 200
    assert client.get("/admin/projects/project/").status_code == 200
    assert client.get("/admin/access/agreement/add/").status_code == 403
