"""Notifications: rows in the caller's transaction, e-mail after commit in a retried task, never on
rollback, a mail failure never undoes the action; ``GET me/notifications/``; who hears of what."""

import smtplib

import pytest
from celery.exceptions import Retry
from django.core import mail
from django.db import transaction

from notifications.models import Kind, Notification
from notifications.services import notify
from notifications.tasks import send_emails
from projects import services as project_services
from projects.models import Project
from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory
from tre.errors import WrongState

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def ann(db):
    return UserFactory(username="ann", email="ann@example.org")


# --- the service -----------------------------------------------------------------------------

def test_rows_now_mail_after_commit(ann, django_capture_on_commit_callbacks):
    bob = UserFactory(username="bob", email="")  # no address: in-app only
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        rows = notify(users=[ann, bob, ann, None], kind=Kind.PROJECT_APPROVED, text="Project 7 was approved",
                      link="/api/v1/projects/7/", target=("project", 7))
        assert len(rows) == 2 and Notification.objects.count() == 2  # written in the transaction, once per user
        assert mail.outbox == []  # nothing is sent before the commit
    assert len(callbacks) == 1
    callbacks[0]()
    assert [m.to for m in mail.outbox] == [["ann@example.org"]]
    message = mail.outbox[0]
    assert message.subject == "[tre] Project 7 was approved"
    assert "Project 7 was approved" in message.body and "/api/v1/projects/7/" in message.body
    row = Notification.objects.get(user=ann)
    assert (row.kind, row.target_type, row.target_id, row.read_at) == ("project_approved", "project", "7", None)
    assert row.emailed_at is not None
    assert Notification.objects.get(user=bob).emailed_at is None


@pytest.mark.django_db(transaction=True)
def test_nothing_on_rollback():
    ann = UserFactory(username="ann", email="ann@example.org")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        notify(users=[ann], kind=Kind.PROJECT_REJECTED, text="Project 7 was rejected")
        raise Boom
    assert Notification.objects.count() == 0 and mail.outbox == []
    with transaction.atomic():
        notify(users=[ann], kind=Kind.PROJECT_REJECTED, text="Project 8 was rejected")
    assert Notification.objects.count() == 1 and len(mail.outbox) == 1  # a real commit sends it


def test_the_task_is_idempotent_and_retried_on_smtp_errors(ann, monkeypatch):
    rows = notify(users=[ann], kind=Kind.VERSION_READY, text="Version 2 of episodes is loaded")
    ids = [r.pk for r in rows]
    assert send_emails.apply(args=[ids]).get() == 1
    assert send_emails.apply(args=[ids]).get() == 0  # a redelivery sends nothing twice
    assert len(mail.outbox) == 1
    assert smtplib.SMTPException in send_emails.autoretry_for and send_emails.max_retries == 5


def test_inactive_users_are_not_notified(ann):
    ann.is_active = False
    ann.save()
    assert notify(users=[ann], kind=Kind.PROJECT_APPROVED, text="x") == []


def test_every_kind_the_outputs_workflow_needs_exists():
    assert {"output_awaiting_review", "output_returned", "output_released", "output_rejected"} <= set(Kind.values)
    with pytest.raises(ValueError):
        notify(users=[], kind="made_up", text="x")


# --- a mail failure never undoes the action ------------------------------------------------------

class Refusing:
    """An e-mail backend whose server always refuses."""

    calls = 0

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        type(self).calls += 1
        raise smtplib.SMTPServerDisconnected("the mail server went away")


@pytest.fixture
def refusing_mail(settings):
    Refusing.calls = 0
    settings.EMAIL_BACKEND = f"{__name__}.Refusing"
    return Refusing


def _submittable(lead):
    return ProjectFactory(lead=lead)


