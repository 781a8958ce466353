"""Bad luck, for real: Redis stopped during submissions, PostgreSQL restarted during a worker's run.
Each test stops a real service and restores it (by its own process id or its service command)."""

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from demo.data import records
from queries.models import Query
from queries.services import ENQUEUE_GRACE, sweep
from tests.conftest import wait_for
from tests.scenario import Scenario

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# one person with many rows in two datasets: the join on person_id reads every pair of their rows
SLOW_SQL = "SELECT count(*) AS pairs FROM heavy a JOIN heavy_b b ON a.person_id = b.person_id"


# --- Redis -------------------------------------------------------------------------------------

def _redis():
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=2)


@contextmanager
def redis_stopped():
    """Stop the running Redis by its process id; start it again with the settings it ran with."""
    client = _redis()
    info = client.info("server")
    config = {k: v for k, v in client.config_get("*").items() if k in ("bind", "port", "dir", "logfile", "save", "appendonly")}
    pid = info["process_id"]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, message="Redis to stop")
    try:
        yield
    finally:
        command = ["redis-server", "--daemonize", "yes", "--port", str(config.get("port", 6379)),
                   "--save", config.get("save", ""), "--appendonly", config.get("appendonly", "no")]
        if config.get("bind"):
            command += ["--bind", *config["bind"].split()]
        if config.get("dir"):
            command += ["--dir", config["dir"]]
        if config.get("logfile"):
            command += ["--logfile", config["logfile"]]
        subprocess.run(command, check=True, timeout=30)
        wait_for(lambda: _ping(), timeout=30, message="Redis to come back")


def _ping():
    try:
        return _redis().ping()
    except redis.RedisError:
        return False


def test_redis_down_reads_answer_submissions_are_kept_and_run_once_it_is_back(client_for, make_user, celery_worker_process):
    sc = Scenario(client_for, make_user)
    member = sc.c(sc.member)
    with redis_stopped():
        started = time.monotonic()
        health = sc.c(sc.member).get("/healthz")
        assert health.status_code == 503 and health.json()["broker"] == "unreachable"
        assert time.monotonic() - started < 3
        for path in ("/api/v1/me/", f"/api/v1/projects/{sc.project['id']}/", f"/api/v1/projects/{sc.project['id']}/queries/",
                     "/api/v1/outputs/", "/api/v1/register/"):
            assert member.get(path).status_code == 200, path
        started = time.monotonic()
        submitted = sc.submit("SELECT region, count(*) AS n FROM gp_events GROUP BY region")
        assert time.monotonic() - started < 5, "a submission must not hang while the broker is down"
        query = Query.objects.get(pk=submitted["id"])
        assert query.status == "queued" and query.enqueued_at is None  # kept, not lost
    # Redis is back: the beat sweeper sends what the broker never took, and the worker runs it
    later = timezone.now() + ENQUEUE_GRACE * 2  # as the beat sweeper would see it a little later
    wait_for(lambda: query.pk in sweep(now=later)["resent"], timeout=30, message="the sweeper to re-send the query")
    done = sc.wait_query(query.pk, timeout=60)
    assert done["status"] == "completed", done
    assert Query.objects.filter(project_id=sc.project["id"]).count() == 1  # run once, not duplicated


# --- PostgreSQL ------------------------------------------------------------------------------

def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def _restart_postgres():
    """The service command; the suite's own connections are closed and reopen on next use."""
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "restart", "-m", "fast"],
                   check=True, timeout=120, capture_output=True)
    connection.close()
    wait_for(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0, timeout=60,
             message="PostgreSQL to accept connections")


def test_postgres_restart_during_a_run_is_retried_or_reported(client_for, make_user, celery_worker_process):
    sc = Scenario(client_for, make_user)
    heavy = sc.load_dataset("heavy", records(8_000, persons=1, seed=11))
    heavy_b = sc.load_dataset("heavy_b", records(8_000, persons=1, seed=11))
    sc.make_agreement([heavy["id"], heavy_b["id"]])
    sc.project = sc.make_project([sc.dataset["id"], heavy["id"], heavy_b["id"]])
    submitted = sc.submit(SLOW_SQL)
    sc.wait_query(submitted["id"], statuses=("running",), timeout=30)
    _restart_postgres()
    done = wait_for(lambda: _finished(submitted["id"]), timeout=180, interval=0.5, message="the query to finish after the restart")
    assert done.status in ("completed", "failed"), done.status
    if done.status == "failed":
        assert done.error_code and done.error  # reported, with a generic message
    # completed: the worker reconnected (health check) or its task was retried and resumed its attempt


def _finished(query_id):
    try:
        query = Query.objects.get(pk=query_id)
    except Exception:
        connection.close()
        return None
    return query if query.status in ("completed", "failed", "cancelled") else None
