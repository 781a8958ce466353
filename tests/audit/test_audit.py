import csv
import io
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, InternalError, ProgrammingError, connection, connections, transaction
from django.utils import timezone

from audit.models import AppendOnly, AuditEvent
from audit.services import AuditDataRefused, audit_record
from audit.verify import verify_chain
from organisations.models import Organisation
from organisations.services import organisation_get_or_create
from tests.factories import PASSWORD


def _record(n):
    for i in range(n):
        with transaction.atomic():
            audit_record(actor=None, action="system.ping", target=("thing", i), data={"i": i})


# --- the chain ------------------------------------------------------------------------------

def test_chain_links_and_verifies(db):
    _record(5)
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert verify_chain().as_dict() == {"valid": True, "events_checked": 5, "first_invalid_seq": None, "reason": None}


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_never_fork_the_chain():
    per_thread, errors = 40, []
    barrier = threading.Barrier(8)

    def writer(k):
        try:
            barrier.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(actor=f"writer{k}", action="system.ping", data={"k": k, "i": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 8 * per_thread + 1))
    assert AuditEvent.objects.values("prev_hash").distinct().count() == 8 * per_thread  # no two events share a parent
    assert verify_chain().valid


# --- tamper evidence (the trigger is disabled only to simulate an attacker with DBA rights) -----

@pytest.fixture
def trigger_off(db):
    with connection.cursor() as c:
        c.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_no_update_delete")
    yield
    with connection.cursor() as c:
        c.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_no_update_delete")


def test_detects_an_altered_row(trigger_off):
    _record(6)
    with connection.cursor() as c:
        c.execute("UPDATE audit_auditevent SET data = '{\"i\": 99}' WHERE seq = 4")
    result = verify_chain()
    assert (result.valid, result.first_invalid_seq) == (False, 4)


def test_detects_a_deleted_row(trigger_off):
    _record(6)
    with connection.cursor() as c:
        c.execute("DELETE FROM audit_auditevent WHERE seq = 3")
    result = verify_chain()
    assert (result.valid, result.first_invalid_seq) == (False, 4)


def test_detects_an_inserted_row(trigger_off):
    _record(6)
    with connection.cursor() as c:
        # make room at seq 3 by shifting later events up, then slip a forged event in
        c.execute("UPDATE audit_auditevent SET seq = seq + 1000 WHERE seq >= 3")
        c.execute("UPDATE audit_auditevent SET seq = seq - 999 WHERE seq >= 1000")
        c.execute("""INSERT INTO audit_auditevent (seq, timestamp, actor, action, target_type, target_id, data, prev_hash, hash)
                     SELECT 3, now(), 'mallory', 'forged', '', '', '{}', hash, repeat('f', 64) FROM audit_auditevent WHERE seq = 2""")
    result = verify_chain()
    assert (result.valid, result.first_invalid_seq) == (False, 3)


def test_detects_a_rehashed_row_breaking_the_next_link(trigger_off):
    """Even a forger who recomputes one event's hash breaks the link to the next event."""
    from audit.chain import event_hash

    _record(5)
    e = AuditEvent.objects.get(seq=2)
    forged = event_hash(e.prev_hash, seq=2, timestamp=e.timestamp, actor="mallory", actor_id=None, action=e.action,
                        target_type=e.target_type, target_id=e.target_id, project=e.project, data=e.data, ip=e.ip)
    with connection.cursor() as c:
        c.execute("UPDATE audit_auditevent SET actor = 'mallory', hash = %s WHERE seq = 2", [forged])
    result = verify_chain()
    assert (result.valid, result.first_invalid_seq) == (False, 3)


# --- append-only, in the database and in Python -------------------------------------------------

@pytest.mark.parametrize("sql", [
    "UPDATE audit_auditevent SET actor = 'x'",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
])
def test_database_refuses_changes(db, sql):
    _record(2)
    with connection.cursor() as c:
        c.execute("SET LOCAL tre.audit_truncate_ok = 'off'")
        with pytest.raises((InternalError, ProgrammingError, IntegrityError)) as exc:
            with transaction.atomic():
                c.execute(sql)
    assert "append-only" in str(exc.value)
    assert AuditEvent.objects.count() == 2


def test_model_refuses_changes(db):
    _record(1)
    event = AuditEvent.objects.get()
    event.actor = "x"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().update(actor="x")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()


