"""Queries through the API and the task: access, validation, the run, cancel, sweeper, privacy."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from demo.data import records
from queries.models import Query
from queries.services import _plan, run_query, sweep
from tests.scenario import Scenario, ok

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sc(client_for, make_user):
    return Scenario(client_for, make_user)


def _get(sc, query_id, user=None):
    return ok(sc.c(user or sc.member).get(f"/api/v1/queries/{query_id}/"))


def _query(sc, sql="SELECT count(*) AS n FROM gp_events", **fields) -> Query:
    """A queued query made directly (no enqueue), with the plan and statements of ``sql``."""
    from environment.models import Dataset
    from queries.plans import plan_json

    plan, statement, contributors = _plan(sql, list(Dataset.objects.filter(name="gp_events")))
    return Query.objects.create(project_id=sc.project["id"], submitted_by=sc.member, sql=sql, plan=plan_json(plan),
                                contributions_sql=statement, contributors_sql=contributors,
                                dataset_names=["gp_events"], **fields)


NOTHING_BEFORE_RELEASE = ("result", "timings", "started_at", "finished_at")


def test_a_real_query_shows_its_status_and_text_only(sc):
    q = sc.submit("SELECT region, count(*) AS n, avg(value) AS mean_value FROM gp_events GROUP BY region")
    assert q["status"] == "queued" and isinstance(q["id"], int)
    body = _get(sc, q["id"])
    assert body["status"] == "completed", body
    assert set(body) >= {"id", "project", "status", "sql", "submitted_by", "submitted_at", "error", "error_code", "output"}
    assert all(body[name] is None for name in NOTHING_BEFORE_RELEASE), body  # no value, no timing
    assert body["output"] is not None and body["error"] == "" and body["target"] == "real"
    text = str(body)
    assert "tre_optouts" not in text and "n_persons" not in text and "elapsed" not in text
    stored = Query.objects.get(pk=q["id"])
    # populated cells, for checkers only (regions held by fewer than 10 persons are recoded to "other" at load)
    assert stored.result_groups == len(stored.plan["keys"][0]["domain"])
    assert "tre_optouts" in stored.contributions_sql
    assert [k["name"] for k in stored.plan["keys"]] == ["region"]
    actions = list(AuditEvent.objects.filter(target_type="query", target_id=str(q["id"])).values_list("action", flat=True))
    assert actions[:3] == ["query.submitted", "query.started", "query.completed"]


def test_the_stored_cells_match_an_independent_count(sc):
    from queries.results import read_result

    q = sc.submit("SELECT code, count(*) AS n, count(DISTINCT person_id) AS people FROM gp_events GROUP BY code")
    domain = Query.objects.get(pk=q["id"]).plan["keys"][0]["domain"]
    _, cells = read_result(q["id"])
    got = {c["key"][0]: (c["n_rows"], c["n_persons"]) for c in cells}
    as_stored = [r.code if r.code in domain else "other" for r in sc.records]  # rarer codes are recoded at load
    rows_by_code = Counter(as_stored)
    people_by_code = {c: len({r.nhs_number for r, s in zip(sc.records, as_stored, strict=False) if s == c}) for c in rows_by_code}
    assert got == {c: (rows_by_code[c], people_by_code[c]) for c in rows_by_code}


def test_validation_errors_are_400_naming_every_problem(sc, settings):
    url = f"/api/v1/projects/{sc.project['id']}/queries/"
    r = sc.c(sc.member).post(url, {"sql": "SELECT person_id, value FROM gp_events"}, format="json")
    assert r.status_code == 400 and list(r.json()) == ["sql"]
    messages = r.json()["sql"]
    assert [m.split(" ")[0] for m in messages] == ["person_id", "key_float"]
    assert messages[0].startswith("person_id at line 1, column 8: ") and " — " in messages[0]
    r = sc.c(sc.member).post(url, {"sql": "SELECT region, max(value) FROM gp_events GROUP BY region"}, format="json")
    assert r.status_code == 400 and r.json()["sql"][0].startswith("aggregate_not_allowed at line 1")
    r = sc.c(sc.member).post(url, {"sql": ""}, format="json")
    assert r.status_code == 400 and "sql" in r.json()
    r = sc.c(sc.member).post(url, {"sql": "SELECT count(*) FROM gp_events -- " + "x" * 200_000}, format="json")
    assert r.status_code == 400 and r.json()["sql"][0].startswith("too_large"), r.content
    settings.TRE_MAX_RESULT_CELLS = 3
    r = sc.c(sc.member).post(url, {"sql": "SELECT age, count(*) FROM gp_events GROUP BY age"}, format="json")
    assert r.status_code == 400 and r.json()["sql"][0].startswith("grid_too_large"), r.content
    assert "age (" in r.json()["sql"][0]
    assert Query.objects.count() == 0


def test_access_refusals_are_403_naming_the_rule(sc, make_user):
    # a DAC member can see the project but is not a member of it
    r = sc.c(sc.dac[0]).post(f"/api/v1/projects/{sc.project['id']}/queries/", {"sql": "SELECT count(*) FROM gp_events"}, format="json")
    assert r.status_code == 403 and r.json()["rule"] == "not_member"
    # a dataset the project was not approved for
    other = sc.load_dataset("hospital_spells", records(50, 10, seed=3))
    r = sc.submit("SELECT count(*) FROM hospital_spells", codes=(403,))
    assert r["rule"] == "dataset_not_approved"
    # the agreement is revoked: refused at submission
    ok(sc.c(sc.custodian).post(f"/api/v1/agreements/{sc.agreement['id']}/revoke/", {"reason": "ended"}, format="json"))
    r = sc.submit("SELECT count(*) FROM gp_events", codes=(403,))
    assert r["rule"] == "no_active_agreement"
    assert other["id"] and Query.objects.count() == 0


def test_who_may_submit_and_see(sc, anon):
    url = f"/api/v1/projects/{sc.project['id']}/queries/"
    assert anon.post(url, {"sql": "SELECT count(*) FROM gp_events"}, format="json").status_code == 401
    assert sc.c(sc.outsider).post(url, {"sql": "SELECT count(*) FROM gp_events"}, format="json").status_code == 404
    q = sc.submit("SELECT count(*) FROM gp_events", user=sc.lead)
    assert anon.get(f"/api/v1/queries/{q['id']}/").status_code == 401
    for user in (sc.outsider, sc.dac[0], sc.checkers[0], sc.custodian, sc.auditor):
        assert sc.c(user).get(f"/api/v1/queries/{q['id']}/").status_code == 404
        assert sc.c(user).post(f"/api/v1/queries/{q['id']}/cancel/").status_code == 404
    assert ok(sc.c(sc.member).get(url))["count"] == 1
    assert sc.c(sc.outsider).get(url).status_code == 404
    assert sc.c(sc.dac[0]).get(url).status_code == 403


def test_a_suspended_project_cannot_run_queries(sc):
    ok(sc.c(sc.dac[0]).post(f"/api/v1/projects/{sc.project['id']}/suspend/", {"comment": "ethics lapsed"}, format="json"))
    r = sc.submit("SELECT count(*) FROM gp_events", codes=(403,))
    assert r["rule"] == "project_not_approved"


def test_access_is_checked_again_when_the_worker_starts(sc):
    query = _query(sc)
    ok(sc.c(sc.dac[0]).post(f"/api/v1/projects/{sc.project['id']}/suspend/", {"comment": "paused"}, format="json"))
    run_query(query_id=query.pk)
    query.refresh_from_db()
    assert query.status == "failed" and query.failure == "access_refused" and "project_not_approved" in query.error_detail
    body = _get(sc, query.pk)
    assert body["error_code"] == "system_error" and "project_not_approved" not in str(body)


def test_engine_errors_never_reach_the_researcher(sc):
    """A valid query cannot fail on the data (total evaluation); if the engine fails anyway the
    researcher sees ``system_error`` and a generic message, checkers and logs the engine's text."""
    query = _query(sc)
    Query.objects.filter(pk=query.pk).update(contributions_sql="SELECT CAST('x' AS INTEGER) AS k")
    run_query(query_id=query.pk)
    body = _get(sc, query.pk)
    assert body["status"] == "failed" and body["error_code"] == "system_error"
    assert body["error"] == "the environment could not finish the query; the operators have been told"
    assert all(body[name] is None for name in NOTHING_BEFORE_RELEASE)
    stored = Query.objects.get(pk=query.pk)
    assert stored.failure == "engine_error" and "Conversion Error" in stored.error_detail, stored.error_detail
    assert "Conversion" not in str(body)


