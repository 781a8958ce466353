"""Recovery of loads and erasures whose worker died (docs/operations.md, "What recovers, how fast").

A load or an erasure runs inside ``attempt(kind, key)``: it claims one ``TaskHeartbeat`` row (a
second delivery while the first is alive does nothing) and a side thread moves ``beat_at`` every
few seconds. A worker killed outright (SIGKILL, the OOM killer, a lost machine) acknowledges
nothing, and the Redis transport redelivers its message only after the visibility timeout (longer
than a load may run, so a running load is never delivered twice). ``sweep`` — on beat every
``TRE_SWEEP_INTERVAL`` seconds — finds the heartbeats older than ``TRE_HEARTBEAT_STALE_SECONDS``
and sends the work again at once: a load is re-run from its upload (failed after
``MAX_LOAD_ATTEMPTS``), an erasure is re-run while any opt-out is still to be applied. Both are
idempotent, so the late redelivery of the dead worker's message finds nothing left to do.
"""

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.services import audit_record

from . import services, store
from .models import Dataset, DatasetVersion, TaskHeartbeat

log = logging.getLogger(__name__)

MAX_LOAD_ATTEMPTS = 3  # as sweep_stuck_loads: a load whose worker died three times is failed
ERASURE_KEY = 0


def heartbeat_stale() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "TRE_HEARTBEAT_STALE_SECONDS", 30)))


def heartbeat_every() -> float:
    """Seconds between beats: several per stale period, at most one every 5 s."""
    return max(0.5, min(5.0, heartbeat_stale().total_seconds() / 6))


class _Beat(threading.Thread):
    """Moves one heartbeat on its own database connection until stopped; a database that is
    restarting costs a missed beat or two, not the attempt."""

    def __init__(self, pk: int):
        super().__init__(daemon=True, name=f"heartbeat-{pk}")
        self.pk = pk
        self._halt = threading.Event()

    def run(self):
        try:
            while not self._halt.wait(heartbeat_every()):
                try:
                    TaskHeartbeat.objects.filter(pk=self.pk).update(beat_at=timezone.now())
                except DatabaseError as exc:
                    log.warning("heartbeat %s not recorded (%s)", self.pk, type(exc).__name__)
                    connection.close()
        finally:
            connection.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=10)


def _claim(kind: str, key: int, task_id: str) -> TaskHeartbeat | None:
    now = timezone.now()
    with transaction.atomic():
        TaskHeartbeat.objects.bulk_create([TaskHeartbeat(kind=kind, key=key)], ignore_conflicts=True)
        beat = TaskHeartbeat.objects.select_for_update().get(kind=kind, key=key)
        if beat.beat_at is not None and beat.beat_at > now - heartbeat_stale():
            return None  # another worker is on it right now
        beat.holder, beat.task_id = services.holder_id(), (task_id or "")[:64]
        beat.started_at = beat.beat_at = now
        beat.attempts += 1
        beat.save()
        return beat


@contextmanager
def attempt(kind: str, key: int = ERASURE_KEY, *, task_id: str = ""):
    """Yields True when this delivery holds the work (and beats for it), False when a live attempt
    holds it already. The heartbeat goes when the body ends, however it ends."""
    beat = _claim(kind, key, task_id)
    if beat is None:
        log.info("%s %s: another attempt is alive; this delivery does nothing", kind, key)
        yield False
        return
    thread = _Beat(beat.pk)
    thread.start()
    try:
        yield True
    finally:
        thread.stop()
        try:
            TaskHeartbeat.objects.filter(pk=beat.pk, holder=beat.holder, started_at=beat.started_at).delete()
        except DatabaseError as exc:  # left to the sweeper, which finds the work done
            log.warning("%s %s: heartbeat not removed (%s)", kind, key, type(exc).__name__)


# --- the sweeper ---------------------------------------------------------------------------------

def sweep(*, now=None) -> dict:
    """Send again the loads and erasures whose heartbeat stopped; fail loads that died too often."""
    now = now or timezone.now()
    summary = {"loads_resent": [], "loads_failed": [], "erasure_resent": False}
    dead = TaskHeartbeat.objects.filter(beat_at__lt=now - heartbeat_stale())
    for pk in list(dead.values_list("pk", flat=True)):
        _recover(pk, now, summary)
    if summary["loads_resent"] or summary["loads_failed"] or summary["erasure_resent"]:
        services.reap_dead_sandboxes()  # the dead attempts' leases and sandbox catalogs, at once
    return summary


def _recover(pk: int, now, summary: dict) -> bool:
    with transaction.atomic():
        beat = (TaskHeartbeat.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, beat_at__lt=now - heartbeat_stale()).first())
        if beat is None:
            return False  # it beat again, or finished, or another sweeper has it
        if beat.kind == TaskHeartbeat.Kind.LOAD:
            return _recover_load(beat, now, summary)
        return _recover_erasure(beat, summary)


def _recover_load(beat: TaskHeartbeat, now, summary: dict) -> bool:
    dataset_id = DatasetVersion.objects.filter(pk=beat.key).values_list("dataset_id", flat=True).first()
    if dataset_id is None:
        beat.delete()
        return False
    Dataset.objects.select_for_update(of=("self",)).get(pk=dataset_id)  # lock order: the dataset, then its versions
    version = DatasetVersion.objects.select_for_update().get(pk=beat.key)
    if version.is_finished:
        beat.delete()  # it finished; only the heartbeat's removal was lost
        return False
    if version.attempts >= MAX_LOAD_ATTEMPTS:
        reason = f"the load stopped without finishing {version.attempts} times (its worker died); upload it again"
        version.status, version.finished_at, version.file_path = DatasetVersion.Status.FAILED, now, ""
        version.errors, version.error_count = [{"row": None, "column": None, "reason": reason}], 1
        version.save()
        audit_record(actor=None, action=AuditAction.DATASET_VERSION_FAILED, target=version.dataset,
                     data={"version": version.number, "version_id": version.pk, "error_count": 1,
                           "attempts": version.attempts, "by": "sweeper"})
        incoming = version.incoming_path
        if incoming:
            transaction.on_commit(lambda: store.remove_quietly(store.abspath(incoming)))
        beat.delete()
        summary["loads_failed"].append(version.pk)
        return True
    beat.beat_at = None
    beat.save(update_fields=["beat_at"])
    audit_record(actor=None, action=AuditAction.DATASET_VERSION_REQUEUED, target=version.dataset,
                 data={"version": version.number, "version_id": version.pk, "attempts": version.attempts, "by": "sweeper"})
    transaction.on_commit(lambda: services.enqueue_ingest(version.pk))
    summary["loads_resent"].append(version.pk)
    return True


def _recover_erasure(beat: TaskHeartbeat, summary: dict) -> bool:
    if not services.erasure_pending():
        beat.delete()  # the work is done (a later erasure finished it)
        return False
    beat.beat_at = None
    beat.save(update_fields=["beat_at"])
    audit_record(actor=None, action=AuditAction.OPTOUT_ERASURE_REQUEUED, data={"attempts": beat.attempts, "by": "sweeper"})
    transaction.on_commit(services.enqueue_erasure)
    summary["erasure_resent"] = True
    return True
