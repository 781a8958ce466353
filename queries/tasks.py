from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from .services import run_query, sweep


@shared_task(name="queries.run_query", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.TRE_QUERY_SOFT_TIME_LIMIT + 10, time_limit=settings.TRE_QUERY_TIME_LIMIT,
             ignore_result=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=2,
             retry_backoff_max=30, max_retries=5)
def run_query_task(self, query_id: int) -> None:
    """Ids in; idempotent (a finished query is left alone); the engine is interrupted at the soft limit.
    If the database goes away mid-run (a restart), the task is retried and resumes its own attempt."""
    close_old_connections()
    try:
        run_query(query_id=query_id, task_id=self.request.id or "")
    finally:
        close_old_connections()


# Both limits on every task: a task that sets only its hard limit inherits the global soft one
# (300 s), and Celery then refuses to send it ("soft_time_limit must be less than or equal to
# time_limit") — beat never ran this sweeper. tests/tre/test_celery_limits.py checks every task.
@shared_task(name="queries.sweep", acks_late=True, ignore_result=True, soft_time_limit=100, time_limit=120)
def sweep_queries_task() -> dict:
    return sweep()


BEAT_SCHEDULE = {
    # a sweep not started before the next one is due is dropped (no backlog while workers are down)
    "queries-sweep": {"task": "queries.sweep", "schedule": float(settings.TRE_SWEEP_INTERVAL),
                      "options": {"queue": "default", "expires": float(settings.TRE_SWEEP_INTERVAL)}},
}
