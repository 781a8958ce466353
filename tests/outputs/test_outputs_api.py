"""The outputs API for every role: anonymous (401), members, non-member researchers, output checkers
(including one who belongs to the project), DAC members, custodians and auditors; the lifecycle,
vote hiding, downloads (contents and audit) and raw-view auditing."""

import csv
import io
import json
import zipfile

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from outputs.models import Output, OutputReview
from projects import services as project_services
from tests.factories import OutputFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

# the member's view before release: status and column names, no value, no disclosure-control outcome
MEMBER_KEYS = {"id", "query", "project", "project_title", "status", "columns", "round", "created_at",
               "requested_at", "released_at", "view", "request_comment", "reviews"}
CHECKER_ONLY = {"raw", "safe", "flags", "sdc", "sql", "contributions_sql", "timings", "engine_error", "differencing"}
SAFE = [["east", None], ["north", 22], ["south", 13]]  # the default output as released (perturbed, east withheld)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class World:
    """One approved project (lead + member + a member who is also an output checker) and one
    user of every other kind."""

    def __init__(self):
        self.lead = UserFactory(username="lead")
        self.member = UserFactory(username="member")
        self.checker_member = UserFactory(username="checker_member", role="output_checker")
        self.project = ProjectFactory(lead=self.lead, members=[self.member, self.checker_member], status="approved",
                                      title="Waiting times")
        self.outsider = UserFactory(username="outsider")
        self.checker1 = UserFactory(username="checker1", role="output_checker")
        self.checker2 = UserFactory(username="checker2", role="output_checker")
        self.checker3 = UserFactory(username="checker3", role="output_checker")
        self.dac = UserFactory(username="dac1", role="dac")
        self.custodian = UserFactory(username="custodian1", role="custodian")
        self.auditor = UserFactory(username="auditor1", role="auditor")

    def output(self, **kwargs):
        return OutputFactory(project=self.project, submitted_by=self.member, **kwargs)


@pytest.fixture
def w(db):
    return World()


def url(name, output=None, **query):
    path = reverse(name, kwargs={"pk": output.pk if hasattr(output, "pk") else output}) if output is not None \
        else reverse(name)
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return path


def audit(action, output):
    return list(AuditEvent.objects.filter(action=action, target_type="output", target_id=str(output.pk))
                .order_by("seq"))


def post(client, name, output, body=None):
    return client.post(url(name, output), body or {}, format="json")


# --- anonymous -----------------------------------------------------------------------------------

def test_anonymous_gets_401_everywhere(w, anon):
    output = w.output(status="released")
    assert anon.get(url("outputs")).status_code == 401
    assert anon.get(url("output-detail", output)).status_code == 401
    assert anon.get(url("output-download", output)).status_code == 401
    for name in ("output-request-release", "output-withdraw"):
        assert post(anon, name, output).status_code == 401
    assert post(anon, "output-reviews", output, {"decision": "approve", "comment": "x"}).status_code == 401


# --- lists ---------------------------------------------------------------------------------------

def test_members_list_their_projects_outputs_and_others_see_none(w, client_for):
    mine = w.output()
    elsewhere = OutputFactory()  # another project
    for user in (w.lead, w.member, w.checker_member):
        body = client_for(user).get(url("outputs")).json()
        assert set(body) == {"count", "next", "previous", "results"}
        assert [o["id"] for o in body["results"]] == [mine.pk]
        assert body["results"][0]["view"] == "member" and "raw" not in body["results"][0]
    for user in (w.outsider, w.dac, w.custodian, w.auditor, w.checker1):
        response = client_for(user).get(url("outputs"))
        assert response.status_code == 200 and response.json()["count"] == 0, user.username
    assert elsewhere.project_id != w.project.pk


def test_list_item_shape_has_no_values(w, client_for):
    w.output()
    [item] = client_for(w.member).get(url("outputs")).json()["results"]
    assert set(item) == {"id", "query", "project", "project_title", "status", "columns", "round", "created_at",
                         "requested_at", "released_at", "view"}  # no sdc outcome for members
    assert item["columns"] == ["region", "n"] and item["status"] == "pending" and item["project_title"] == "Waiting times"