def test_callers_change_rolls_back_when_the_audit_write_fails(db, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr("organisations.services.audit_record", broken)
    with pytest.raises(RuntimeError):
        organisation_get_or_create(name="Rolled Back Ltd", sector="commercial")
    assert not Organisation.objects.filter(name="Rolled Back Ltd").exists()
    assert AuditEvent.objects.count() == 0


def test_refuses_secrets_and_nhs_numbers_in_data(db):
    for data in ({"password": "x"}, {"nested": {"token": "abc"}}, {"note": "patient 9434765919"}, {"nhs_numbers": []}):
        with pytest.raises(AuditDataRefused):
            audit_record(actor=None, action="system.ping", data=data)
    assert AuditEvent.objects.count() == 0


# --- login events -----------------------------------------------------------------------------

def test_login_success_and_failure_are_audited_without_secrets(make_user, anon):
    make_user("dora")
    bad = anon.post("/api/v1/auth/token/", {"username": "dora", "password": "wrong-password-123"}, format="json")
    good = anon.post("/api/v1/auth/token/", {"username": "dora", "password": PASSWORD}, format="json")
    assert bad.status_code == 400 and good.status_code == 200
    actions = list(AuditEvent.objects.filter(action__startswith="auth.").values_list("action", "actor"))
    assert actions == [("auth.login_failed", ""), ("auth.login_succeeded", "dora")]
    dump = " ".join(str(v) for v in AuditEvent.objects.values_list("data", "actor", "target_id"))
    for secret in (PASSWORD, "wrong-password-123", good.json()["token"]):
        assert secret not in dump


# --- the auditor API ----------------------------------------------------------------------------

@pytest.fixture
def auditor(make_user):
    return make_user("audrey", role="auditor")


def test_auditor_api_requires_auditors(anon, make_user, client_for, db):
    for path in ("/api/v1/audit/events/", "/api/v1/audit/events/export/", "/api/v1/audit/verify/"):
        assert anon.get(path).status_code == 401
        for role in (None, "dac", "custodian", "output_checker"):
            r = client_for(make_user(role=role)).get(path)
            assert r.status_code == 403, (path, role)
            assert "auditor" in r.json()["detail"]


def test_filters(auditor, client_for, db):
    t0 = timezone.now()
    audit_record(actor="eve", action="project.submitted", target=("project", 7), project=7, now=t0 - timedelta(days=3))
    audit_record(actor="eve", action="project.approved", target=("project", 7), project=7, now=t0 - timedelta(days=1))
    audit_record(actor="fay", action="query.completed", target=("query", 3), project=8, now=t0)
    c = client_for(auditor)

    def seqs(**params):
        r = c.get("/api/v1/audit/events/", params)
        assert r.status_code == 200, r.content
        return [e["seq"] for e in r.json()["results"] if not e["action"].startswith("audit.")]

    assert seqs(actor="eve") == [1, 2]
    assert seqs(action="query.completed") == [3]
    assert seqs(action="project.*") == [1, 2]
    assert seqs(project=8) == [3]
    assert seqs(target_type="project", target_id="7") == [1, 2]
    assert seqs(since=(t0 - timedelta(days=2)).isoformat()) == [2, 3]
    assert seqs(until=(t0 - timedelta(hours=1)).isoformat()) == [1, 2]
    body = c.get("/api/v1/audit/events/", {"actor": "eve"}).json()
    assert set(body) == {"count", "next", "previous", "results"} and body["count"] == 2
    assert c.get("/api/v1/audit/events/", {"since": "yesterday"}).status_code == 400
    assert c.get("/api/v1/audit/events/", {"project": "seven"}).status_code == 400
    # viewing is itself audited
    assert AuditEvent.objects.filter(action="audit.viewed", actor="audrey").count() >= 8


def test_csv_export(auditor, client_for, db):
    audit_record(actor="eve", action="project.submitted", target=("project", 7), project=7, data={"comment": "a, \"b\""})
    audit_record(actor="fay", action="query.completed", target=("query", 3), project=8)
    r = client_for(auditor).get("/api/v1/audit/events/export/", {"actor": "eve"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert [(x["seq"], x["action"], x["project"]) for x in rows] == [("1", "project.submitted", "7")]
    assert rows[0]["data"] == '{"comment":"a, \\"b\\""}'  # the canonical JSON text, exactly as hashed
    assert AuditEvent.objects.filter(action="audit.exported").count() == 1


def test_verify_api_and_command(auditor, client_for, trigger_off, capsys):
    _record(3)
    r = client_for(auditor).get("/api/v1/audit/verify/")
    assert r.status_code == 200
    assert r.json()["valid"] is True and r.json()["events_checked"] == 3
    call_command("verify_audit")
    with connection.cursor() as c:
        c.execute("UPDATE audit_auditevent SET action = 'tampered' WHERE seq = 2")
    assert client_for(auditor).get("/api/v1/audit/verify/").json()["first_invalid_seq"] == 2
    with pytest.raises(SystemExit) as exc:
        call_command("verify_audit")
    assert exc.value.code == 1
    assert "seq 2" in capsys.readouterr().err


def test_every_action_is_registered(db):
    from audit.actions import AuditAction

    with pytest.raises(ValueError, match="not a registered audit action"):
        audit_record(actor=None, action="made.up", data={})
    event = audit_record(actor=None, action=AuditAction.SYSTEM_PING, data={})
    assert event.action == "system.ping"


def test_refused_data_is_a_400_naming_the_field(db):
    from tre.errors import Invalid

    with pytest.raises(Invalid) as info:
        audit_record(actor=None, action="system.ping", data={"comment": "call 9434765919"})
    assert info.value.status_code == 400
    assert list(info.value.fields) == ["comment"]
