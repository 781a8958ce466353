"""A whole governance setup built through the public HTTP contract (DESIGN.md §8), for tests.

``Scenario(client_for, make_user)`` creates people for every role, a dataset loaded from synthetic
records, an active agreement and an approved project with a member. Tests that use it need
``transactional_db`` (ingestion and query runs happen on commit).
"""

from datetime import timedelta

from django.utils import timezone

from demo.data import COLUMNS, records, to_csv
from environment.pseudonym import person_id_for


def ok(response, *codes):
    codes = codes or (200, 201, 202)
    assert response.status_code in codes, f"{response.status_code}: {getattr(response, 'data', response.content)}"
    if not response.content and not getattr(response, "streaming", False):
        return None
    if "json" not in response.get("Content-Type", ""):
        return response.content.decode()
    return response.json()


class Scenario:
    def __init__(self, client_for, make_user, *, rows=400, persons=60, dataset="gp_events", seed=7):
        self.client_for = client_for
        self.custodian = make_user("cara_custodian", role="custodian", organisation="NHS Data Trust")
        self.lead = make_user("lena_lead", organisation="University of Example")
        self.member = make_user("max_member", organisation="University of Example")
        self.outsider = make_user("olga_outsider", organisation="Other Uni")
        self.dac = [make_user(f"dac_{i}", role="dac", organisation="DAC Board") for i in (1, 2)]
        self.checkers = [make_user(f"checker_{i}", role="output_checker", organisation="Checking Org") for i in (1, 2)]
        self.auditor = make_user("audra_auditor", role="auditor", organisation="Audit Office")
        self.records = list(records(rows, persons, seed))
        self.dataset = self.load_dataset(dataset, self.records)
        self.agreement = self.make_agreement([self.dataset["id"]])
        self.project = self.make_project([self.dataset["id"]])

    def c(self, user):
        return self.client_for(user)

    def load_dataset(self, name, recs, title=None):
        ds = ok(self.c(self.custodian).post("/api/v1/datasets/", {
            "name": name, "title": title or name.replace("_", " ").title(), "description": "synthetic GP events",
            "identifier_column": "nhs_number", "columns": COLUMNS}, format="json"))
        self.upload(ds["id"], to_csv(recs))
        return ok(self.c(self.custodian).get(f"/api/v1/datasets/{ds['id']}/"))

    def upload(self, dataset_id, content: bytes, filename="data.csv"):
        from django.core.files.uploadedfile import SimpleUploadedFile

        version = ok(self.c(self.custodian).post(f"/api/v1/datasets/{dataset_id}/versions/",
                                                  {"file": SimpleUploadedFile(filename, content, "text/csv")},
                                                  format="multipart"), 202)
        return self.wait_version(dataset_id, version["version"])

    def wait_version(self, dataset_id, version_id, timeout=90):
        """Ingestion runs on commit (in-process) or on the worker: wait until the version settles."""
        from tests.conftest import wait_for

        def settled():
            body = ok(self.c(self.custodian).get(f"/api/v1/datasets/{dataset_id}/versions/"))
            rows = body["results"] if isinstance(body, dict) else body
            mine = [v for v in rows if v.get("id", v.get("version")) == version_id]
            return mine[0] if mine and mine[0]["status"] in ("ready", "failed") else None

        return wait_for(settled, timeout=timeout, interval=0.2, message=f"version {version_id} to load")

    def make_agreement(self, dataset_ids, **overrides):
        today = timezone.localdate()
        org = self.lead.profile.organisation_id
        body = {"organisation": org, "datasets": dataset_ids, "title": "Research use of GP events",
                "reference": "DAA-2026-001", "permitted_purposes": ["health_research", "public_health"],
                "prohibited_uses": ["marketing", "insurance"], "commercial_use_allowed": False,
                "valid_from": str(today - timedelta(days=30)), "valid_until": str(today + timedelta(days=365)),
                **overrides}
        agreement = ok(self.c(self.custodian).post("/api/v1/agreements/", body, format="json"))
        return ok(self.c(self.custodian).post(f"/api/v1/agreements/{agreement['id']}/activate/"))

    def make_project(self, dataset_ids, approve=True, **overrides):
        today = timezone.localdate()
        body = {"title": "Diabetes and hypertension by region", "lay_summary": "How common are long-term conditions?",
                "purpose": "Estimate prevalence by region and age band.", "purpose_categories": ["health_research"],
                "public_benefit": "Better planning of services.", "legal_basis": "GDPR 6(1)(e), 9(2)(j)",
                "commercial": False, "datasets": dataset_ids, "start_date": str(today - timedelta(days=1)),
                "end_date": str(today + timedelta(days=180)), "ethics_reference": "REC 26/NE/0001", **overrides}
        lead = self.c(self.lead)
        project = ok(lead.post("/api/v1/projects/", body, format="json"), 201)
        ok(lead.post(f"/api/v1/projects/{project['id']}/members/", {"username": self.member.username}, format="json"), 200, 201)
        if approve:
            ok(lead.post(f"/api/v1/projects/{project['id']}/submit/"))
            for dac in self.dac:
                ok(self.c(dac).post(f"/api/v1/projects/{project['id']}/reviews/",
                                    {"decision": "approve", "comment": "Proportionate and in the public interest."}, format="json"))
        return ok(lead.get(f"/api/v1/projects/{project['id']}/"))

    def wait_query(self, query_id, statuses=("completed", "failed", "cancelled"), timeout=60):
        from tests.conftest import wait_for

        def done():
            body = ok(self.c(self.member).get(f"/api/v1/queries/{query_id}/"))
            return body if body["status"] in statuses else None

        return wait_for(done, timeout=timeout, interval=0.1, message=f"query {query_id} to reach {statuses}")

    def submit(self, sql, user=None, codes=(201,)):
        r = self.c(user or self.member).post(f"/api/v1/projects/{self.project['id']}/queries/", {"sql": sql}, format="json")
        assert r.status_code in codes, f"{r.status_code}: {r.content[:500]}"
        return r.json()

    def submit_dummy(self, sql, user=None, codes=(201,)):
        r = self.c(user or self.member).post(f"/api/v1/projects/{self.project['id']}/queries/",
                                             {"sql": sql, "target": "dummy"}, format="json")
        assert r.status_code in codes, f"{r.status_code}: {r.content[:500]}"
        return r.json()

    def person_ids(self, recs=None):
        return {person_id_for(r.nhs_number) for r in (recs or self.records)}