def test_a_mail_failure_does_not_undo_the_submission(refusing_mail, client_for, django_capture_on_commit_callbacks):
    lead = UserFactory(organisation=OrganisationFactory())
    UserFactory(role="dac", organisation=OrganisationFactory(), email="dina@example.org")
    project = _submittable(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(f"{API}/projects/{project.pk}/submit/")
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert Project.objects.get(pk=project.pk).status == "submitted"
    # tried once; the task asked Celery for a retry (in-process here: Celery raises Retry, which the
    # robust on_commit callback logs instead of raising); a worker would retry it with backoff
    assert refusing_mail.calls == 1
    row = Notification.objects.get(kind=Kind.PROJECT_SUBMITTED)
    assert row.emailed_at is None  # still in the in-app list
    with pytest.raises(Retry):
        send_emails.apply(args=[[row.pk]])
    assert refusing_mail.calls == 2 and Notification.objects.get(pk=row.pk).emailed_at is None


def test_a_broker_that_is_down_does_not_undo_the_action(client_for, monkeypatch, django_capture_on_commit_callbacks):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(send_emails, "delay", down)
    lead = UserFactory(organisation=OrganisationFactory())
    UserFactory(role="dac", organisation=OrganisationFactory(), email="dina@example.org")
    project = _submittable(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(f"{API}/projects/{project.pk}/submit/")
    assert response.status_code == 200 and Project.objects.get(pk=project.pk).status == "submitted"
    assert Notification.objects.filter(kind=Kind.PROJECT_SUBMITTED).count() == 1 and mail.outbox == []


# --- who hears of what ----------------------------------------------------------------------------

def test_eligible_dac_members_hear_of_a_submission(django_capture_on_commit_callbacks):
    org = OrganisationFactory(name="Alpha")
    lead = UserFactory(organisation=org)
    eligible = UserFactory(username="dina", role="dac", organisation=OrganisationFactory(), email="dina@example.org")
    UserFactory(username="colleague", role="dac", organisation=org, email="c@example.org")  # same organisation
    insider = UserFactory(username="insider", role="dac", organisation=OrganisationFactory(), email="i@example.org")
    retired = UserFactory(username="retired", role="dac", organisation=OrganisationFactory(), email="r@example.org")
    retired.is_active = False
    retired.save()
    UserFactory(username="researcher", organisation=OrganisationFactory(), email="x@example.org")
    project = ProjectFactory(lead=lead, members=[insider])
    with django_capture_on_commit_callbacks(execute=True):
        project_services.project_submit(project=project, actor=lead)
    rows = Notification.objects.filter(kind=Kind.PROJECT_SUBMITTED)
    assert [r.user for r in rows] == [eligible]
    assert rows[0].link == f"/api/v1/projects/{project.pk}/" and rows[0].target_id == str(project.pk)
    assert [m.to for m in mail.outbox] == [["dina@example.org"]]


@pytest.mark.parametrize("decision, kind", [("approve", "project_approved"), ("reject", "project_rejected"),
                                            ("return", "project_returned")])
def test_the_lead_hears_of_the_decision(decision, kind, settings, django_capture_on_commit_callbacks):
    settings.TRE_DAC_APPROVALS = 1
    org = OrganisationFactory()
    lead = UserFactory(organisation=org, email="lena@example.org")
    member = UserFactory(email="milo@example.org")
    dataset = DatasetFactory()
    AgreementFactory(organisation=org, datasets=[dataset])
    project = ProjectFactory(lead=lead, members=[member], datasets=[dataset], status="submitted")
    voter = UserFactory(role="dac", organisation=OrganisationFactory())
    with django_capture_on_commit_callbacks(execute=True):
        project_services.project_review(project=project, actor=voter, decision=decision, comment="decided")
    rows = Notification.objects.filter(kind=kind)
    assert [r.user for r in rows] == [lead]
    assert [m.to for m in mail.outbox] == [["lena@example.org"]]


def test_an_open_round_notifies_nobody(settings):
    org = OrganisationFactory()
    lead = UserFactory(organisation=org)
    dataset = DatasetFactory()
    AgreementFactory(organisation=org, datasets=[dataset])
    project = ProjectFactory(lead=lead, datasets=[dataset], status="submitted")
    project_services.project_review(project=project, actor=UserFactory(role="dac", organisation=OrganisationFactory()),
                                    decision="approve", comment="one of two")
    assert not Notification.objects.filter(user=lead).exists()


def test_a_refused_vote_notifies_nobody():
    lead = UserFactory(organisation=OrganisationFactory())
    project = ProjectFactory(lead=lead, status="submitted")
    with pytest.raises(WrongState):  # the 409 of test_dac.py; here only its side effects matter
        project_services.project_review(project=project, actor=UserFactory(role="dac"), decision="approve",
                                        comment="no agreements")
    assert not Notification.objects.filter(user=lead).exists()


# --- GET me/notifications/ ---------------------------------------------------------------------------

def test_my_notifications_newest_first_and_only_mine(ann, client_for, anon):
    other = UserFactory()
    for i in range(3):
        notify(users=[ann], kind=Kind.PROJECT_SUBMITTED, text=f"number {i}", link=f"/api/v1/projects/{i}/",
               target=("project", i))
    notify(users=[other], kind=Kind.PROJECT_APPROVED, text="not for ann")
    response = client_for(ann).get(f"{API}/me/notifications/?page_size=2")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"} and body["count"] == 3 and body["next"]
    first = body["results"][0]
    assert [r["text"] for r in body["results"]] == ["number 2", "number 1"]
    assert set(first) == {"id", "kind", "text", "link", "target_type", "target_id", "created_at", "read", "read_at"}
    assert (first["kind"], first["link"], first["target_type"], first["target_id"], first["read"]) == (
        "project_submitted", "/api/v1/projects/2/", "project", "2", False)
    assert client_for(other).get(f"{API}/me/notifications/").json()["count"] == 1
    assert anon.get(f"{API}/me/notifications/").status_code == 401


def test_me_gives_the_email(client_for, ann):
    assert client_for(ann).get(f"{API}/me/").json()["email"] == "ann@example.org"


def test_my_notifications_cost_the_same_for_3_or_30(ann, client_for, django_assert_max_num_queries):
    for i in range(30):
        notify(users=[ann], kind=Kind.PROJECT_SUBMITTED, text=f"number {i}")
    with django_assert_max_num_queries(6):
        assert len(client_for(ann).get(f"{API}/me/notifications/?page_size=100").json()["results"]) == 30


# --- the custodian hears how their upload's load ended ------------------------------------------------

def test_the_uploader_hears_when_a_load_finishes_or_fails(django_capture_on_commit_callbacks):
    from environment.pseudonym import make_nhs_number
    from tests.factories import load_dataset_rows

    cass = UserFactory(username="cass", role="custodian", email="cass@example.org")
    dataset = DatasetFactory(name="episodes")
    with django_capture_on_commit_callbacks(execute=True):
        good = load_dataset_rows(dataset, [{"nhs_number": make_nhs_number(i), "region": "north", "age": 40,
                                            "value": 1.5} for i in range(3)], actor=cass)
    assert good.status == "ready"
    ready = Notification.objects.get(kind=Kind.VERSION_READY)
    assert ready.user == cass and ready.text == f"Version {good.number} of episodes is loaded"
    assert ready.link == f"/api/v1/datasets/{dataset.pk}/versions/" and ready.target_id == str(good.pk)
    with django_capture_on_commit_callbacks(execute=True):
        bad = load_dataset_rows(dataset, [{"nhs_number": "1234567890", "region": "north", "age": "x"}], actor=cass)
    assert bad.status == "failed"
    failed = Notification.objects.get(kind=Kind.VERSION_FAILED)
    assert failed.user == cass and failed.text.startswith(f"Version {bad.number} of episodes failed to load (")
    assert [m.to for m in mail.outbox] == [["cass@example.org"], ["cass@example.org"]]


def test_a_load_without_an_uploader_notifies_nobody():
    from environment.pseudonym import make_nhs_number
    from tests.factories import load_dataset_rows

    version = load_dataset_rows(DatasetFactory(), [{"nhs_number": make_nhs_number(1), "region": "north", "age": 40,
                                                    "value": 1.0}])
    assert version.status == "ready" and not Notification.objects.exists()


def test_tre_user_sets_the_email(db):
    from django.contrib.auth import get_user_model
    from django.core.management import CommandError, call_command

    from audit.models import AuditEvent

    call_command("tre_user", "ivy", "--password", "pw-123456", "--email", "ivy@example.org")
    assert get_user_model().objects.get(username="ivy").email == "ivy@example.org"
    call_command("tre_user", "ivy")  # without --email the address stays
    assert get_user_model().objects.get(username="ivy").email == "ivy@example.org"
    assert AuditEvent.objects.filter(action="user.email_set").count() == 1
    with pytest.raises(CommandError, match="not an e-mail address"):
        call_command("tre_user", "ivy", "--email", "not-an-address")
    assert get_user_model().objects.get(username="ivy").email == "ivy@example.org"
