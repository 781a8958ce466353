"""The Five-Safes flow over the public HTTP contract, for the demo seed and the walkthrough.

``Flow(transport)`` speaks only DESIGN.md §8. Two transports: ``InProcess`` (Django's test client
inside ``manage.py tre_demo_seed``, no server needed) and ``Http`` (a real server, token auth: what
``make demo`` uses).
"""

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta


class StepFailed(Exception):
    pass


@dataclass
class Answer:
    status: int
    body: object
    headers: dict = field(default_factory=dict)
    raw: bytes = b""


class InProcess:
    """Calls the API in this process as the named user (no passwords needed)."""

    def __init__(self):
        from rest_framework.test import APIClient  # noqa: PLC0415 — the HTTP walkthrough runs without Django

        self._client_cls = APIClient

    def __call__(self, method, path, user=None, body=None, files=None, token=None) -> Answer:
        from django.contrib.auth import get_user_model  # noqa: PLC0415 — the HTTP walkthrough runs without Django

        client = self._client_cls()
        if user:
            client.force_authenticate(get_user_model().objects.get(username=user))
        kwargs = {}
        if files:
            from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: PLC0415 — see InProcess

            kwargs = {"data": {k: SimpleUploadedFile(name, content, ctype) for k, (name, content, ctype) in files.items()},
                      "format": "multipart"}
        elif body is not None:
            kwargs = {"data": body, "format": "json"}
        response = getattr(client, method.lower())(path, **kwargs)
        raw = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
        try:
            parsed = json.loads(raw) if raw and "json" in response.get("Content-Type", "") else raw.decode(errors="replace")
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(response.status_code, parsed, dict(response.items()), raw)


class Http:
    """Calls a running server; logs users in with their passwords and keeps their tokens."""

    def __init__(self, base_url: str, passwords: dict[str, str], timeout: float = 60):
        self.base, self.passwords, self.timeout, self.tokens = base_url.rstrip("/"), passwords, timeout, {}

    def token(self, user: str) -> str:
        if user not in self.tokens:
            answer = self(method="POST", path="/api/v1/auth/token/", body={"username": user, "password": self.passwords[user]})
            if answer.status != 200:
                raise StepFailed(f"login as {user} failed: {answer.status} {answer.body}")
            self.tokens[user] = answer.body["token"]
        return self.tokens[user]

    def __call__(self, method, path, user=None, body=None, files=None, token=None) -> Answer:
        headers = {"Accept": "application/json"}
        data = None
        if user:
            headers["Authorization"] = f"Token {self.token(user)}"
        if files:
            boundary = uuid.uuid4().hex
            buf = io.BytesIO()
            for key, (name, content, ctype) in files.items():
                buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
                          f"Content-Type: {ctype}\r\n\r\n".encode())
                buf.write(content)
                buf.write(b"\r\n")
            buf.write(f"--{boundary}--\r\n".encode())
            data, headers["Content-Type"] = buf.getvalue(), f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, raw, hdrs = exc.code, exc.read(), dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw and "json" in hdrs.get("Content-Type", "") else raw.decode(errors="replace")
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(status, parsed, hdrs, raw)


# --- the people of the demo -------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    username: str
    role: str | None
    organisation: str
    sector: str
    does: str


PEOPLE = [
    Person("rita", None, "University of Exampleton", "academic", "researcher, project lead"),
    Person("sam", None, "University of Exampleton", "academic", "researcher, project member"),
    Person("dina", "dac", "Regional Data Access Committee", "nhs", "DAC member"),
    Person("dev", "dac", "Regional Data Access Committee", "nhs", "DAC member"),
    Person("olu", "output_checker", "Safe Outputs Team", "nhs", "output checker"),
    Person("otto", "output_checker", "Safe Outputs Team", "nhs", "output checker"),
    Person("cass", "custodian", "Exampleshire NHS Data Trust", "nhs", "data custodian"),
    Person("aud", "auditor", "Independent Audit Office", "government", "auditor"),
]
DEMO_PASSWORD = "demo-password-please-change"
DATASET = "gp_events"


