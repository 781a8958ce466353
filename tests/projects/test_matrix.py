"""Role × endpoint: who gets 200/201, 401, 403 or 404 on every governance endpoint.

Objects a user may not see answer 404; objects they may see but not act on answer 403. The
project under test belongs to ``lead`` (organisation Alpha) with ``member``; the DAC member, the
checker, the custodian and the auditor belong to Gamma; ``same_org`` is an Alpha researcher who is
not a member and ``other_org`` a Beta researcher.
"""

from types import SimpleNamespace

import pytest

from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory

ROLES = ["anonymous", "lead", "member", "same_org", "other_org", "dac", "checker", "custodian", "auditor"]
API = "/api/v1"


@pytest.fixture
def world(db):
    alpha, beta, gamma = (OrganisationFactory(name=n) for n in ("Alpha", "Beta", "Gamma"))
    users = {
        "anonymous": None,
        "lead": UserFactory(username="lead", organisation=alpha),
        "member": UserFactory(username="member", organisation=alpha),
        "same_org": UserFactory(username="same_org", organisation=alpha),
        "other_org": UserFactory(username="other_org", organisation=beta),
        "dac": UserFactory(username="dac", role="dac", organisation=gamma),
        "checker": UserFactory(username="checker", role="output_checker", organisation=gamma),
        "custodian": UserFactory(username="custodian", role="custodian", organisation=gamma),
        "auditor": UserFactory(username="auditor", role="auditor", organisation=gamma),
    }
    extra = UserFactory(username="mona", organisation=alpha)
    dataset = DatasetFactory(name="episodes")
    AgreementFactory(organisation=alpha, datasets=[dataset])  # no agreement gap: the DAC may approve
    return SimpleNamespace(users=users, alpha=alpha, extra=extra, dataset=dataset)


def target(world, kind):
    if kind in ("draft", "submitted", "approved", "suspended"):
        return ProjectFactory(lead=world.users["lead"], members=[world.users["member"], world.extra],
                              datasets=[world.dataset], status=kind)
    if kind in ("agreement_draft", "agreement_active"):
        return AgreementFactory(organisation=world.alpha, datasets=[world.dataset],
                                status=kind.removeprefix("agreement_"))
    return None


def _agreement_body(world):
    return {"organisation": world.alpha.pk, "datasets": [world.dataset.pk], "title": "DSA", "reference": "R-1",
            "permitted_purposes": "health research", "prohibited_uses": ["marketing"],
            "commercial_use_allowed": False, "valid_from": "2025-01-01", "valid_until": "2030-12-31"}


def _project_body(world):
    return {"title": "A new project", "datasets": [world.dataset.pk], "start_date": "2026-01-01",
            "end_date": "2026-12-31", "purpose_categories": ["public_health"]}


EVERYONE = {r: 200 for r in ROLES if r != "anonymous"}
PROJECT_VIEWERS = ("lead", "member")

