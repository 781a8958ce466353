"""Recovery as deployed: real ``celery beat`` sends every periodic task to a real worker, and a
worker SIGKILLed (its whole process group) during a query, a load or an erasure leaves each object
settled within 90 s of the kill once a new worker is up — through beat and the sweepers alone, no
direct call. gunicorn serves the API; the test reads the database to check every object.

To take the kill at a known point of a load or an erasure, the test holds the dataset's row lock
(as a concurrent custodian action would) so the attempt builds its file and then waits at its
commit; the worker dies there."""

import re
import time
from contextlib import contextmanager

import psycopg2
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from audit.models import AuditEvent
from audit.verify import verify_chain
from demo.data import COLUMNS, records, to_csv
from environment.models import Dataset, DatasetVersion, SandboxLease, TaskHeartbeat
from environment.pseudonym import person_id_for
from environment.services import holder_id, optout_status
from outputs.models import Output
from queries.models import Query
from tests.conftest import wait_for
from tests.deployment import RECOVERY_BOUND, Deployment, kill_worker, measured, purge, scheduling_errors
from tests.scenario import Scenario, ok

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SLOW_SQL = "SELECT count(*) AS pairs FROM heavy a JOIN heavy_b b ON a.person_id = b.person_id"  # one person: every pair of rows
HEAVY_ROWS = 4_000  # one person: the self-join runs for a few seconds


@pytest.fixture
def deployed(transactional_db):
    """gunicorn, a worker and beat on the suite's broker; ``deployed.w`` is the current worker."""
    purge(settings.CELERY_BROKER_URL)
    deployment = Deployment(settings.CELERY_BROKER_URL).start()
    yield deployment
    deployment.stop()


def actions(target_type, target_id) -> list[str]:
    return list(AuditEvent.objects.filter(target_type=target_type, target_id=str(target_id))
                .order_by("seq").values_list("action", flat=True))


def _pg():
    db = connection.settings_dict
    return psycopg2.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                            password=db["PASSWORD"] or None, dbname=db["NAME"])


@contextmanager
def dataset_row_locked(dataset_id):
    """Hold the dataset's row lock on a connection of our own until the block ends."""
    conn = _pg()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT id FROM environment_dataset WHERE id = %s FOR UPDATE", [dataset_id])
        yield
    finally:
        conn.rollback()
        conn.close()


def _a_backend_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def _dead_leases():
    mine = holder_id().rpartition(":")[0]
    leases = [lease for lease in SandboxLease.objects.all() if lease.holder.rpartition(":")[0] == mine]
    return [lease for lease in leases if not _alive(int(lease.holder.rpartition(":")[2]))]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- beat ---------------------------------------------------------------------------------------

def test_beat_sends_every_periodic_task_and_a_worker_runs_each(transactional_db):
    from tre.celery import _collect_beat_schedule, app

    purge(settings.CELERY_BROKER_URL)
    deployment = Deployment(settings.CELERY_BROKER_URL, TRE_BEAT_INTERVAL="2")
    try:
        worker = deployment.worker()
        beat = deployment.beat()
        _collect_beat_schedule(app)
        entries = {name: entry["task"] for name, entry in app.conf.beat_schedule.items()}
        assert len(entries) >= 5

        def every_entry_ran():
            sent, ran = beat.log(), worker.log()
            return all(f"Sending due task {name} ({task})" in sent and re.search(rf"Task {re.escape(task)}\[[^\]]+\] succeeded", ran)
                       for name, task in entries.items())

        wait_for(every_entry_ran, timeout=60, interval=0.5, message=f"every beat entry to be sent and run: {sorted(entries)}")
        assert scheduling_errors(beat.log()) == []
        assert "raised unexpected" not in worker.log()
    finally:
        deployment.stop()


# --- a worker SIGKILLed ---------------------------------------------------------------------------

def test_a_worker_killed_during_a_query_leaves_it_completed_by_a_rerun(deployed, make_user):
    sc = Scenario(deployed.client, make_user)
    heavy = sc.load_dataset("heavy", records(HEAVY_ROWS, persons=1, seed=11))
    heavy_b = sc.load_dataset("heavy_b", records(HEAVY_ROWS, persons=1, seed=11))
    sc.make_agreement([heavy["id"], heavy_b["id"]])
    sc.project = sc.make_project([sc.dataset["id"], heavy["id"], heavy_b["id"]])
    submitted = sc.submit(SLOW_SQL)
    sc.wait_query(submitted["id"], statuses=("running",), timeout=30)
    kill_worker(deployed.w)
    killed = time.monotonic()
    query = Query.objects.get(pk=submitted["id"])
    assert (query.status, query.attempts) == ("running", 1)  # killed mid-run: nothing else will end it
    deployed.w = deployed.worker()
    done = sc.wait_query(submitted["id"], timeout=RECOVERY_BOUND)
    took = time.monotonic() - killed
    assert done["status"] == "completed", done
    query.refresh_from_db()
    assert query.attempts == 2
    assert actions("query", query.pk) == ["query.submitted", "query.started", "query.requeued", "query.started",
                                          "query.completed"]
    assert Output.objects.filter(query=query).count() == 1
    assert Output.objects.get(query=query).raw == [[HEAVY_ROWS * HEAVY_ROWS, 1]]  # the same answer as an undisturbed run
    assert Query.objects.filter(project_id=sc.project["id"]).count() == 1  # no duplicate query
    assert _dead_leases() == []
    assert verify_chain().valid
    measured("worker SIGKILL during a query -> completed", took)


