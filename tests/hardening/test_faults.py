"""Bad luck, for real, with the processes as deployed (gunicorn, a Celery worker, celery beat):
Redis stopped during submissions and started again, PostgreSQL gone during a run, beat restarted.
Recovery goes through beat and the sweepers only, never a direct call.

The machine is shared, so each fault is confined to what the test owns: the test starts its own
redis-server on a spare port and stops that one; PostgreSQL "restarts" for the test database only
(every connection to it terminated and new ones refused for a few seconds, as during a restart),
never the whole cluster."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
import redis
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from audit.verify import verify_chain
from demo.data import records
from outputs.models import Output
from queries.models import Query
from tests.conftest import wait_for
from tests.deployment import (
    RECOVERY_BOUND,
    STALE_SECONDS,
    SWEEP_INTERVAL,
    Deployment,
    kill_worker,
    measured,
    purge,
    scheduling_errors,
)
from tests.scenario import Scenario

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SLOW_SQL = "SELECT count(*) AS pairs FROM heavy a JOIN heavy_b b ON a.person_id = b.person_id"  # one person: every pair of rows
HEAVY_ROWS = 4_000
REGION_SQL = "SELECT region, count(*) AS n FROM gp_events GROUP BY region"


def query_actions(query_id) -> list[str]:
    return list(AuditEvent.objects.filter(target_type="query", target_id=str(query_id))
                .order_by("seq").values_list("action", flat=True))


def _heavy_project(sc):
    heavy = sc.load_dataset("heavy", records(HEAVY_ROWS, persons=1, seed=11))
    heavy_b = sc.load_dataset("heavy_b", records(HEAVY_ROWS, persons=1, seed=11))
    sc.make_agreement([heavy["id"], heavy_b["id"]])
    sc.project = sc.make_project([sc.dataset["id"], heavy["id"], heavy_b["id"]])


# --- Redis: our own server ------------------------------------------------------------------------

def _spare_port(start=6390, end=6490) -> int:
    for port in range(start, end):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no spare port for a test Redis")


class OwnRedis:
    """A redis-server of this test's own (never the shared one), stopped and started at will."""

    def __init__(self):
        self.port, self.dir = _spare_port(), Path(tempfile.mkdtemp(prefix="tre-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port),
                        "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                        "--pidfile", str(self.dir / "redis.pid"), "--logfile", str(self.dir / "redis.log")],
                       check=True, timeout=30)
        wait_for(self.ping, timeout=30, message="our Redis to answer")

    def stop(self):
        pid_file = self.dir / "redis.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, message="our Redis to stop")

    def ping(self):
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2).ping()
        except redis.RedisError:
            return False


@contextmanager
def own_redis():
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_stopped_during_submissions_keeps_them_and_runs_each_once_it_is_back(transactional_db, make_user):
    with own_redis() as broker:
        deployment = Deployment(broker.url).start()
        try:
            sc = Scenario(deployment.client, make_user)
            before = sc.wait_query(sc.submit(REGION_SQL)["id"])
            assert before["status"] == "completed"
            member = deployment.client(sc.member)
            broker.stop()
            started = time.monotonic()
            health = member.get("/healthz")
            assert (health.status_code, health.json()["broker"]) == (503, "unreachable")
            assert time.monotonic() - started < 3
            for path in ("/api/v1/me/", f"/api/v1/projects/{sc.project['id']}/queries/", "/api/v1/outputs/"):
                assert member.get(path).status_code == 200, path
            kept = []
            for _ in range(3):
                started = time.monotonic()
                kept.append(sc.submit(REGION_SQL)["id"])
                assert time.monotonic() - started < 5, "a submission must not hang while the broker is down"
            assert [(q.status, q.enqueued_at) for q in Query.objects.filter(pk__in=kept)] == [("queued", None)] * 3
            broker.start()
            restarted = time.monotonic()
            done = [sc.wait_query(pk, timeout=RECOVERY_BOUND) for pk in kept]
            took = time.monotonic() - restarted
        finally:
            deployment.stop()
    assert [q["status"] for q in done] == ["completed"] * 3
    for pk in kept:  # each run exactly once, to the same answer as the one before the outage
        assert query_actions(pk) == ["query.submitted", "query.started", "query.completed"]
        again, first = Output.objects.get(query_id=pk), Output.objects.get(query_id=before["id"])
        assert (again.raw, again.safe) == (first.raw, first.safe)  # the same grid, the same perturbation
    assert Query.objects.filter(project_id=sc.project["id"]).count() == 4
    assert Output.objects.filter(query__project_id=sc.project["id"]).count() == 4
    assert verify_chain().valid
    measured("Redis stopped during submissions, started again -> all 3 completed", took)


