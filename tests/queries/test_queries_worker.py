"""Queries end to end through a real Celery worker on the real Redis broker and PostgreSQL."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from demo.data import records
from queries.models import Query
from queries.services import sweep
from tests.conftest import start_worker, stop_worker, wait_for
from tests.scenario import Scenario, ok

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# One person with many rows in two datasets: the join on person_id is allowed by the rules and
# takes far longer than the tests wait (every joined row is read).
SLOW_SQL = "SELECT count(*) AS pairs FROM heavy a JOIN heavy_b b ON a.person_id = b.person_id"


@pytest.fixture
def sc(client_for, make_user, celery_worker_process):
    scenario = Scenario(client_for, make_user)
    scenario.worker = celery_worker_process
    return scenario


def _alive(holder: str) -> bool:
    pid = int(holder.rpartition(":")[2])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _heavy(sc, rows=30_000):
    ds = sc.load_dataset("heavy", records(rows, persons=1, seed=11))
    other = sc.load_dataset("heavy_b", records(rows, persons=1, seed=11))
    sc.make_agreement([ds["id"], other["id"]])
    sc.project = sc.make_project([sc.dataset["id"], ds["id"], other["id"]])
    return ds


E2E_SQL = "SELECT age_band, count(*) AS n, avg(value) AS mean_value FROM gp_events GROUP BY age_band"


def _release(sc, output):
    ok(sc.c(sc.member).post(f"/api/v1/outputs/{output}/request-release/"))
    for checker in sc.checkers:
        ok(sc.c(checker).post(f"/api/v1/outputs/{output}/reviews/", {"decision": "approve", "comment": "safe"},
                              format="json"))


def test_query_to_download_end_to_end_through_the_worker(sc):
    q = sc.submit(E2E_SQL)
    body = sc.wait_query(q["id"])
    assert body["status"] == "completed", body
    assert "queries.run_query" in sc.worker.log()
    # nothing data-dependent for the researcher before release
    assert body["result"] is None and body["timings"] is None and body["started_at"] is None and body["error"] == ""
    stored = Query.objects.get(pk=q["id"])
    assert stored.timings["queue_wait_ms"] >= 0 and stored.timings["total_ms"] > 0
    output = body["output"]
    member = sc.c(sc.member)
    pending = ok(member.get(f"/api/v1/outputs/{output}/"))
    assert pending["columns"] == ["age_band", "n", "mean_value"]
    assert "sdc" not in pending and "safe" not in pending and "raw" not in pending
    _release(sc, output)
    checker = ok(sc.c(sc.checkers[0]).get(f"/api/v1/outputs/{output}/"))
    assert checker["columns"] == ["age_band", "n", "mean_value", "contributors"]
    domain = stored.plan["keys"][0]["domain"]
    assert [row[0] for row in checker["raw"]] == domain == sorted(domain)  # the full grid, sorted by key
    csv_text = ok(member.get(f"/api/v1/outputs/{output}/download/?file_format=csv"))
    lines = csv_text.splitlines()
    assert lines[0] == "age_band,n,mean_value"  # a header row, then data: no comment lines, no contributors
    assert len(lines) == 1 + len(domain) and not any(line.startswith("#") for line in lines)
    released = ok(member.get(f"/api/v1/outputs/{output}/download/?file_format=json"))
    assert [row[0] for row in released["rows"]] == domain
    assert released["rows"] == checker["safe"]
    assert released["metadata"]["sdc_rules"]["threshold"] == 10
    # a re-run of the same query gives the same released table (the perturbation is deterministic)
    again = sc.wait_query(sc.submit(E2E_SQL)["id"])
    _release(sc, again["output"])
    assert ok(member.get(f"/api/v1/outputs/{again['output']}/download/?file_format=json"))["rows"] == released["rows"]


def test_no_released_output_includes_an_opted_out_person(sc):
    """An opt-out registered after a query ran, before its output was released: the output goes
    stale (it cannot be released), the query re-runs without the person, and every released
    output's stored person sets exclude them."""
    from outputs.models import Output, ReleasedPersonSets
    from queries.personsets import deserialize_sets, person_key

    sql = "SELECT region, count(DISTINCT person_id) AS people FROM gp_events GROUP BY region"
    first = sc.wait_query(sc.submit(sql)["id"])
    ok(sc.c(sc.member).post(f"/api/v1/outputs/{first['output']}/request-release/"))
    victims = sorted({r.nhs_number for r in sc.records})[:4]
    ok(sc.c(sc.custodian).post("/api/v1/opt-outs/", {"nhs_numbers": victims}, format="json"), 202)
    stale = wait_for(lambda: Output.objects.filter(pk=first["output"], status="stale").first(), timeout=30,
                     message="the output to go stale")
    r = sc.c(sc.checkers[0]).post(f"/api/v1/outputs/{stale.pk}/reviews/", {"decision": "approve", "comment": "x"}, format="json")
    assert r.status_code == 409 and r.json()["status"] == "stale", r.content  # out of the checkers' hands
    rerun = wait_for(lambda: Query.objects.filter(rerun_of_id=first["id"], status="completed").first(), timeout=60,
                     message="the re-run to complete")
    new_output = rerun.output
    ok(sc.c(sc.member).post(f"/api/v1/outputs/{new_output.pk}/request-release/"))
    for checker in sc.checkers:
        ok(sc.c(checker).post(f"/api/v1/outputs/{new_output.pk}/reviews/", {"decision": "approve", "comment": "ok"}, format="json"))
    assert Output.objects.get(pk=new_output.pk).status == "released"
    from environment.pseudonym import person_id_for

    opted_out = {person_key(person_id_for(n)) for n in victims}
    released = ReleasedPersonSets.objects.filter(project_id=sc.project["id"])
    assert released.exists()
    for row in released:
        for persons in deserialize_sets(bytes(row.blob)).values():
            assert not opted_out & set(persons)


