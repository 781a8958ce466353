"""Every task can be sent: Celery refuses to send a task whose soft time limit exceeds its hard one
(``soft_time_limit must be less than or equal to time_limit``), and a task that sets only one of
them inherits the other from the global settings. Beat then logs the refusal every interval and the
task never runs (it happened to ``queries.sweep``). The real beat is run in
tests/hardening/test_recovery.py."""

import warnings

from django.conf import settings

from tre.celery import _collect_beat_schedule, app, with_interval


def _tasks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other apps' task modules may warn on import
        app.loader.import_default_modules()
        app.finalize(auto=True)
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def _limits(task):
    """(soft, hard) as Celery applies them: the task's own, else the global setting."""
    soft = task.soft_time_limit if task.soft_time_limit is not None else app.conf.task_soft_time_limit
    hard = task.time_limit if task.time_limit is not None else app.conf.task_time_limit
    return soft, hard


def test_every_task_has_both_limits_and_the_soft_one_is_not_above_the_hard_one():
    tasks = _tasks()
    assert {"queries.sweep", "queries.run_query", "environment.tasks.recover", "environment.tasks.ingest_version",
            "environment.tasks.erase_opted_out", "environment.tasks.sweep_store",
            "projects.tasks.expire_projects"} <= set(tasks)
    wrong = {name: _limits(task) for name, task in tasks.items()
             if None in _limits(task) or _limits(task)[0] > _limits(task)[1]}
    assert wrong == {}


def test_the_broker_redelivers_only_after_the_longest_task_could_have_finished():
    """Late acks: a message is acknowledged when its task ends, so the visibility timeout must
    exceed every hard limit or a task still running would be delivered to a second worker."""
    longest = max(_limits(task)[1] for task in _tasks().values())
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > longest
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.TRE_BROKER_VISIBILITY_TIMEOUT


def test_every_beat_entry_names_a_registered_task_and_the_sweepers_run_every_sweep_interval():
    tasks = _tasks()
    _collect_beat_schedule(app)
    schedule = app.conf.beat_schedule
    assert {"queries-sweep", "environment.recover", "environment.erase_opted_out", "environment.sweep_store",
            "projects-expire"} <= set(schedule)
    assert [name for name, entry in schedule.items() if entry["task"] not in tasks] == []
    for name in ("queries-sweep", "environment.recover"):
        assert schedule[name]["schedule"] == settings.TRE_SWEEP_INTERVAL
        assert schedule[name]["options"]["queue"] == "default"


def test_a_beat_interval_setting_shortens_every_entry():
    schedule = {"a": {"task": "x", "schedule": 900.0, "options": {"queue": "ingest", "expires": 25}},
                "b": {"task": "y", "schedule": 30.0}}
    assert with_interval(schedule, 0) is schedule
    assert with_interval(schedule, 2.0) == {"a": {"task": "x", "schedule": 2.0, "options": {"queue": "ingest", "expires": 2.0}},
                                            "b": {"task": "y", "schedule": 2.0, "options": {}}}