def test_a_dummy_query_answers_at_once_with_everything(sc):
    q = sc.submit_dummy("SELECT region, count(*) AS n, avg(value) AS mean_value FROM gp_events GROUP BY region")
    assert q["status"] == "completed" and q["target"] == "dummy", q
    body = _get(sc, q["id"])
    domain = Query.objects.get(pk=q["id"]).plan["keys"][0]["domain"]
    assert body["result"]["columns"] == ["region", "n", "mean_value"]
    assert [row[0] for row in body["result"]["rows"]] == domain  # the whole grid, sorted by key
    assert sum(row[1] for row in body["result"]["rows"]) > 0  # exact counts of the twin
    assert body["timings"]["total_ms"] >= 0 and body["output"] is None
    assert AuditEvent.objects.filter(action="query.dummy_run", target_id=str(q["id"])).count() == 1
    from outputs.models import Output

    assert not Output.objects.filter(query_id=q["id"]).exists()
    # a dummy run is validated like a real one
    r = sc.c(sc.member).post(f"/api/v1/projects/{sc.project['id']}/queries/",
                             {"sql": "SELECT region, max(value) FROM gp_events GROUP BY region", "target": "dummy"},
                             format="json")
    assert r.status_code == 400


def test_run_query_is_idempotent(sc):
    q = sc.submit("SELECT count(*) FROM gp_events")
    finished = Query.objects.get(pk=q["id"]).finished_at
    assert run_query(query_id=q["id"]) is None
    assert run_query(query_id=q["id"]) is None
    assert Query.objects.get(pk=q["id"]).finished_at == finished
    assert AuditEvent.objects.filter(action="query.completed", target_id=str(q["id"])).count() == 1