# name, method, path (from target t), body (from world w), target kind, {role: status}, status for the rest
ENDPOINTS = [
    ("organisations list", "get", lambda t: "/organisations/", None, None, EVERYONE, None),
    ("organisation detail", "get", lambda t: f"/organisations/{t.pk}/", None, "organisation", EVERYONE, None),
    ("organisation create", "post", lambda t: "/organisations/",
     lambda w: {"name": "Delta Trust", "sector": "charity"}, None, {"custodian": 201}, 403),
    ("projects list", "get", lambda t: "/projects/", None, None, EVERYONE, None),
    ("project create", "post", lambda t: "/projects/", _project_body, None,
     {r: 201 for r in ROLES if r != "anonymous"}, None),
    ("project detail (draft)", "get", lambda t: f"/projects/{t.pk}/", None, "draft",
     {"lead": 200, "member": 200}, 404),
    ("project detail (submitted)", "get", lambda t: f"/projects/{t.pk}/", None, "submitted",
     {"lead": 200, "member": 200, "dac": 200}, 404),
    ("project edit (draft)", "patch", lambda t: f"/projects/{t.pk}/", lambda w: {"title": "Renamed"}, "draft",
     {"lead": 200, "member": 403}, 404),
    ("project edit (submitted)", "patch", lambda t: f"/projects/{t.pk}/", lambda w: {"title": "Renamed"}, "submitted",
     {"lead": 409, "member": 403, "dac": 403}, 404),
    ("member add", "post", lambda t: f"/projects/{t.pk}/members/", lambda w: {"username": "other_org"}, "draft",
     {"lead": 201, "member": 403}, 404),
    ("member remove", "delete", lambda t: f"/projects/{t.pk}/members/mona/", None, "draft",
     {"lead": 200, "member": 403}, 404),
    ("submit", "post", lambda t: f"/projects/{t.pk}/submit/", None, "draft", {"lead": 200, "member": 403}, 404),
    ("review", "post", lambda t: f"/projects/{t.pk}/reviews/", lambda w: {"decision": "approve", "comment": "ok"},
     "submitted", {"dac": 200, "lead": 403, "member": 403}, 404),
    ("reviews list", "get", lambda t: f"/projects/{t.pk}/reviews/", None, "submitted",
     {"dac": 200, "lead": 200, "member": 200}, 404),
    ("suspend", "post", lambda t: f"/projects/{t.pk}/suspend/", lambda w: {"reason": "why"}, "approved",
     {"dac": 200, "lead": 403, "member": 403}, 404),
    ("reinstate", "post", lambda t: f"/projects/{t.pk}/reinstate/", lambda w: {"reason": "why"}, "suspended",
     {"dac": 200, "lead": 403, "member": 403}, 404),
    ("close", "post", lambda t: f"/projects/{t.pk}/close/", lambda w: {"reason": "done"}, "approved",
     {"dac": 200, "lead": 200, "member": 403}, 404),
    ("agreements list", "get", lambda t: "/agreements/", None, None, {"custodian": 200}, 403),
    ("agreement create", "post", lambda t: "/agreements/", _agreement_body, None, {"custodian": 201}, 403),
    ("agreement detail", "get", lambda t: f"/agreements/{t.pk}/", None, "agreement_active", {"custodian": 200}, 403),
    ("agreement activate", "post", lambda t: f"/agreements/{t.pk}/activate/", None, "agreement_draft",
     {"custodian": 200}, 403),
    ("agreement revoke", "post", lambda t: f"/agreements/{t.pk}/revoke/", lambda w: {"reason": "ended"},
     "agreement_active",
     {"custodian": 200}, 403),
    ("register", "get", lambda t: "/register/", None, None, {r: 200 for r in ROLES}, None),
    ("register detail", "get", lambda t: f"/register/{t.pk}/", None, "approved", {r: 200 for r in ROLES}, None),
    # a dataset's dictionary: custodians, and members of a project approved for it
    ("dataset dictionary (approved)", "get", lambda t: f"/datasets/{t.datasets.get().pk}/dictionary/", None, "approved",
     {"lead": 200, "member": 200, "custodian": 200}, 404),
    ("dataset dictionary (submitted)", "get", lambda t: f"/datasets/{t.datasets.get().pk}/dictionary/", None,
     "submitted", {"custodian": 200}, 404),
]

CASES = [(e, role) for e in ENDPOINTS for role in ROLES]


@pytest.mark.parametrize("endpoint, role", CASES, ids=[f"{e[0]} as {role}" for e, role in CASES])
def test_role_matrix(world, client_for, endpoint, role):
    name, method, path, body, kind, expected, otherwise = endpoint
    thing = world.alpha if kind == "organisation" else target(world, kind)
    user = world.users[role]
    if role == "anonymous":
        want = expected.get("anonymous", 401)
    else:
        want = expected.get(role, otherwise)
    kwargs = {"format": "json"}
    if body is not None:
        kwargs["data"] = body(world)
    response = getattr(client_for(user), method)(API + path(thing), **kwargs)
    assert response.status_code == want, response.content[:400]
    if want == 403:
        assert response.json()["detail"]
        if role != "anonymous":
            assert response.json()["rule"]  # the refusal names its rule
    if want == 404:
        assert response.json() == {"detail": "no such dataset" if "/datasets/" in path(thing) else "no such project"}


def test_every_endpoint_is_in_the_matrix():
    from django.urls import get_resolver

    from access import urls as access_urls
    from organisations import urls as organisation_urls
    from projects import urls as project_urls

    names = {p.name for p in project_urls.urlpatterns + access_urls.urlpatterns + organisation_urls.urlpatterns}
    covered = {"organisations", "organisation-detail", "projects", "project-detail", "project-members",
               "project-member", "project-submit", "project-reviews", "project-suspend", "project-reinstate",
               "project-close", "agreements", "agreement-detail", "agreement-activate", "agreement-revoke",
               "register", "register-detail", "dataset-dictionary"}
    assert names == covered
    assert get_resolver()  # the URLconf loads
