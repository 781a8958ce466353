from celery import shared_task
from django.conf import settings

from .services import run_query, sweep


@shared_task(name="queries.run_query", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.TRE_QUERY_SOFT_TIME_LIMIT + 10, time_limit=settings.TRE_QUERY_TIME_LIMIT,
             ignore_result=True)
def run_query_task(self, query_id: int) -> None:
    """Ids in; idempotent (a finished query is left alone); the engine is interrupted at the soft limit."""
    run_query(query_id=query_id)


@shared_task(name="queries.sweep", acks_late=True, ignore_result=True, time_limit=120)
def sweep_queries_task() -> dict:
    return sweep()


BEAT_SCHEDULE = {
    "queries-sweep": {"task": "queries.sweep", "schedule": 30.0, "options": {"queue": "default", "expires": 25}},
}
