"""The heartbeat sweeper of loads and erasures (environment.recovery), in-process.

A dead attempt is a heartbeat row that stopped moving; the end-to-end tests with a SIGKILLed worker
are in tests/hardening/test_recovery.py."""

from datetime import timedelta

from django.utils import timezone

from audit.models import AuditEvent
from audit.verify import verify_chain
from environment import recovery
from environment.models import Dataset, DatasetVersion, TaskHeartbeat
from environment.pseudonym import make_nhs_number
from environment.services import optout_status, optouts_register
from tests.environment.conftest import csv_bytes, incoming_files, row, upload


def _dead(kind, key=0, attempts=1):
    long_ago = timezone.now() - recovery.heartbeat_stale() - timedelta(seconds=5)
    return TaskHeartbeat.objects.create(kind=kind, key=key, holder="elsewhere:1", task_id="t-dead", attempts=attempts,
                                        started_at=long_ago, beat_at=long_ago)


def _actions():
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def _lost_upload(create_dataset, as_custodian, rows=5):
    """An upload whose load a worker started and then died in (the message is not redelivered)."""
    ds = create_dataset()
    version_id = upload(as_custodian, ds["id"], csv_bytes([row(i) for i in range(rows)])).json()["version"]
    DatasetVersion.objects.filter(pk=version_id).update(attempts=1, started_at=timezone.now() - timedelta(minutes=1))
    return ds, version_id


def test_a_load_whose_worker_died_is_sent_again_and_loads_once(create_dataset, as_custodian,
                                                               django_capture_on_commit_callbacks):
    ds, version_id = _lost_upload(create_dataset, as_custodian)
    _dead(TaskHeartbeat.Kind.LOAD, version_id)
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.sweep() == {"loads_resent": [version_id], "loads_failed": [], "erasure_resent": False}
    version = DatasetVersion.objects.get(pk=version_id)
    assert (version.status, version.attempts, version.row_count) == ("ready", 2, 5)
    assert Dataset.objects.get(pk=ds["id"]).current_version_id == version_id
    assert not TaskHeartbeat.objects.exists() and incoming_files() == []
    # (the first load completes the dictionary: a new dictionary version and its twin follow)
    assert _actions()[-4:] == ["dataset.version_requeued", "dataset.version_ready", "dataset.dictionary_changed",
                               "dataset.twin_generated"]
    requeued = AuditEvent.objects.get(action="dataset.version_requeued")
    assert requeued.data == {"version": 1, "version_id": version_id, "attempts": 1, "by": "sweeper"}
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.sweep() == {"loads_resent": [], "loads_failed": [], "erasure_resent": False}
    assert verify_chain().valid


def test_a_load_that_died_too_often_is_failed_with_a_reason(create_dataset, as_custodian,
                                                            django_capture_on_commit_callbacks):
    ds, version_id = _lost_upload(create_dataset, as_custodian)
    DatasetVersion.objects.filter(pk=version_id).update(attempts=recovery.MAX_LOAD_ATTEMPTS)
    _dead(TaskHeartbeat.Kind.LOAD, version_id, attempts=recovery.MAX_LOAD_ATTEMPTS)
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.sweep() == {"loads_resent": [], "loads_failed": [version_id], "erasure_resent": False}
    version = DatasetVersion.objects.get(pk=version_id)
    assert (version.status, version.error_count, version.file_path) == ("failed", 1, "")
    assert "its worker died" in version.errors[0]["reason"]
    assert Dataset.objects.get(pk=ds["id"]).current_version_id is None
    assert not TaskHeartbeat.objects.exists() and incoming_files() == []
    assert _actions()[-1] == "dataset.version_failed"


def test_a_delivery_while_a_live_attempt_holds_the_load_does_nothing(create_dataset, as_custodian,
                                                                    django_capture_on_commit_callbacks):
    from environment.tasks import ingest_version

    ds, version_id = _lost_upload(create_dataset, as_custodian)
    now = timezone.now()
    TaskHeartbeat.objects.create(kind="load", key=version_id, holder="elsewhere:1", attempts=1, started_at=now, beat_at=now)
    ingest_version.delay(version_id)  # e.g. the dead message redelivered while the re-sent one runs
    version = DatasetVersion.objects.get(pk=version_id)
    assert (version.status, version.attempts) == ("loading", 1)
    assert recovery.sweep() == {"loads_resent": [], "loads_failed": [], "erasure_resent": False}  # alive: left alone
    assert TaskHeartbeat.objects.get().holder == "elsewhere:1"


def test_an_erasure_whose_worker_died_is_sent_again(create_dataset, load, custodian, django_capture_on_commit_callbacks):
    ds = create_dataset()
    load(ds["id"], csv_bytes([row(i) for i in range(10)]))
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(3)])  # on_commit not run: as if it died
    _dead(TaskHeartbeat.Kind.ERASURE)
    assert optout_status()["pending_erasure"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.sweep() == {"loads_resent": [], "loads_failed": [], "erasure_resent": True}
    current = Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version
    assert (current.origin, current.row_count) == ("erasure", 9)
    assert optout_status()["pending_erasure"] == 0 and not TaskHeartbeat.objects.exists()
    assert _actions()[-2:] == ["optout.erasure_requeued", "dataset.erased"]
    assert AuditEvent.objects.get(action="optout.erasure_requeued").data == {"attempts": 1, "by": "sweeper"}


def test_a_dead_erasure_with_nothing_left_to_erase_is_only_forgotten(create_dataset, load,
                                                                     django_capture_on_commit_callbacks):
    ds = create_dataset()
    load(ds["id"], csv_bytes([row(i) for i in range(3)]))
    _dead(TaskHeartbeat.Kind.ERASURE)
    before = AuditEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.sweep() == {"loads_resent": [], "loads_failed": [], "erasure_resent": False}
    assert not TaskHeartbeat.objects.exists() and AuditEvent.objects.count() == before


def test_an_attempt_removes_its_heartbeat_however_it_ends(db):
    import pytest

    with pytest.raises(RuntimeError), recovery.attempt(TaskHeartbeat.Kind.ERASURE, task_id="t1") as mine:
        assert mine is True
        beat = TaskHeartbeat.objects.get()
        assert (beat.kind, beat.key, beat.task_id, beat.attempts) == ("erasure", 0, "t1", 1)
        raise RuntimeError("the body failed")
    assert not TaskHeartbeat.objects.exists()