def test_checkers_queue_is_submitted_oldest_first(w, client_for):
    from django.utils import timezone

    pending = w.output()
    first, second = w.output(status="submitted"), w.output(status="submitted")
    Output.objects.filter(pk=second.pk).update(requested_at=timezone.now() - timezone.timedelta(hours=2))
    released = w.output(status="released")
    other_project = OutputFactory(status="submitted")

    queue = client_for(w.checker1).get(url("outputs", status="submitted")).json()["results"]
    assert [o["id"] for o in queue] == [second.pk, first.pk, other_project.pk]
    assert all(o["view"] == "checker" and o["status"] == "submitted" for o in queue)
    everything = {o["id"] for o in client_for(w.checker1).get(url("outputs")).json()["results"]}
    assert everything == {first.pk, second.pk, released.pk, other_project.pk}
    assert pending.pk not in everything

    # the checker who belongs to the project sees its outputs as a member, and other projects' as a checker
    listed = {o["id"]: o["view"] for o in client_for(w.checker_member).get(url("outputs")).json()["results"]}
    assert listed[pending.pk] == "member" and listed[first.pk] == "member" and listed[other_project.pk] == "checker"


def test_list_filters_by_status_and_refuses_unknown(w, client_for):
    w.output()
    withdrawn = w.output(status="withdrawn")
    client = client_for(w.member)
    assert [o["id"] for o in client.get(url("outputs", status="withdrawn")).json()["results"]] == [withdrawn.pk]
    response = client.get(url("outputs", status="bogus"))
    assert response.status_code == 400 and "status" in response.json()


def test_list_costs_a_constant_number_of_queries(w, client_for, django_assert_max_num_queries):
    for _ in range(3):
        w.output(status="submitted")
    client = client_for(w.checker1)
    client.get(url("outputs"))  # warm the role cache of the user object
    with django_assert_max_num_queries(8):
        assert client.get(url("outputs")).json()["count"] == 3
    for _ in range(6):
        w.output(status="submitted")
    with django_assert_max_num_queries(8):
        assert client.get(url("outputs")).json()["count"] == 9


# --- detail --------------------------------------------------------------------------------------

def test_member_view_never_shows_values_before_release(w, client_for):
    output = w.output(status="submitted")
    for user in (w.lead, w.member, w.checker_member):
        body = client_for(user).get(url("output-detail", output)).json()
        assert set(body) == MEMBER_KEYS, user.username
        assert body["view"] == "member" and body["columns"] == ["region", "n"]
        assert "north" not in json.dumps(body)
    assert not audit("output.raw_viewed", output)


def test_detail_is_404_for_those_who_may_not_see_it(w, client_for):
    output = w.output()
    for user in (w.outsider, w.dac, w.custodian, w.auditor, w.checker1):  # checkers: not before a request
        assert client_for(user).get(url("output-detail", output)).status_code == 404, user.username
    assert client_for(w.member).get(url("output-detail", 999_999)).status_code == 404


def test_checker_view_shows_raw_safe_flags_and_is_audited(w, client_for):
    output = w.output(status="submitted")
    response = client_for(w.checker1).get(url("output-detail", output))
    assert response.status_code == 200
    body = response.json()
    assert body["view"] == "checker" and CHECKER_ONLY <= set(body)
    assert body["columns"] == ["region", "n", "contributors"]
    assert body["raw"] == [["east", 4, 4], ["north", 23, 23], ["south", 12, 12]]
    assert body["safe"] == SAFE
    assert body["flags"] == [{"n": ["threshold"]}, {}, {}]
    assert body["contributions_sql"] == output.query.contributions_sql and body["differencing"] == []
    assert body["sdc"]["status"] == "suppressed" and body["reviews"] == []
    assert body["sdc"]["summary"] == {"threshold": 1, "nk_dominance": 0, "p_percent": 0, "differencing": 0}
    assert body["sdc"]["settings"]["threshold"] == 10 and body["sdc"]["settings"]["ckm_d"] == 3
    checker_list = client_for(w.checker1).get(url("outputs")).json()["results"]
    assert checker_list[0]["sdc"]["status"] == "suppressed"
    [event] = audit("output.raw_viewed", output)
    assert event.actor == "checker1" and event.project == w.project.pk


