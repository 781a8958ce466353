"""Celery tasks of the environment: ids in, fetch, call a service; nothing else.

``ingest_version`` runs on queue ``ingest`` (routed by name in ``tre.celery``); the follow-up of an
opt-out registration, erasure and the store's housekeeping are sent there too (they write the
store): ``queue="ingest"`` when enqueued and in the beat entries (Celery 5.7 deprecates the
``queue`` task attribute).
"""

from celery import shared_task
from django.conf import settings

from . import services

INGEST_SOFT_TIME_LIMIT = settings.TRE_INGEST_TIME_LIMIT


@shared_task(name="environment.tasks.ingest_version", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def ingest_version(self, version_id: int) -> None:
    services.version_ingest(version_id=version_id)


@shared_task(name="environment.tasks.apply_optouts", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def apply_optouts(self, first_id: int, last_id: int) -> dict:
    """After a registration: which datasets hold the batch, the staleness signal, the erasure."""
    return services.optouts_apply(first_id=first_id, last_id=last_id)


@shared_task(name="environment.tasks.erase_opted_out", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_SOFT_TIME_LIMIT + 60)
def erase_opted_out(self) -> dict:
    return services.erase_opted_out()


@shared_task(name="environment.tasks.sweep_store", bind=True, acks_late=True,
             soft_time_limit=600, time_limit=660)
def sweep_store(self) -> dict:
    """Loads the broker lost, superseded files no lease holds any more, leftovers of crashes."""
    return {**services.sweep_stuck_loads(), **services.cleanup_store()}


BEAT_SCHEDULE = {
    "environment.erase_opted_out": {"task": "environment.tasks.erase_opted_out", "schedule": 300.0,
                                    "options": {"queue": "ingest"}},
    "environment.sweep_store": {"task": "environment.tasks.sweep_store", "schedule": 900.0,
                                "options": {"queue": "ingest"}},
}
