"""Opt-outs: registration, immediate exclusion, erasure, the stale-outputs signal."""

import pytest
from django.contrib.auth.models import Group

from audit.models import AuditEvent
from environment import store
from environment.models import Dataset, DatasetVersion, OptOut
from environment.pseudonym import make_nhs_number, person_id_for
from environment.sandbox import open_sandbox
from environment.services import erase_opted_out, optout_status, optouts_register
from environment.signals import optouts_registered
from tests.factories import make_invalid_nhs_number

from .conftest import csv_bytes, row, store_rows

URL = "/api/v1/opt-outs/"


def test_register_counts_and_keeps_only_the_hash(as_custodian):
    a, b, c = make_nhs_number(1), make_nhs_number(2), make_nhs_number(3)
    response = as_custodian.post(URL, {"nhs_numbers": [a, b, a]}, format="json")
    assert response.status_code == 202
    assert response.json() == {"registered": 2, "already_registered": 0}
    response = as_custodian.post(URL, {"nhs_numbers": [f"{a[:3]} {a[3:6]} {a[6:]}", b, c]}, format="json")
    assert response.json() == {"registered": 1, "already_registered": 2}
    assert set(OptOut.objects.values_list("person_id", flat=True)) == {person_id_for(n) for n in (a, b, c)}
    assert all(o.registered_by.username == "custodian1" and o.registered_at for o in OptOut.objects.all())
    events = list(AuditEvent.objects.filter(action="optout.registered").values_list("data", flat=True))
    assert events == [{"registered": 2, "already_registered": 0, "received": 3},
                      {"registered": 1, "already_registered": 2, "received": 3}]


def test_invalid_numbers_refuse_the_batch_by_position(as_custodian):
    bad1, bad2 = make_invalid_nhs_number(5), "12345"
    response = as_custodian.post(URL, {"nhs_numbers": [make_nhs_number(1), bad1, make_nhs_number(2), bad2, "abcdefghij"]},
                                 format="json")
    assert response.status_code == 400
    errors = response.json()["nhs_numbers"]
    assert set(errors) == {"1", "3", "4"}
    assert bad1 not in response.content.decode() and bad2 not in response.content.decode()
    assert OptOut.objects.count() == 0 and not AuditEvent.objects.filter(action="optout.registered").exists()


@pytest.mark.parametrize("payload", [{}, {"nhs_numbers": []}, {"nhs_numbers": "9434765919"}, {"nhs_numbers": [None]},
                                     {"nhs_numbers": [{"n": 1}]}])
def test_bad_bodies(as_custodian, payload):
    response = as_custodian.post(URL, payload, format="json")
    assert response.status_code == 400 and "nhs_numbers" in response.json()
    assert "9434765919" not in response.content.decode()
    assert OptOut.objects.count() == 0


def test_roles(anon, researcher, client_for, make_user):
    body = {"nhs_numbers": [make_nhs_number(1)]}
    assert anon.post(URL, body, format="json").status_code == 401
    assert anon.get(URL + "status/").status_code == 401
    for user in (researcher, make_user("dac1", role="dac"), make_user("aud1", role="auditor")):
        response = client_for(user).post(URL, body, format="json")
        assert response.status_code == 403 and "custodian" in response.json()["detail"]
        assert client_for(user).get(URL + "status/").status_code == 403
    service = make_user("nhs_optout_feed")
    service.groups.add(Group.objects.get_or_create(name="opt_out_service")[0])
    assert client_for(service).post(URL, body, format="json").status_code == 202
    assert client_for(service).get(URL + "status/").status_code == 200
    assert OptOut.objects.count() == 1


def test_excluded_at_once_before_erasure(create_dataset, load, custodian, as_custodian):
    ds = create_dataset()
    version = load(ds["id"], csv_bytes([row(i) for i in range(10)] + [row(3, age="70")]))
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(3), make_nhs_number(500)])  # on_commit not run: no erasure
    gone = person_id_for(make_nhs_number(3))
    with open_sandbox([ds["id"]]) as sandbox:
        con = sandbox.conn
        assert sandbox.optout_watermark == OptOut.objects.latest("id").pk
        assert con.execute("SELECT count(*), count(DISTINCT person_id) FROM admissions").fetchall() == [(9, 9)]
        assert con.execute("SELECT count(*) FROM admissions WHERE person_id = ?", [gone]).fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM tre_optouts WHERE person_id = ?", [gone]).fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM tre_optouts").fetchall() == [(2,)]
    # the file itself still holds them until erasure
    _, stored = store_rows(version, "SELECT count(*) FROM data")
    assert stored == [(11,)]
    status = as_custodian.get(URL + "status/").json()
    assert status == {"registered": 2, "pending_erasure": 2, "last_erasure_at": None}


