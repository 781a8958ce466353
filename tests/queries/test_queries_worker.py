"""Queries end to end through a real Celery worker on the real Redis broker and PostgreSQL."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from queries.models import Query
from queries.services import sweep
from tests.conftest import start_worker, stop_worker, wait_for
from tests.scenario import Scenario, ok
from tre.demo.data import records

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# One person with many rows: the self-join on person_id is allowed by the rules and takes seconds.
SLOW_SQL = "SELECT count(*) AS pairs FROM heavy a JOIN heavy b ON a.person_id = b.person_id"


@pytest.fixture
def sc(client_for, make_user, celery_worker_process):
    scenario = Scenario(client_for, make_user)
    scenario.worker = celery_worker_process
    return scenario


def _heavy(sc, rows=60_000):
    ds = sc.load_dataset("heavy", records(rows, persons=1, seed=11))
    sc.make_agreement([ds["id"]])
    sc.project = sc.make_project([sc.dataset["id"], ds["id"]])
    return ds


def test_query_end_to_end_through_the_worker(sc):
    q = sc.submit("SELECT age_band, count(*) AS n, avg(value) AS mean_value FROM gp_events GROUP BY age_band")
    body = sc.wait_query(q["id"])
    assert body["status"] == "completed", body
    assert body["output"] is not None
    assert "queries.run_query" in sc.worker.log()
    stored = Query.objects.get(pk=q["id"])
    assert stored.timings["queue_wait_ms"] >= 0 and stored.timings["total_ms"] > 0


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
    replacement = start_worker()
    try:
        result = sweep(now=timezone.now() + timedelta(seconds=31))
        assert q["id"] in result["resent"]
        wait_for(lambda: Query.objects.filter(pk=q["id"], attempts=2, status="running").exists(), timeout=30,
                 message="the re-run to start")
        ok(sc.c(sc.member).post(f"/api/v1/queries/{q['id']}/cancel/"))
        assert sc.wait_query(q["id"], timeout=10)["status"] == "cancelled"
    finally:
        stop_worker(replacement)
