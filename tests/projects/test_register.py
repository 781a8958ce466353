"""The public register: exactly the right projects, exactly the right fields, filters, paging."""

import datetime as dt

import pytest
from django.utils import timezone

from projects.models import Project
from tests.factories import DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/register/"
FIELDS = {"id", "title", "lay_summary", "organisation", "sector", "purpose", "public_benefit", "legal_basis",
          "commercial", "datasets", "status", "approved_at", "start_date", "end_date", "opt_outs_applied",
          "outputs_released"}


@pytest.fixture
def world():
    nhs = OrganisationFactory(name="North Trust", sector="nhs")
    uni = OrganisationFactory(name="Alpha University", sector="academic")
    episodes, deaths = DatasetFactory(name="episodes"), DatasetFactory(name="deaths")
    lead_nhs, lead_uni = UserFactory(organisation=nhs), UserFactory(organisation=uni)
    projects = {status: ProjectFactory(lead=lead_nhs, status=status, title=f"P {status}", datasets=[episodes])
                for status in ("draft", "submitted", "returned", "rejected", "approved", "suspended", "closed")}
    expired = ProjectFactory(lead=lead_uni, status="approved", title="P expired", datasets=[episodes, deaths],
                             commercial=True)
    Project.objects.filter(pk=expired.pk).update(end_date=timezone.localdate() - dt.timedelta(days=1))
    projects["expired"] = expired
    return projects, nhs, uni, episodes, deaths


def _results(anon, query=""):
    response = anon.get(URL + query)
    assert response.status_code == 200, response.content
    return response.json()


def test_only_public_statuses_and_exact_fields(anon, world):
    projects, nhs, uni, episodes, deaths = world
    body = _results(anon)
    assert set(body) == {"count", "next", "previous", "results"}
    shown = {p["title"]: p for p in body["results"]}
    assert set(shown) == {"P approved", "P suspended", "P closed", "P expired"}
    for entry in body["results"]:
        assert set(entry) == FIELDS
    approved = projects["approved"]
    entry = shown["P approved"]
    assert entry == {
        "id": approved.pk, "title": "P approved", "lay_summary": approved.lay_summary, "organisation": "North Trust",
        "sector": "nhs", "purpose": approved.purpose, "public_benefit": approved.public_benefit,
        "legal_basis": approved.legal_basis, "commercial": False, "datasets": ["episodes"], "status": "approved",
        "approved_at": entry["approved_at"], "start_date": str(approved.start_date),
        "end_date": str(approved.end_date), "opt_outs_applied": True, "outputs_released": 0}
    assert entry["approved_at"]
    assert shown["P expired"]["status"] == "expired" and shown["P expired"]["datasets"] == ["deaths", "episodes"]
    assert shown["P suspended"]["status"] == "suspended" and shown["P closed"]["status"] == "closed"


def test_filters(anon, world):
    projects, nhs, uni, episodes, deaths = world

    def titles(query):
        return {p["title"] for p in _results(anon, query)["results"]}

    assert titles(f"?organisation={uni.pk}") == {"P expired"}
    assert titles("?organisation=north trust") == {"P approved", "P suspended", "P closed"}
    assert titles("?organisation=nobody") == set()
    assert titles(f"?dataset={deaths.pk}") == {"P expired"}
    assert titles("?dataset=episodes") == {"P approved", "P suspended", "P closed", "P expired"}
    assert titles("?commercial=true") == {"P expired"}
    assert titles("?commercial=false") == {"P approved", "P suspended", "P closed"}
    assert titles(f"?organisation={nhs.pk}&commercial=true") == set()
    assert titles("?organisation=99999999999999999999999") == set()
    bad = anon.get(URL + "?commercial=maybe")
    assert bad.status_code == 400 and "commercial" in bad.json()


def test_paginated(anon, world):
    first = _results(anon, "?page_size=3")
    assert first["count"] == 4 and len(first["results"]) == 3 and first["next"]
    assert len(_results(anon, "?page_size=3&page=2")["results"]) == 1


def test_a_bad_token_does_not_hide_the_register(client_for, world):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get(URL).status_code == 200


@pytest.mark.parametrize("n", [5, 50])
def test_register_costs_the_same_for_5_or_50(anon, django_assert_max_num_queries, n):
    lead = UserFactory(organisation=OrganisationFactory())
    datasets = [DatasetFactory(), DatasetFactory()]
    for _ in range(n):
        ProjectFactory(lead=lead, status="submitted", datasets=datasets)
    Project.objects.update(status="approved", approved_at=timezone.now())
    with django_assert_max_num_queries(3):
        body = anon.get(URL + "?page_size=100").json()
    assert body["count"] == n and len(body["results"]) == n


def test_released_outputs_are_counted_and_listed_on_the_detail(anon, world):
    from tests.factories import OutputFactory

    projects, *_ = world
    approved = projects["approved"]
    lead = approved.lead
    released = OutputFactory(project=approved, submitted_by=lead, status="released", title="Admissions by region")
    OutputFactory(project=approved, submitted_by=lead, status="pending", title="Not yet")
    counts = {p["title"]: p["outputs_released"] for p in _results(anon)["results"]}
    assert counts == {"P approved": 1, "P suspended": 0, "P closed": 0, "P expired": 0}
    detail = anon.get(f"{URL}{approved.pk}/")
    assert detail.status_code == 200
    body = detail.json()
    assert set(body) == FIELDS | {"released_outputs"}
    assert body["outputs_released"] == 1 and body["opt_outs_applied"] is True
    released.refresh_from_db()
    assert body["released_outputs"] == [{"id": released.pk, "title": "Admissions by region",
                                         "released_at": body["released_outputs"][0]["released_at"]}]
    assert body["released_outputs"][0]["released_at"].startswith(str(released.released_at.date()))


def test_detail_is_404_for_projects_not_on_the_register(anon, world):
    projects, *_ = world
    for status in ("draft", "submitted", "returned", "rejected"):
        response = anon.get(f"{URL}{projects[status].pk}/")
        assert response.status_code == 404, status
        assert response.json() == {"detail": "no such project on the register"}
    assert anon.get(f"{URL}999999/").status_code == 404
    for status in ("approved", "suspended", "closed", "expired"):
        assert anon.get(f"{URL}{projects[status].pk}/").json()["status"] == status


def test_status_and_search_filters(anon, world):
    projects, nhs, uni, episodes, deaths = world
    Project.objects.filter(pk=projects["approved"].pk).update(lay_summary="Asthma admissions after heatwaves")

    def titles(query):
        return {p["title"] for p in _results(anon, query)["results"]}

    assert titles("?status=approved") == {"P approved"}
    assert titles("?status=expired") == {"P expired"}
    assert titles("?status=suspended,closed") == {"P suspended", "P closed"}
    bad = anon.get(URL + "?status=draft")
    assert bad.status_code == 400
    assert bad.json() == {"status": ["unknown status 'draft': one of approved, suspended, closed, expired"]}
    assert titles("?search=heatwave") == {"P approved"}  # lay summary, any case
    assert titles("?search=p%20SUSPENDED") == {"P suspended"}  # every word, title
    assert titles("?search=alpha") == {"P expired"}  # organisation name
    assert titles("?search=north&status=closed") == {"P closed"}
    assert titles("?search=nothing-like-this") == set()