class Flow:
    """Steps of the Five-Safes lifecycle; each checks its answer and reports it."""

    def __init__(self, call, report=print):
        self.call, self.report, self.step_no = call, report, 0

    def step(self, title, method, path, user=None, body=None, files=None, expect=(200, 201, 202)) -> Answer:
        self.step_no += 1
        answer = self.call(method, path, user=user, body=body, files=files)
        if answer.status not in expect:
            self.report(f"  {self.step_no:>2}. FAILED {title}: {method} {path} as {user or 'anonymous'} → {answer.status} {answer.body}")
            raise StepFailed(f"step {self.step_no} ({title}) answered {answer.status}")
        self.report(f"  {self.step_no:>2}. {title}  [{method} {path} as {user or 'anonymous'} → {answer.status}]")
        return answer

    def wait(self, what, path, user, done, timeout=300, interval=0.5) -> Answer:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.call("GET", path, user=user)
            if answer.status == 200 and done(answer.body):
                return answer
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out waiting for {what}: last answer {answer.status} {answer.body}")
            time.sleep(interval)

    # --- building blocks -------------------------------------------------------------------

    def dataset(self, custodian, csv_bytes: bytes, name=DATASET) -> dict:
        from demo.data import COLUMNS  # noqa: PLC0415 — the HTTP walkthrough runs without Django

        listing = self.call("GET", "/api/v1/datasets/?page_size=500", user=custodian).body
        existing = [d for d in listing.get("results", []) if d["name"] == name] if isinstance(listing, dict) else []
        if existing and existing[0].get("current_version"):
            return existing[0]
        ds = existing[0] if existing else self.step(
            f"custodian registers dataset '{name}' (NHS number → keyed pseudonym; names dropped)", "POST", "/api/v1/datasets/",
            custodian, {"name": name, "title": "GP events (synthetic)", "description": "Synthetic primary-care events: region, "
                        "sex, age band, ICD-10 code, date and cost.", "identifier_column": "nhs_number", "columns": COLUMNS}).body
        version = self.step(f"custodian uploads {len(csv_bytes) / 1e6:.1f} MB of CSV", "POST", f"/api/v1/datasets/{ds['id']}/versions/",
                            custodian, files={"file": ("gp_events.csv", csv_bytes, "text/csv")}, expect=(202,)).body
        rows = self.wait("the load", f"/api/v1/datasets/{ds['id']}/versions/", custodian,
                         lambda b: any(v.get("id", v.get("version")) == version["version"] and v["status"] in ("ready", "failed")
                                       for v in (b["results"] if isinstance(b, dict) else b)))
        v = [v for v in (rows.body["results"] if isinstance(rows.body, dict) else rows.body)
             if v.get("id", v.get("version")) == version["version"]][0]
        if v["status"] != "ready":
            raise StepFailed(f"the load failed: {v.get('errors')}")
        self.report(f"      loaded {v['row_count']:,} rows of {v.get('person_count', '?')} people")
        return self.call("GET", f"/api/v1/datasets/{ds['id']}/", user=custodian).body

    def agreement(self, custodian, organisation_id, dataset_id) -> dict:
        today = date.today()
        a = self.step("custodian drafts a data-access agreement with the university", "POST", "/api/v1/agreements/", custodian, {
            "organisation": organisation_id, "datasets": [dataset_id], "title": "GP events for public-health research",
            "reference": f"DAA-{today.year}-{uuid.uuid4().hex[:6]}", "permitted_purposes": ["health_research", "public_health"],
            "prohibited_uses": ["marketing", "insurance"], "commercial_use_allowed": False,
            "valid_from": str(today - timedelta(days=1)), "valid_until": str(today + timedelta(days=365))}).body
        return self.step("custodian activates the agreement", "POST", f"/api/v1/agreements/{a['id']}/activate/", custodian).body

    def project(self, lead, member, dac, dataset_id, title) -> dict:
        today = date.today()
        p = self.step(f"researcher applies: '{title}'", "POST", "/api/v1/projects/", lead, {
            "title": title, "lay_summary": "How common are diabetes and high blood pressure in each region, and what does "
            "their care cost?", "purpose": "Estimate prevalence and mean cost of care by region and age band.",
            "purpose_categories": ["health_research", "public_health"], "public_benefit": "Helps plan services where they are needed.",
            "legal_basis": "UK GDPR Art. 6(1)(e) and 9(2)(j)", "commercial": False, "datasets": [dataset_id],
            "start_date": str(today - timedelta(days=1)), "end_date": str(today + timedelta(days=365)),
            "ethics_reference": "REC 26/EX/0042"}).body
        self.step("lead adds a team member", "POST", f"/api/v1/projects/{p['id']}/members/", lead, {"username": member})
        self.step("lead submits the application to the DAC", "POST", f"/api/v1/projects/{p['id']}/submit/", lead)
        for reviewer in dac:
            answer = self.step(f"DAC member {reviewer} approves", "POST", f"/api/v1/projects/{p['id']}/reviews/", reviewer,
                               {"decision": "approve", "comment": "Clear public benefit; data minimised."})
        self.report(f"      project {p['id']} is now {answer.body['status']}")
        return answer.body

    def query(self, member, project_id, sql) -> dict:
        q = self.step("member submits an aggregate query", "POST", f"/api/v1/projects/{project_id}/queries/", member,
                      {"sql": sql, "title": "prevalence and cost by region"}, expect=(201,)).body
        q = self.wait("the query to finish", f"/api/v1/queries/{q['id']}/", member,
                      lambda b: b["status"] in ("completed", "failed", "cancelled")).body
        if q["status"] != "completed":
            raise StepFailed(f"the query ended {q['status']}: {q.get('error')}")
        self.report(f"      query {q['id']} completed inside the environment (no value, no timing shown); output {q['output']}")
        return q

    def release(self, member, checkers, output_id) -> dict:
        o = self.step("member sees the status and column names only", "GET", f"/api/v1/outputs/{output_id}/", member).body
        self.report(f"      output {output_id} is {o['status']}; columns {o['columns']}")
        self.step("member requests release", "POST", f"/api/v1/outputs/{output_id}/request-release/", member)
        for checker in checkers:
            view = self.step(f"checker {checker} inspects raw and safe tables", "GET", f"/api/v1/outputs/{output_id}/", checker).body
            answer = self.step(f"checker {checker} approves", "POST", f"/api/v1/outputs/{output_id}/reviews/", checker,
                               {"decision": "approve", "comment": "Perturbed; small cells withheld; safe to release."})
        self.report(f"      sdc {view['sdc']['status']}: {view['sdc']['summary']}")
        self.report(f"      output {output_id} is {answer.body['status']}")
        return answer.body