def test_a_checker_who_is_a_member_never_gets_the_checker_view(w, client_for):
    output = w.output(status="submitted")
    body = client_for(w.checker_member).get(url("output-detail", output)).json()
    assert body["view"] == "member" and not (CHECKER_ONLY & set(body))
    assert not audit("output.raw_viewed", output)


def test_members_see_the_released_table_after_release(w, client_for):
    output = w.output(status="released")
    body = client_for(w.member).get(url("output-detail", output)).json()
    assert body["status"] == "released" and body["released_at"] is not None
    assert body["safe"] == SAFE  # the full grid sorted by key, withheld cells null, no contributors
    assert "raw" not in body and "flags" not in body and "sdc" not in body
    assert [(r["decision"], r["round"]) for r in body["reviews"]] == [("approve", 1), ("approve", 1)]
    assert all("checker" not in r for r in body["reviews"])


# --- the researcher's transitions ----------------------------------------------------------------

def test_request_release_by_roles(w, client_for):
    output = w.output()
    assert post(client_for(w.outsider), "output-request-release", output).status_code == 404
    assert post(client_for(w.dac), "output-request-release", output).status_code == 404
    assert post(client_for(w.checker1), "output-request-release", output).status_code == 404  # not yet visible

    response = post(client_for(w.member), "output-request-release", output, {"comment": "for the paper"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "submitted" and body["round"] == 1 and body["view"] == "member"
    assert body["request_comment"] == "for the paper"

    again = post(client_for(w.lead), "output-request-release", output)
    assert again.status_code == 409 and again.json()["status"] == "submitted"
    refused = post(client_for(w.checker1), "output-request-release", output)  # visible now, but not theirs
    assert refused.status_code == 403 and refused.json()["rule"] == "project_member_only"


def test_members_of_a_suspended_project_may_not_act(w, client_for):
    output = w.output()
    project_services.project_suspend(project=w.project, actor=UserFactory(role="dac"), comment="paused")
    response = post(client_for(w.member), "output-request-release", output)
    assert response.status_code == 403 and response.json()["rule"] == "view_output"
    assert client_for(w.member).get(url("output-detail", output)).status_code == 200  # still visible


def test_withdraw(w, client_for):
    output = w.output()
    response = post(client_for(w.member), "output-withdraw", output, {"comment": "wrong grouping"})
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    assert audit("output.withdrawn", output)[0].data["comment"] == "wrong grouping"
    assert post(client_for(w.member), "output-withdraw", output).status_code == 409

    submitted = w.output(status="submitted")
    assert post(client_for(w.member), "output-withdraw", submitted).status_code == 409
    assert post(client_for(w.outsider), "output-withdraw", submitted).status_code == 404
    assert post(client_for(w.checker1), "output-withdraw", submitted).status_code == 403


# --- the checkers' votes -------------------------------------------------------------------------

def vote(client, output, decision="approve", comment="looks safe"):
    return post(client, "output-reviews", output, {"decision": decision, "comment": comment})


def test_whole_lifecycle_two_approvals_release(w, client_for):
    output = w.output()
    assert post(client_for(w.member), "output-request-release", output).status_code == 200

    first = vote(client_for(w.checker1), output)
    assert first.status_code == 200
    assert first.json()["view"] == "checker" and first.json()["status"] == "submitted"
    assert vote(client_for(w.checker1), output, "reject", "on reflection").status_code == 409  # repeat vote
    assert OutputReview.objects.filter(output=output).count() == 1

    second = vote(client_for(w.checker2), output, comment="agreed")
    assert second.status_code == 200 and second.json()["status"] == "released"
    assert [r["checker"] for r in second.json()["reviews"]] == ["checker1", "checker2"]
    assert vote(client_for(w.checker3), output).status_code == 409  # the round is over
    assert audit("output.released", output)[0].data["approvers"] == ["checker1", "checker2"]

    download = client_for(w.member).get(url("output-download", output))
    assert download.status_code == 200


def test_review_refusals(w, client_for):
    output = w.output(status="submitted")
    refused = vote(client_for(w.checker_member), output)
    assert refused.status_code == 403 and refused.json()["rule"] == "checker_project_member"
    refused = vote(client_for(w.member), output)
    assert refused.status_code == 403 and refused.json()["rule"] == "role_output_checkers"
    for user in (w.outsider, w.dac, w.custodian, w.auditor):
        assert vote(client_for(user), output).status_code == 404, user.username

    bad = post(client_for(w.checker1), "output-reviews", output, {"decision": "maybe", "comment": "x"})
    assert bad.status_code == 400 and "decision" in bad.json()
    bad = post(client_for(w.checker1), "output-reviews", output, {"decision": "approve"})
    assert bad.status_code == 400 and "comment" in bad.json()
    assert not OutputReview.objects.filter(output=output).exists()

    pending = w.output()
    assert vote(client_for(w.checker1), pending).status_code == 404  # not visible before a request


def test_reject_is_final(w, client_for):
    output = w.output(status="submitted")
    response = vote(client_for(w.checker1), output, "reject", "too few people")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert vote(client_for(w.checker2), output).status_code == 409
    assert post(client_for(w.member), "output-request-release", output).status_code == 409
    assert post(client_for(w.member), "output-withdraw", output).status_code == 409
    assert client_for(w.member).get(url("output-download", output)).status_code == 409


def test_return_lets_the_member_request_again_or_withdraw(w, client_for):
    output = w.output(status="submitted")
    vote(client_for(w.checker1), output, "return", "please explain the east row")
    body = client_for(w.member).get(url("output-detail", output)).json()
    assert body["status"] == "returned"
    assert body["reviews"] == [{"decision": "return", "comment": "please explain the east row", "round": 1,
                                "created_at": body["reviews"][0]["created_at"]}]

    again = post(client_for(w.member), "output-request-release", output, {"comment": "explained"})
    assert again.status_code == 200 and again.json()["round"] == 2 and again.json()["status"] == "submitted"
    assert vote(client_for(w.checker1), output, comment="fine now").status_code == 200  # a new round
    assert vote(client_for(w.checker2), output).json()["status"] == "released"

    other = w.output(status="returned")
    assert post(client_for(w.member), "output-withdraw", other).json()["status"] == "withdrawn"


def test_votes_of_others_are_hidden_until_you_vote(w, client_for):
    output = w.output(status="submitted")
    vote(client_for(w.checker1), output, comment="first vote")

    before = client_for(w.checker2).get(url("output-detail", output)).json()
    assert before["reviews"] == []
    mine = client_for(w.checker1).get(url("output-detail", output)).json()
    assert [r["checker"] for r in mine["reviews"]] == ["checker1"]
    member = client_for(w.member).get(url("output-detail", output)).json()
    assert member["reviews"] == []  # the round is still open

    after = vote(client_for(w.checker2), output, comment="second vote").json()
    assert [r["comment"] for r in after["reviews"]] == ["first vote", "second vote"]


def test_votes_of_a_finished_round_are_visible_to_every_checker(w, client_for, settings):
    settings.TRE_OUTPUT_APPROVALS = 3
    output = w.output(status="submitted")
    vote(client_for(w.checker1), output, "return", "round one")
    post(client_for(w.member), "output-request-release", output)
    vote(client_for(w.checker2), output, comment="round two")
    seen = client_for(w.checker3).get(url("output-detail", output)).json()["reviews"]
    assert [(r["checker"], r["round"]) for r in seen] == [("checker1", 1)]


# --- downloads -----------------------------------------------------------------------------------

def test_download_only_released_and_only_members(w, client_for):
    pending, submitted, released = w.output(), w.output(status="submitted"), w.output(status="released")
    assert client_for(w.member).get(url("output-download", pending)).status_code == 409
    assert client_for(w.member).get(url("output-download", submitted)).status_code == 409
    for user in (w.outsider, w.dac, w.custodian, w.auditor):
        assert client_for(user).get(url("output-download", released)).status_code == 404, user.username
    refused = client_for(w.checker1).get(url("output-download", released))
    assert refused.status_code == 403 and refused.json()["rule"] == "project_member_only"
    bad = client_for(w.member).get(url("output-download", released, file_format="xlsx"))
    assert bad.status_code == 400 and "file_format" in bad.json()
    assert not audit("output.downloaded", released) and not audit("output.downloaded", pending)


def test_csv_download_is_plain_csv_of_the_released_table(w, client_for):
    output = w.output(status="released")
    response = client_for(w.member).get(url("output-download", output, file_format="csv"),
                                        HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f'filename="output-{output.pk}.csv"' in response["Content-Disposition"]
    text = response.content.decode()
    assert not any(line.startswith("#") for line in text.splitlines())  # a header row, then data: nothing else
    assert list(csv.reader(io.StringIO(text))) == [["region", "n"], ["east", ""], ["north", "22"], ["south", "13"]]
    assert "contributors" not in text and "23" not in text
    [event] = audit("output.downloaded", output)
    assert event.actor == "member" and event.data == {"file_format": "csv"}


def test_json_download(w, client_for):
    output = w.output(status="released")
    response = client_for(w.lead).get(url("output-download", output, file_format="json"))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["columns"] == ["region", "n"]
    assert body["rows"] == SAFE
    assert body["metadata"]["project_id"] == w.project.pk and body["metadata"]["query_id"] == output.query_id
    assert body["metadata"]["sdc_rules"]["threshold"] == 10 and body["metadata"]["sdc_status"] == "suppressed"
    assert body["metadata"]["sdc_rules"]["ckm_d"] == 3 and body["metadata"]["sdc_rules"]["ptable"]
    assert "contributors" not in response.content.decode()
    assert audit("output.downloaded", output)[0].data == {"file_format": "json"}


def test_default_download_is_csv_and_each_download_is_audited(w, client_for):
    output = w.output(status="released")
    client = client_for(w.member)
    assert client.get(url("output-download", output))["Content-Type"].startswith("text/csv")
    client.get(url("output-download", output, file_format="json"))
    assert [e.data["file_format"] for e in audit("output.downloaded", output)] == ["csv", "json"]


def test_acro_results_json(w, client_for):
    output = w.output(status="released")
    response = client_for(w.member).get(url("output-download", output, file_format="acro"))
    assert response.status_code == 200
    body = json.loads(response.content)
    uid = f"output_{output.pk}"
    assert body["version"] == "0.4.0" and list(body["results"]) == [uid]
    record = body["results"][uid]
    assert set(record) == {"uid", "status", "type", "properties", "files", "outcome", "command", "summary",
                           "timestamp", "comments", "exception"}
    assert record["uid"] == uid and record["type"] == "table" and record["status"] == "fail"
    [file] = record["files"]
    assert file["name"] == f"output_{output.pk}.csv"
    assert file["sdc"]["summary"]["threshold"] == 1 and file["sdc"]["summary"]["suppressed"] is True
    assert file["sdc"]["cells"]["threshold"] == [[0, 1]]
    assert record["outcome"]["n"] == {"0": "threshold; ", "1": "ok", "2": "ok"}
    assert record["summary"] == "fail; threshold: 1 cells suppressed; "
    assert record["command"] == output.query.sql
    assert record["comments"] == ["approve: checked", "approve: checked"]
    assert "contributors" not in response.content.decode()
    assert audit("output.downloaded", output)[0].data == {"file_format": "acro"}


def test_acro_zip_is_a_directory_sacro_viewer_opens(w, client_for):
    import hashlib

    output = w.output(status="released")
    response = client_for(w.member).get(url("output-download", output, file_format="acro_zip"))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    name = f"output_{output.pk}.csv"
    assert set(archive.namelist()) == {"results.json", name, f"checksums/{name}.txt", "checksums/results.json.txt"}
    table = archive.read(name)
    assert table.decode().splitlines() == ["region,n", "east,", "north,22", "south,13"]
    assert archive.read(f"checksums/{name}.txt").decode() == hashlib.sha256(table).hexdigest()
    results = json.loads(archive.read("results.json"))
    assert results["results"][f"output_{output.pk}"]["files"][0]["name"] == name


def test_the_schema_documents_the_outputs_api(anon):
    schema = anon.get("/api/schema/").content.decode()
    for path in ("/api/v1/outputs/", "/api/v1/outputs/{id}/", "/api/v1/outputs/{id}/request-release/",
                 "/api/v1/outputs/{id}/withdraw/", "/api/v1/outputs/{id}/reviews/", "/api/v1/outputs/{id}/download/"):
        assert path in schema
    assert "file_format" in schema