# --- PostgreSQL: the test database goes away and comes back ---------------------------------------

@contextmanager
def database_down():
    """Every connection to the test database terminated and new ones refused until the block ends —
    what a PostgreSQL restart looks like to the processes, without touching other databases."""
    db = connection.settings_dict
    admin = psycopg2.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             password=db["PASSWORD"] or None, dbname="postgres")
    admin.autocommit = True
    name = db["NAME"]
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid()", [name])
        connection.close()
        yield
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()
        connection.close()


def test_postgres_restarted_during_a_run_completes_the_query_once(transactional_db, make_user):
    purge(settings.CELERY_BROKER_URL)
    deployment = Deployment(settings.CELERY_BROKER_URL).start()
    try:
        sc = Scenario(deployment.client, make_user)
        _heavy_project(sc)
        submitted = sc.submit(SLOW_SQL)
        sc.wait_query(submitted["id"], statuses=("running",), timeout=30)
        anyone = deployment.client()
        with database_down():
            health = anyone.get("/healthz")
            assert health.status_code == 503 and health.json()["database"] != "ok"
            time.sleep(4)
        back = time.monotonic()
        done = sc.wait_query(submitted["id"], timeout=RECOVERY_BOUND)
        took = time.monotonic() - back
    finally:
        deployment.stop()
    assert done["status"] == "completed", done
    actions = query_actions(submitted["id"])
    assert actions[0] == "query.submitted" and actions[-1] == "query.completed"
    assert actions.count("query.completed") == 1 and "query.failed" not in actions
    assert Output.objects.filter(query_id=submitted["id"]).count() == 1
    assert Output.objects.get(query_id=submitted["id"]).raw == [[HEAVY_ROWS * HEAVY_ROWS, 1]]  # exact: pairs, contributors
    assert verify_chain().valid
    measured(f"PostgreSQL gone for 4 s during a run -> completed (from its return; {actions})", took)


# --- beat restarted --------------------------------------------------------------------------------

def test_beat_restarted_resumes_the_sweepers_and_recovers_what_died_meanwhile(transactional_db, make_user):
    purge(settings.CELERY_BROKER_URL)
    deployment = Deployment(settings.CELERY_BROKER_URL).start()
    try:
        sc = Scenario(deployment.client, make_user)
        _heavy_project(sc)
        deployment.b.kill()  # beat dies (SIGKILL) ...
        submitted = sc.submit(SLOW_SQL)
        sc.wait_query(submitted["id"], statuses=("running",), timeout=30)
        kill_worker(deployment.w)  # ... and, while it is down, so does the worker running a query
        deployment.w = deployment.worker()
        time.sleep(STALE_SECONDS + SWEEP_INTERVAL + 1)  # a sweep would have re-sent it by now
        query = Query.objects.get(pk=submitted["id"])
        assert (query.status, query.attempts) == ("running", 1)  # only beat's sweeper recovers it
        deployment.b = deployment.beat()  # the same schedule file as before the kill
        restarted = time.monotonic()
        done = sc.wait_query(submitted["id"], timeout=RECOVERY_BOUND)
        took = time.monotonic() - restarted
        beat_log = deployment.b.log()
    finally:
        deployment.stop()
    assert done["status"] == "completed", done
    assert query_actions(submitted["id"]) == ["query.submitted", "query.started", "query.requeued", "query.started",
                                              "query.completed"]
    assert Output.objects.filter(query_id=submitted["id"]).count() == 1
    assert Output.objects.get(query_id=submitted["id"]).raw == [[HEAVY_ROWS * HEAVY_ROWS, 1]]  # exact: pairs, contributors
    assert "Sending due task queries-sweep (queries.sweep)" in beat_log
    assert scheduling_errors(beat_log) == []
    assert verify_chain().valid
    measured("beat restarted -> the query its absence left running completed", took)