def test_cancel_a_queued_query_and_409_once_finished(sc):
    query = _query(sc)
    body = ok(sc.c(sc.member).post(f"/api/v1/queries/{query.pk}/cancel/"))
    assert body["status"] == "cancelled"
    assert run_query(query_id=query.pk) is None  # a late delivery does nothing
    r = sc.c(sc.member).post(f"/api/v1/queries/{query.pk}/cancel/")
    assert r.status_code == 409


def test_an_opt_out_applies_to_the_next_query_at_once(sc):
    sql = "SELECT count(DISTINCT person_id) AS people FROM gp_events"
    from queries.results import read_result

    before = read_result(sc.submit(sql)["id"])[1][0]["n_persons"]
    assert before == len(sc.person_ids())
    victims = sorted({r.nhs_number for r in sc.records})[:3]
    ok(sc.c(sc.custodian).post("/api/v1/opt-outs/", {"nhs_numbers": victims}, format="json"), 202)
    after = read_result(sc.submit(sql)["id"])[1][0]["n_persons"]
    assert after == before - 3


def test_sweeper_resends_queued_queries_the_broker_never_took(sc):
    query = _query(sc)
    Query.objects.filter(pk=query.pk).update(submitted_at=timezone.now() - timedelta(minutes=5))
    assert sweep()["resent"] == [query.pk]
    query.refresh_from_db()
    assert query.status == "completed"


def test_sweeper_bounds_a_running_query_whose_worker_died(sc):
    now = timezone.now()
    query = _query(sc, status="running", started_at=now - timedelta(minutes=2), heartbeat_at=now - timedelta(minutes=2),
                   attempts=2, enqueued_at=now - timedelta(minutes=2))
    result = sweep(now=now)
    query.refresh_from_db()
    assert result["failed"] == [query.pk]
    assert query.status == "failed" and query.failure == "worker_lost" and query.error_code == "system_error"
    assert AuditEvent.objects.filter(action="query.failed", target_id=str(query.pk)).exists()


def test_differencing_against_a_released_output_goes_to_review(client_for, make_user):
    """Release per-region counts, then ask for the same minus one age: the difference of a few
    people between the two would disclose them, so the new output needs a checker's judgement.
    The researcher sees none of it."""
    from outputs.models import Output

    sc = Scenario(client_for, make_user, rows=3000, persons=600)
    first = sc.submit("SELECT region, count(DISTINCT person_id) AS people FROM gp_events GROUP BY region")
    output_id = _get(sc, first["id"])["output"]
    ok(sc.c(sc.member).post(f"/api/v1/outputs/{output_id}/request-release/"))
    for checker in sc.checkers:
        ok(sc.c(checker).post(f"/api/v1/outputs/{output_id}/reviews/", {"decision": "approve", "comment": "fine"}, format="json"))
    # an age whose people, removed, shrink some region's group by 1 to 9 persons (and leave it >= 10)
    persons_by_region = {}
    for r in sc.records:
        persons_by_region.setdefault(r.region, {}).setdefault(r.nhs_number, r.age)
    age = next(a for a in sorted({r.age for r in sc.records})
               if any(1 <= sum(1 for v in people.values() if v == a) <= 9 and len(people) - sum(1 for v in people.values() if v == a) >= 10
                      for people in persons_by_region.values()))
    second = sc.submit(f"SELECT region, count(DISTINCT person_id) AS people FROM gp_events WHERE age <> {age} GROUP BY region")
    new_output = _get(sc, second["id"])["output"]
    stored = Output.objects.get(pk=new_output)
    assert stored.sdc_status == "review" and stored.sdc_summary["differencing"] > 0
    assert stored.differencing and all(1 <= f["difference"] <= 9 for f in stored.differencing)
    member = ok(sc.c(sc.member).get(f"/api/v1/outputs/{new_output}/"))
    assert "sdc" not in member and "differencing" not in str(member)