def test_cancel_interrupts_a_running_query_within_two_seconds(sc):
    _heavy(sc)
    q = sc.submit(SLOW_SQL)
    sc.wait_query(q["id"], statuses=("running",), timeout=30)
    time.sleep(0.5)
    started = time.monotonic()
    body = ok(sc.c(sc.member).post(f"/api/v1/queries/{q['id']}/cancel/"))
    if body["status"] != "cancelled":
        body = sc.wait_query(q["id"], timeout=5)
    elapsed = time.monotonic() - started
    assert body["status"] == "cancelled", body
    assert elapsed < 2.0, f"cancel took {elapsed:.2f}s"


def test_a_killed_worker_leaves_the_query_rerun_or_failed_never_running(sc):
    _heavy(sc)
    q = sc.submit(SLOW_SQL)
    sc.wait_query(q["id"], statuses=("running",), timeout=30)
    os.killpg(sc.worker.proc.pid, signal.SIGKILL)  # the whole worker, parent and pool, without warning
    sc.worker.proc.wait(timeout=10)
    query = Query.objects.get(pk=q["id"])
    assert query.status == "running" and query.attempts == 1
    # a new worker comes up; the sweeper (beat) sees the heartbeat has stopped and sends it again
    from environment.models import SandboxLease
    from environment.store import root

    def dead_sandboxes():
        return [d for d in (root() / "sandboxes").iterdir() if (d / "holder").exists()] if (root() / "sandboxes").exists() else []

    assert dead_sandboxes() and SandboxLease.objects.exists()  # the killed attempt left its sandbox behind
    replacement = start_worker()
    try:
        result = sweep(now=timezone.now() + timedelta(seconds=31))
        assert q["id"] in result["resent"]
        # ... and the sweeper reaped it at once: no sandbox or lease of the dead process remains
        assert not [d for d in dead_sandboxes() if not _alive((d / "holder").read_text())]
        assert not [lease for lease in SandboxLease.objects.all() if not _alive(lease.holder)]
        wait_for(lambda: Query.objects.filter(pk=q["id"], attempts=2, status="running").exists(), timeout=30,
                 message="the re-run to start")
        ok(sc.c(sc.member).post(f"/api/v1/queries/{q['id']}/cancel/"))
        assert sc.wait_query(q["id"], timeout=10)["status"] == "cancelled"
    finally:
        stop_worker(replacement)
