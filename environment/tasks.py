"""Celery tasks of the environment: ids in, fetch, call a service; nothing else.

``ingest_version`` runs on queue ``ingest`` (routed by name in ``tre.celery``); the follow-up of an
opt-out registration, erasure and the store's housekeeping are sent there too (they write the
store): ``queue="ingest"`` when enqueued and in the beat entries (Celery 5.7 deprecates the
``queue`` task attribute).
"""

from celery import shared_task
from django.conf import settings

from . import recovery, services
from .models import TaskHeartbeat

INGEST_SOFT_TIME_LIMIT = settings.TRE_INGEST_TIME_LIMIT


@shared_task(name="environment.tasks.ingest_version", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def ingest_version(self, version_id: int) -> None:
    """Idempotent; a second delivery while a live worker loads the version does nothing."""
    with recovery.attempt(TaskHeartbeat.Kind.LOAD, version_id, task_id=self.request.id or "") as mine:
        if mine:
            services.version_ingest(version_id=version_id)


@shared_task(name="environment.tasks.apply_optouts", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def apply_optouts(self, first_id: int, last_id: int) -> dict:
    """After a registration: which datasets hold the batch, the staleness signal, then the erasure
    under the erasure heartbeat (as ``erase_opted_out``), so a worker killed mid-erasure is recovered."""
    summary = services.optouts_apply(first_id=first_id, last_id=last_id, erase=False)
    return {**summary, **_erase_under_heartbeat(self.request.id or "")}


@shared_task(name="environment.tasks.erase_opted_out", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def erase_opted_out(self) -> dict:
    """One erasure at a time: a delivery while a live worker erases does nothing; the live one
    passes again for opt-outs registered while it ran (the beat entry catches any it just missed)."""
    return _erase_under_heartbeat(self.request.id or "")


def _erase_under_heartbeat(task_id: str) -> dict:
    with recovery.attempt(TaskHeartbeat.Kind.ERASURE, task_id=task_id) as mine:
        if not mine:
            return {"skipped": "an erasure is running"}
        summary = services.erase_opted_out()
        for _ in range(3):
            if not services.erasure_pending():
                break
            summary = services.erase_opted_out()
        return summary


@shared_task(name="environment.tasks.sweep_store", bind=True, acks_late=True,
             soft_time_limit=600, time_limit=660)
def sweep_store(self) -> dict:
    """Loads the broker lost, superseded files no lease holds any more, leftovers of crashes."""
    return {**services.sweep_stuck_loads(), **services.cleanup_store()}


@shared_task(name="environment.tasks.recover", acks_late=True, ignore_result=True, soft_time_limit=100, time_limit=120)
def recover() -> dict:
    """Loads and erasures whose worker died: sent again within a sweep of their heartbeat stopping."""
    return recovery.sweep()


BEAT_SCHEDULE = {
    "environment.erase_opted_out": {"task": "environment.tasks.erase_opted_out", "schedule": 300.0,
                                    "options": {"queue": "ingest"}},
    "environment.sweep_store": {"task": "environment.tasks.sweep_store", "schedule": 900.0,
                                "options": {"queue": "ingest"}},
    # on queue default, so a long load on the ingest workers does not hold up the recovery of another
    "environment.recover": {"task": "environment.tasks.recover", "schedule": float(settings.TRE_SWEEP_INTERVAL),
                            "options": {"queue": "default", "expires": float(settings.TRE_SWEEP_INTERVAL)}},
}
