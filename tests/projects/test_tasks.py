"""The expiry job: revokes research grants of projects past their end date, audits once."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from projects.models import Project
from projects.tasks import BEAT_SCHEDULE, expire_projects
from tests.factories import ProjectFactory, UserFactory
from tests.projects.conftest import held

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()


def _end(project, days_ago):
    Project.objects.filter(pk=project.pk).update(start_date=TODAY - dt.timedelta(days=days_ago + 30),
                                                 end_date=TODAY - dt.timedelta(days=days_ago))


def test_expire_is_idempotent_and_audited_once():
    member = UserFactory()
    ended = ProjectFactory(members=[member], status="approved")
    ended_suspended = ProjectFactory(status="suspended")
    running = ProjectFactory(members=[UserFactory()], status="approved")
    closed = ProjectFactory(status="closed")
    _end(ended, 1)
    _end(ended_suspended, 3)
    _end(closed, 1)

    assert sorted(expire_projects()) == sorted([ended.pk, ended_suspended.pk])
    assert expire_projects() == []  # a second run does nothing
    expire_projects.delay()  # and neither does a (eager) third, through the broker path

    events = AuditEvent.objects.filter(action="project.expired")
    assert sorted(events.values_list("project", flat=True)) == sorted([ended.pk, ended_suspended.pk])
    assert events.get(project=ended.pk).actor == "" and events.get(project=ended.pk).data == {
        "end_date": str(TODAY - dt.timedelta(days=1))}
    assert held(member, ended) == {"view_project"} and held(ended.lead, ended) == {"view_project"}
    revoked = AuditEvent.objects.filter(action="permission.revoked", project=ended.pk, data__reason="project.expired")
    assert revoked.count() == 2
    assert held(running.lead, running) == {"view_project", "run_query", "view_output"}
    ended.refresh_from_db()
    assert ended.expired_at and ended.status == "approved" and ended.effective_status() == "expired"


def test_ends_today_is_not_expired():
    project = ProjectFactory(status="approved")
    Project.objects.filter(pk=project.pk).update(end_date=TODAY)
    assert expire_projects() == []
    assert expire_projects(today=str(TODAY + dt.timedelta(days=1))) == [project.pk]


def test_beat_schedule_names_the_task_and_is_merged():
    import warnings

    from tre.celery import _collect_beat_schedule, app

    entry = BEAT_SCHEDULE["projects-expire"]
    assert entry["task"] == "projects.tasks.expire_projects" == expire_projects.name
    with warnings.catch_warnings():
        # other apps' task modules may warn on import (e.g. Celery 5.7 deprecates ``queue=``): not
        # what this test is about
        warnings.simplefilter("ignore")
        assert entry["task"] in app.tasks
        _collect_beat_schedule(app)
    assert app.conf.beat_schedule["projects-expire"]["task"] == "projects.tasks.expire_projects"