def _custodian_dataset(deployed, make_user, name="big_events"):
    custodian = make_user("cara_custodian", role="custodian", organisation="NHS Data Trust")
    client = deployed.client(custodian)
    ds = ok(client.post("/api/v1/datasets/", {"name": name, "title": "Big events", "identifier_column": "nhs_number",
                                              "columns": COLUMNS}, format="json"), 201)
    return client, ds


def _upload(client, dataset_id, content):
    return ok(client.post(f"/api/v1/datasets/{dataset_id}/versions/",
                          {"file": SimpleUploadedFile("data.csv", content, "text/csv")}, format="multipart"), 202)


def test_a_worker_killed_during_a_load_leaves_the_version_loaded_once(deployed, make_user):
    rows = list(records(100_000, seed=5))
    client, ds = _custodian_dataset(deployed, make_user)
    version_id = _upload(client, ds["id"], to_csv(rows))["version"]  # the upload itself takes the row lock
    with dataset_row_locked(ds["id"]):  # taken within ms of the 202; the load takes seconds, then waits at its commit
        wait_for(_a_backend_waits_for_a_lock, timeout=60, interval=0.05, message="the load to reach its commit")
        assert TaskHeartbeat.objects.filter(kind="load", key=version_id).exists()
        kill_worker(deployed.w)
        killed = time.monotonic()
    version = DatasetVersion.objects.get(pk=version_id)
    assert (version.status, version.attempts) == ("loading", 1)
    deployed.w = deployed.worker()
    wait_for(lambda: DatasetVersion.objects.filter(pk=version_id).exclude(status="loading").exists(),
             timeout=RECOVERY_BOUND, interval=0.2, message="the load to finish")
    took = time.monotonic() - killed
    version.refresh_from_db()
    assert (version.status, version.attempts, version.row_count, version.person_count) == ("ready", 2, 100_000, 10_000)
    assert list(DatasetVersion.objects.filter(dataset_id=ds["id"]).values_list("pk", flat=True)) == [version_id]
    assert Dataset.objects.get(pk=ds["id"]).current_version_id == version_id
    assert [a for a in actions("dataset", ds["id"]) if a.startswith("dataset.version")] == [
        "dataset.version_uploaded", "dataset.version_requeued", "dataset.version_ready"]  # the load's own events
    wait_for(lambda: not TaskHeartbeat.objects.exists(), timeout=10, message="the attempt's heartbeat to go")  # just after its commit
    assert verify_chain().valid
    measured("worker SIGKILL during a load -> ready", took)


def test_a_worker_killed_during_an_erasure_leaves_the_person_erased_once(deployed, make_user):
    rows = list(records(100_000, seed=5))
    victim = rows[0].nhs_number
    victim_rows = sum(1 for r in rows if r.nhs_number == victim)
    client, ds = _custodian_dataset(deployed, make_user)
    loaded = _upload(client, ds["id"], to_csv(rows))["version"]
    wait_for(lambda: DatasetVersion.objects.filter(pk=loaded, status="ready").exists(), timeout=60, interval=0.2,
             message="the load")
    wait_for(lambda: Dataset.objects.filter(pk=ds["id"], current_twin__isnull=False).exists(), timeout=60,
             interval=0.2, message="the dummy twin that follows a first load")  # it, too, takes the dataset row
    with dataset_row_locked(ds["id"]):  # the erasure writes its new file, then waits at its commit
        ok(client.post("/api/v1/opt-outs/", {"nhs_numbers": [victim]}, format="json"), 202)
        wait_for(lambda: TaskHeartbeat.objects.filter(kind="erasure").exists() and _a_backend_waits_for_a_lock(),
                 timeout=60, interval=0.05, message="the erasure to reach its commit")
        kill_worker(deployed.w)
        killed = time.monotonic()
    assert optout_status()["pending_erasure"] == 1
    deployed.w = deployed.worker()
    wait_for(lambda: optout_status()["pending_erasure"] == 0, timeout=RECOVERY_BOUND, interval=0.2,
             message="the erasure to finish")
    took = time.monotonic() - killed
    current = Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version
    assert (current.origin, current.row_count, current.person_count, current.rows_removed) == (
        "erasure", 100_000 - victim_rows, 9_999, victim_rows)
    assert DatasetVersion.objects.filter(dataset_id=ds["id"]).count() == 2  # the upload and one erasure, not two
    assert AuditEvent.objects.filter(action="optout.erasure_requeued").count() == 1
    assert actions("dataset", ds["id"])[-1:] == ["dataset.erased"]
    assert AuditEvent.objects.filter(action="dataset.erased").count() == 1
    wait_for(lambda: not TaskHeartbeat.objects.exists(), timeout=10, message="the attempt's heartbeat to go")  # just after its commit
    from environment.sandbox import open_sandbox

    with open_sandbox([ds["id"]]) as sandbox:
        found = sandbox.conn.execute("SELECT count(*) FROM big_events WHERE person_id = ?", [person_id_for(victim)]).fetchall()
    assert found == [(0,)]
    assert verify_chain().valid
    measured("worker SIGKILL during an erasure -> erased", took)