def test_erasure_rewrites_and_deletes_the_old_file(create_dataset, load, custodian, as_custodian,
                                                   django_capture_on_commit_callbacks):
    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(10)] + [row(3, age="70")]))
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(3), make_nhs_number(4)])
    with django_capture_on_commit_callbacks(execute=True):
        summary = erase_opted_out()
    assert summary["datasets_rewritten"] == 1 and summary["rows_removed"] == 3 and summary["persons_removed"] == 2
    dataset = Dataset.objects.select_related("current_version").get(pk=ds["id"])
    v2 = dataset.current_version
    assert v2.number == 2 and v2.origin == "erasure" and v2.derived_from_id == v1.pk
    assert (v2.row_count, v2.person_count, v2.rows_removed, v2.persons_removed) == (8, 8, 3, 2)
    assert v2.optout_watermark == OptOut.objects.latest("id").pk
    _, stored = store_rows(v2, "SELECT person_id FROM data")
    assert {r[0] for r in stored} == {person_id_for(make_nhs_number(i)) for i in range(10) if i not in (3, 4)}
    v1.refresh_from_db()
    assert v1.superseded_at and v1.file_deleted_at and not store.abspath(v1.file_path).exists()
    erased = AuditEvent.objects.get(action="dataset.erased")
    assert erased.data == {"rows_removed": 3, "persons_removed": 2, "from_version": 1, "to_version": 2,
                           "optout_watermark": v2.optout_watermark}
    assert erased.target_id == str(ds["id"])
    status = as_custodian.get(URL + "status/").json()
    assert status["pending_erasure"] == 0 and status["registered"] == 2 and status["last_erasure_at"]
    versions = as_custodian.get(f"/api/v1/datasets/{ds['id']}/versions/").json()["results"]
    assert [(v["number"], v["status"], v["origin"], v["is_current"], v["file_deleted"]) for v in versions] == [
        (2, "ready", "erasure", True, False), (1, "ready", "upload", False, True)]
    assert as_custodian.get(f"/api/v1/datasets/{ds['id']}/").json()["row_count"] == 8

    # idempotent: nothing left to do
    with django_capture_on_commit_callbacks(execute=True):
        again = erase_opted_out()
    assert again["datasets_checked"] == 0 and DatasetVersion.objects.count() == 2
    assert AuditEvent.objects.filter(action="dataset.erased").count() == 1
    with open_sandbox([ds["id"]]) as sandbox:
        assert sandbox.conn.execute("SELECT count(*) FROM admissions").fetchall() == [(8,)]


def test_erasure_task_twice_and_absent_persons_only_move_the_watermark(create_dataset, load, custodian,
                                                                      django_capture_on_commit_callbacks):
    from environment.tasks import erase_opted_out as task

    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(5)]))
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(900)])  # not in the dataset
    assert optout_status()["pending_erasure"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        task.delay()
        task.delay()
    v1.refresh_from_db()
    assert DatasetVersion.objects.count() == 1 and v1.optout_watermark == OptOut.objects.get().pk
    assert optout_status()["pending_erasure"] == 0 and not AuditEvent.objects.filter(action="dataset.erased").exists()


def test_registration_through_the_api_erases_on_commit(create_dataset, load, as_custodian, django_capture_on_commit_callbacks):
    ds = create_dataset()
    load(ds["id"], csv_bytes([row(i) for i in range(6)]))
    with django_capture_on_commit_callbacks(execute=True):
        assert as_custodian.post(URL, {"nhs_numbers": [make_nhs_number(2)]}, format="json").status_code == 202
    current = Dataset.objects.get(pk=ds["id"]).current_version
    assert current.origin == "erasure" and current.row_count == 5
    assert as_custodian.get(URL + "status/").json()["pending_erasure"] == 0


def test_a_new_load_leaves_opted_out_persons_out(create_dataset, load, custodian):
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(1)])
    ds = create_dataset()
    version = load(ds["id"], csv_bytes([row(i) for i in range(4)] + [row(1)]))
    assert version.status == "ready"
    assert (version.row_count, version.person_count, version.rows_removed, version.persons_removed) == (3, 3, 2, 1)
    assert version.optout_watermark == OptOut.objects.get().pk
    _, stored = store_rows(version, f"SELECT count(*) FROM data WHERE person_id = '{person_id_for(make_nhs_number(1))}'")
    assert stored == [(0,)]


def test_signal_names_the_datasets_holding_new_opt_outs(create_dataset, load, custodian, django_capture_on_commit_callbacks):
    a = create_dataset("admissions")
    b = create_dataset("other", columns=[{"name": "nhs", "type": "text"}, {"name": "x", "type": "integer"}], identifier_column="nhs")
    load(a["id"], csv_bytes([row(i) for i in range(5)]))
    load(b["id"], csv_bytes([[make_nhs_number(i), "1"] for i in range(10, 15)], ["nhs", "x"]))
    received = []

    def receiver(sender, dataset_ids, registered_at, **kwargs):
        received.append((sorted(dataset_ids), registered_at))

    optouts_registered.connect(receiver, dispatch_uid="test-receiver")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(2)])
        assert len(received) == 1 and received[0][0] == [a["id"]] and received[0][1]
        with django_capture_on_commit_callbacks(execute=True):
            optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(2), make_nhs_number(777)])  # nothing new held
        with django_capture_on_commit_callbacks(execute=True):
            optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(3), make_nhs_number(12)])
        assert [r[0] for r in received] == [[a["id"]], sorted([a["id"], b["id"]])]
    finally:
        optouts_registered.disconnect(dispatch_uid="test-receiver")


