"""The Celery app: queues ``queries``, ``ingest`` and ``default``; late acks; time limits.

Each app may define ``BEAT_SCHEDULE`` (a dict of Celery beat entries) in its ``tasks`` module;
they are merged here so the schedule lives next to the task it runs.
"""

import logging
import os
from importlib import import_module

from celery import Celery
from django.conf import settings
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre.settings")

app = Celery("tre")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("queries"), Queue("ingest"))
# Routing lives here, not on the tasks (Celery deprecates the task-level ``queue`` attribute).
# Exact names win over patterns.
app.conf.task_routes = {
    "queries.sweep": {"queue": "default"},
    "queries.*": {"queue": "queries"},
    "environment.tasks.ingest_*": {"queue": "ingest"},
    "environment.tasks.erase_*": {"queue": "ingest"},
    "environment.tasks.apply_optouts": {"queue": "ingest"},
}
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _collect_beat_schedule(sender, **kwargs):
    schedule = dict(settings.CELERY_BEAT_SCHEDULE)
    for label in ("audit", "organisations", "environment", "access", "projects", "queries", "outputs"):
        try:
            module = import_module(f"{label}.tasks")
        except ModuleNotFoundError:
            continue
        except Exception:  # one app's broken import must not drop every other app's schedule
            logging.getLogger(__name__).exception("beat schedule of %s not loaded", label)
            continue
        schedule.update(getattr(module, "BEAT_SCHEDULE", {}))
    sender.conf.beat_schedule = with_interval(schedule, float(getattr(settings, "TRE_BEAT_INTERVAL", 0) or 0))


def with_interval(schedule: dict, interval: float) -> dict:
    """``schedule`` with every entry due each ``interval`` seconds (``TRE_BEAT_INTERVAL``: tests and
    trials); unchanged when ``interval`` is 0. An entry's ``expires`` is kept within the interval."""
    if interval <= 0:
        return schedule
    shortened = {}
    for name, entry in schedule.items():
        options = dict(entry.get("options", {}))
        if "expires" in options:
            options["expires"] = min(float(options["expires"]), interval)
        shortened[name] = {**entry, "schedule": interval, "options": options}
    return shortened
