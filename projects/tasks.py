"""Periodic work for projects. ``BEAT_SCHEDULE`` is merged into Celery beat by ``tre.celery``."""

from datetime import date

from celery import shared_task
from celery.schedules import crontab

from . import services

BEAT_SCHEDULE = {
    "projects-expire": {
        "task": "projects.tasks.expire_projects",
        "schedule": crontab(minute=5),  # hourly: a project's grants go within the hour after its end date
    },
}


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=240, time_limit=300)
def expire_projects(today: str | None = None) -> list[int]:
    """Revoke the grants of approved/suspended projects past their end date and record
    ``project.expired`` once per project. Idempotent: a second run finds nothing to do."""
    return services.projects_expire(today=date.fromisoformat(today) if today else None)