def test_erasure_waits_for_a_sandbox_then_the_beat_deletes(create_dataset, load, custodian, django_capture_on_commit_callbacks):
    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(5)]))
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(1)])
    with open_sandbox([ds["id"]]) as sandbox:
        with django_capture_on_commit_callbacks(execute=True):
            summary = erase_opted_out()
        assert summary["datasets_rewritten"] == 1 and summary["files_deleted"] == 0
        assert store.abspath(v1.file_path).exists()
        assert sandbox.conn.execute("SELECT count(*) FROM admissions").fetchall() == [(4,)]
    with django_capture_on_commit_callbacks(execute=True):
        assert erase_opted_out()["files_deleted"] == 1  # the beat run retries the deletion
    assert not store.abspath(v1.file_path).exists()


def test_registration_only_stores_and_hands_the_rest_to_one_ingest_task(create_dataset, load, as_custodian, monkeypatch,
                                                                         django_capture_on_commit_callbacks):
    """The request stores hashes and the audit event; scanning, staleness and erasure wait for the
    task (here: held back, then run twice to prove a redelivery changes nothing more)."""
    from environment import tasks

    ds = create_dataset()
    uploaded = load(ds["id"], csv_bytes([row(i) for i in range(6)]))
    sent, received = [], []
    monkeypatch.setattr(tasks.apply_optouts, "apply_async", lambda args, **options: sent.append((args, options)))
    optouts_registered.connect(lambda sender, dataset_ids, **kw: received.append(sorted(dataset_ids)), dispatch_uid="t-held", weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = as_custodian.post(URL, {"nhs_numbers": [make_nhs_number(2), make_nhs_number(900), make_nhs_number(2)]},
                                         format="json")
        assert response.status_code == 202 and response.json() == {"registered": 2, "already_registered": 0}
        ids = sorted(OptOut.objects.values_list("id", flat=True))
        assert sent == [([ids[0], ids[1]], {"queue": "ingest", "retry": False})]
        assert received == [] and Dataset.objects.get(pk=ds["id"]).current_version_id == uploaded.pk
        with django_capture_on_commit_callbacks(execute=True):
            first = tasks.apply_optouts(ids[0], ids[1])
        assert received == [[ds["id"]]] and (first["datasets"], first["datasets_rewritten"], first["rows_removed"]) == (1, 1, 1)
        current = Dataset.objects.get(pk=ds["id"]).current_version
        assert (current.origin, current.row_count) == ("erasure", 5)
        with django_capture_on_commit_callbacks(execute=True):
            again = tasks.apply_optouts(ids[0], ids[1])
        assert received == [[ds["id"]]] and (again["datasets"], again["datasets_rewritten"]) == (0, 0)
        assert Dataset.objects.get(pk=ds["id"]).current_version_id == current.pk
    finally:
        optouts_registered.disconnect(dispatch_uid="t-held")


def test_registration_applies_in_the_request_when_the_broker_refuses(create_dataset, load, as_custodian, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    from environment import tasks

    def down(*args, **kwargs):
        raise OperationalError("broker down")

    ds = create_dataset()
    load(ds["id"], csv_bytes([row(i) for i in range(6)]))
    monkeypatch.setattr(tasks.apply_optouts, "apply_async", down)
    with django_capture_on_commit_callbacks(execute=True):
        assert as_custodian.post(URL, {"nhs_numbers": [make_nhs_number(2)]}, format="json").status_code == 202
    current = Dataset.objects.get(pk=ds["id"]).current_version
    assert (current.origin, current.row_count) == ("erasure", 5)


def test_erasure_copies_record_keys_and_makes_them_for_a_file_written_before_them(create_dataset, load, custodian,
                                                                                  django_capture_on_commit_callbacks):
    import duckdb

    from environment.recordkeys import record_keys

    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(10)]))
    path = store.abspath(v1.file_path)
    con = duckdb.connect(str(path))  # as a version-1 load wrote it: no record keys
    try:
        con.execute("ALTER TABLE data DROP COLUMN _rk")
        con.execute("ALTER TABLE data DROP COLUMN _rk2")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(3)])
    with django_capture_on_commit_callbacks(execute=True):
        assert erase_opted_out()["datasets_rewritten"] == 1
    v2 = Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version
    names, stored = store_rows(v2)
    assert names[-2:] == ["_rk", "_rk2"] and len(stored) == 9
    assert all((r[-2], r[-1]) == record_keys(r[0]) for r in stored)
    # and a file that has them: copied as they are
    optouts_register(actor=custodian, nhs_numbers=[make_nhs_number(4)])
    with django_capture_on_commit_callbacks(execute=True):
        assert erase_opted_out()["datasets_rewritten"] == 1
    v3 = Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version
    _, stored = store_rows(v3)
    assert len(stored) == 8 and all((r[-2], r[-1]) == record_keys(r[0]) for r in stored)
