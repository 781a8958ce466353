"""Uploads and loads: the happy path, every kind of bad file, size limits, idempotent tasks."""

import hashlib
import hmac

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings

from audit.models import AuditEvent
from environment import filesources, store
from environment.declaration import declare
from environment.models import Dataset, DatasetVersion
from environment.pseudonym import make_nhs_number, person_id_for
from environment.recordkeys import record_keys
from environment.services import version_ingest
from tests.factories import make_invalid_nhs_number

from .conftest import COLUMNS, HEADER, csv_bytes, incoming_files, row, store_rows, upload


def _hmac(number: str) -> str:
    return hmac.new(settings.TRE_PSEUDONYM_KEY.encode(), number.encode(), hashlib.sha256).hexdigest()


def test_happy_path_load(create_dataset, load, as_custodian):
    ds = create_dataset()
    rows = [row(i) for i in range(20)] + [row(3, age="99")]  # person 3 twice
    rows[5]["nhs_number"] = "{} {} {}".format(rows[5]["nhs_number"][:3], rows[5]["nhs_number"][3:6], rows[5]["nhs_number"][6:])
    rows[6]["nhs_number"] = rows[6]["nhs_number"][:3] + "-" + rows[6]["nhs_number"][3:]
    version = load(ds["id"], csv_bytes(rows))

    assert version.status == "ready", version.errors
    assert (version.row_count, version.person_count) == (21, 20)
    assert version.file_path == f"datasets/{ds['id']}/v1.duckdb"
    names, stored = store_rows(version)
    # person_id + the stored columns, in declared order; no identifier, no dropped column; record keys
    assert names == ["person_id", "sex", "age", "weight", "admitted", "smoker", "_rk", "_rk2"]
    assert all((r[6], r[7]) == record_keys(r[0]) for r in stored)
    assert len(stored) == 21
    ids = {r[0] for r in stored}
    assert ids == {_hmac(make_nhs_number(i)) for i in range(20)} == {person_id_for(make_nhs_number(i)) for i in range(20)}
    by_person = {}
    for r in stored:
        by_person.setdefault(r[0], []).append(r)
    p0 = by_person[_hmac(make_nhs_number(0))][0]
    assert p0[1:3] == ("M", 20) and p0[3] == 60.5 and str(p0[4]) == "2024-01-10" and p0[5] is True
    assert sorted(r[2] for r in by_person[_hmac(make_nhs_number(3))]) == [23, 99]
    # the raw numbers are nowhere in the store file
    raw = store.abspath(version.file_path).read_bytes()
    assert make_nhs_number(0).encode() not in raw and b"AB0 1XY" not in raw

    body = as_custodian.get(f"/api/v1/datasets/{ds['id']}/").json()
    assert body["current_version"] == version.pk and body["row_count"] == 21 and body["current_version_number"] == 1
    listing = as_custodian.get(f"/api/v1/datasets/{ds['id']}/versions/").json()
    assert listing["count"] == 1
    entry = listing["results"][0]
    assert entry["status"] == "ready" and entry["version"] == version.pk and entry["row_count"] == 21
    assert entry["person_count"] == 20 and entry["errors"] == [] and entry["build_seconds"] >= 0
    assert entry["optout_watermark"] == 0 and entry["created_at"] and entry["is_current"] is True
    assert incoming_files() == []  # the upload is deleted after the load
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    # the first load derives the undeclared domains: a new dictionary version, then its dummy twin
    assert actions[-6:] == ["dataset.created", "dataset.dictionary_changed", "dataset.version_uploaded",
                            "dataset.version_ready", "dataset.dictionary_changed", "dataset.twin_generated"]
    ready = AuditEvent.objects.get(action="dataset.version_ready")
    assert ready.data["row_count"] == 21 and ready.data["person_count"] == 20


def test_upload_answers_202_and_loading_until_worker(create_dataset, as_custodian):
    ds = create_dataset()
    response = upload(as_custodian, ds["id"], csv_bytes([row(1)]))  # no on_commit: the load never ran
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "loading" and body["version"] == body["id"] and body["number"] == 1
    listing = as_custodian.get(f"/api/v1/datasets/{ds['id']}/versions/").json()["results"][0]
    assert listing["status"] == "loading" and listing["progress"] == {"phase": "validating", "rows_done": 0, "rows_total": None}
    assert len(incoming_files()) == 1
    assert as_custodian.get(f"/api/v1/datasets/{ds['id']}/").json()["current_version"] is None


def test_columns_in_any_order_crlf_and_bom(create_dataset, load):
    ds = create_dataset()
    header = list(reversed(HEADER))
    content = b"\xef\xbb\xbf" + csv_bytes([row(i) for i in range(3)], header, line_end="\r\n")
    version = load(ds["id"], content)
    assert version.status == "ready", version.errors
    names, stored = store_rows(version)
    assert names[0] == "person_id" and len(stored) == 3


def test_empty_values_are_null(create_dataset, load):
    ds = create_dataset()
    version = load(ds["id"], csv_bytes([row(1, age="", weight="", admitted="", smoker="", sex="")]))
    assert version.status == "ready", version.errors
    _, stored = store_rows(version)
    assert stored[0][1:6] == (None, None, None, None, None)


BAD_FILES = {
    "missing column": (csv_bytes([row(1)], [h for h in HEADER if h != "age"]),
                       {"row": None, "column": "age", "value_preview": None,
                        "reason": "missing column: declared for this dataset but not in the file"}),
    "extra column": (csv_bytes([{**row(1), "secret": "x"}], HEADER + ["secret"]),
                     {"row": None, "column": "secret", "value_preview": None, "reason": "unexpected column: not declared for this dataset"}),
    "duplicate header": (csv_bytes([[*row(1).values(), "40"]], HEADER + ["age"]),
                         {"row": None, "column": "age", "value_preview": None, "reason": "duplicate column name in the header"}),
    "bad integer": (csv_bytes([row(1), row(2), row(3, age="forty")]), {"row": 3, "column": "age", "value_preview": "forty", "reason": "not an integer"}),
    "bad date": (csv_bytes([row(1, admitted="2024-13-45")]), {"row": 1, "column": "admitted", "value_preview": "2024-13-45",
                                                                   "reason": "not a date (YYYY-MM-DD)"}),
    "bad float": (csv_bytes([row(1), row(2, weight="heavy")]), {"row": 2, "column": "weight", "value_preview": "heavy",
                                                                   "reason": "not a finite number"}),
    "bad boolean": (csv_bytes([row(1, smoker="sometimes")]), {"row": 1, "column": "smoker", "value_preview": "sometimes",
                                                         "reason": "not a boolean (true/false)"}),
    "bad nhs number": (csv_bytes([row(1), row(2), row(3), row(4, nhs_number=make_invalid_nhs_number(4))]),
                       {"row": 4, "column": "nhs_number", "value_preview": None,
                        "reason": "not a valid NHS number (10 digits with a modulus-11 check digit)"}),
    "short nhs number": (csv_bytes([row(1, nhs_number="12345")]),
                         {"row": 1, "column": "nhs_number", "value_preview": None,
                          "reason": "not a valid NHS number (10 digits with a modulus-11 check digit)"}),
    "missing identifier": (csv_bytes([row(1), row(2, nhs_number="")]),
                           {"row": 2, "column": "nhs_number", "value_preview": None, "reason": "the identifier (NHS number) is missing"}),
    "empty": (b"", {"row": None, "column": None, "value_preview": None, "reason": "the file is empty"}),
    "blank lines only": (b"\n\n  \n", {"row": None, "column": None, "value_preview": None, "reason": "the file is empty"}),
    "header only": (csv_bytes([]), {"row": None, "column": None, "value_preview": None, "reason": "the file has a header but no data rows"}),
    "not utf-8 header": (csv_bytes([row(1)]).replace(b"sex", b"s\xe9x", 1),
                         {"row": None, "column": None, "value_preview": None, "reason": "the file is not valid UTF-8 (in the header line)"}),
    "not utf-8 data": (csv_bytes([row(1), row(2, sex="caf\u00e9")]).decode().encode("utf-8").replace("é".encode(), b"\xe9"),
                       {"row": 2, "column": None, "value_preview": None,
                        "reason": "not valid UTF-8 (declare the file's encoding on the upload, e.g. encoding=cp1252)"}),
    "too many fields": (csv_bytes([row(1)]) + (",".join(row(2).values()) + ",extra\n").encode(),
                        {"row": 2, "column": None, "value_preview": None, "reason": "too many fields in this row"}),
    "too few fields": (csv_bytes([row(1)]) + b"4000000004,F\n", {"row": 2, "column": None, "value_preview": None,
                                                                         "reason": "too few fields in this row"}),
    "gzip": (b"\x1f\x8b\x08\x00rest", {"row": None, "column": None, "value_preview": None,
                                      "reason": "compressed files are not accepted: upload a plain CSV or a Parquet file"}),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_refused_whole(kind, create_dataset, load, as_custodian):
    ds = create_dataset()
    good = load(ds["id"], csv_bytes([row(i) for i in range(5)]))
    assert good.status == "ready"
    content, expected = BAD_FILES[kind]
    version = load(ds["id"], content)

    assert version.status == "failed"
    assert expected in version.errors, version.errors
    assert version.error_count >= 1 and version.file_path == "" and version.row_count is None
    assert not store.version_file(ds["id"], version.number).exists()  # no store file kept
    assert Dataset.objects.get(pk=ds["id"]).current_version_id == good.pk  # current did not move
    assert incoming_files() == []
    entry = as_custodian.get(f"/api/v1/datasets/{ds['id']}/versions/").json()["results"][0]
    assert entry["status"] == "failed" and entry["errors"] and entry["row_count"] is None
    failed = AuditEvent.objects.filter(action="dataset.version_failed").last()
    assert failed.data == {"version": version.number, "version_id": version.pk, "error_count": version.error_count}


def test_errors_name_rows_and_never_identifiers(create_dataset, load):
    ds = create_dataset()
    rows = [row(i) for i in range(2300)]
    for i in range(0, 2300, 2):
        rows[i]["nhs_number"] = make_invalid_nhs_number(i)
    rows[1]["age"] = "x"
    rows[3]["sex"] = "9434765919"  # an NHS number in the wrong column is masked in the preview
    version = load(ds["id"], csv_bytes(rows))
    assert version.status == "failed"
    assert len(version.errors) == 1000 and version.error_count == 1151
    assert version.errors[0] == {"row": 1, "column": "nhs_number", "value_preview": None,
                                 "reason": "not a valid NHS number (10 digits with a modulus-11 check digit)"}
    assert version.errors[1] == {"row": 2, "column": "age", "value_preview": "x", "reason": "not an integer"}
    assert [e["row"] for e in version.errors[2:5]] == [3, 5, 7]
    text = str(version.errors)
    assert make_invalid_nhs_number(0) not in text and "9434765919" not in text


def test_identifier_rows_are_numbered_past_rejected_rows(create_dataset, load):
    ds = create_dataset()
    content = (csv_bytes([row(1)]) + b"4000000004,F\n" + b"4000000004,F,1,2,2024-01-01,true,x,extra\n"
               + csv_bytes([row(2), row(3, nhs_number="1234567890")])[len(csv_bytes([])):])
    version = load(ds["id"], content)
    assert version.status == "failed"
    assert [(e["row"], e["column"]) for e in version.errors] == [(2, None), (3, None), (5, "nhs_number")]


def test_parquet_load_and_bad_parquet(create_dataset, load):
    ds = create_dataset()
    table = pa.table({
        "nhs_number": [make_nhs_number(i) for i in range(4)], "sex": ["F", "M", "F", "M"], "age": pa.array([30, 40, 50, 60], pa.int32()),
        "weight": [1.5, 2.5, 3.5, 4.5], "admitted": ["2024-01-01"] * 4, "smoker": [True, False, None, True], "postcode": ["x"] * 4,
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    version = load(ds["id"], sink.getvalue().to_pybytes(), filename="data.parquet")
    assert version.status == "ready", version.errors
    assert version.source_format == "parquet"
    names, stored = store_rows(version)
    assert names == ["person_id", "sex", "age", "weight", "admitted", "smoker", "_rk", "_rk2"] and len(stored) == 4

    bad = table.set_column(2, "age", pa.array(["30", "forty", "50", "x"]))
    sink = pa.BufferOutputStream()
    pq.write_table(bad, sink)
    failed = load(ds["id"], sink.getvalue().to_pybytes(), filename="anything.bin")  # found by magic number
    assert failed.status == "failed"
    assert failed.errors == [{"row": 2, "column": "age", "value_preview": "forty", "reason": "not an integer"},
                             {"row": 4, "column": "age", "value_preview": "x", "reason": "not an integer"}]


def test_new_upload_becomes_current_and_old_file_is_deleted(create_dataset, load):
    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(3)]))
    v2 = load(ds["id"], csv_bytes([row(i) for i in range(4)]))
    assert (v1.number, v2.number) == (1, 2)
    v1.refresh_from_db()
    assert Dataset.objects.get(pk=ds["id"]).current_version_id == v2.pk
    assert v1.superseded_at and v1.file_deleted_at and not store.abspath(v1.file_path).exists()
    assert store.abspath(v2.file_path).exists()


def test_ingest_task_is_idempotent(create_dataset, as_custodian, django_capture_on_commit_callbacks):
    from environment.tasks import ingest_version

    ds = create_dataset()
    response = upload(as_custodian, ds["id"], csv_bytes([row(i) for i in range(3)]))
    version_id = response.json()["version"]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_version.delay(version_id)
    with django_capture_on_commit_callbacks(execute=True):
        ingest_version.delay(version_id)  # a redelivery: nothing happens
    ingest_version(version_id)
    version = DatasetVersion.objects.get(pk=version_id)
    assert version.status == "ready" and version.attempts == 1
    assert AuditEvent.objects.filter(action="dataset.version_ready").count() == 1
    assert version_ingest(version_id=999_999) is None


def test_a_redelivered_load_after_a_crash_loads_again(create_dataset, as_custodian, django_capture_on_commit_callbacks):
    ds = create_dataset()
    version_id = upload(as_custodian, ds["id"], csv_bytes([row(i) for i in range(3)])).json()["version"]
    DatasetVersion.objects.filter(pk=version_id).update(attempts=1)  # as if a worker died mid-load
    with django_capture_on_commit_callbacks(execute=True):
        version_ingest(version_id=version_id)
    version = DatasetVersion.objects.get(pk=version_id)
    assert version.status == "ready" and version.attempts == 2


def test_upload_size_limit_from_content_length(create_dataset, as_custodian, settings):
    ds = create_dataset()
    settings.TRE_MAX_UPLOAD_BYTES = 1000
    content = csv_bytes([row(i) for i in range(2000)])
    response = upload(as_custodian, ds["id"], content)
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 1000
    assert DatasetVersion.objects.count() == 0 and incoming_files() == []


def test_upload_size_limit_while_streaming(create_dataset, as_custodian, settings):
    """Within the Content-Length slack the handler counts the bytes themselves."""
    ds = create_dataset()
    content = csv_bytes([row(i) for i in range(200)])
    settings.TRE_MAX_UPLOAD_BYTES = len(content) - 1
    assert upload(as_custodian, ds["id"], content).status_code == 413
    assert DatasetVersion.objects.count() == 0 and incoming_files() == []
    settings.TRE_MAX_UPLOAD_BYTES = len(content)
    assert upload(as_custodian, ds["id"], content).status_code == 202


def test_upload_needs_a_file(create_dataset, as_custodian):
    ds = create_dataset()
    response = as_custodian.post(f"/api/v1/datasets/{ds['id']}/versions/", {"other": "x"}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()
    assert DatasetVersion.objects.count() == 0


def test_upload_roles(create_dataset, researcher, client_for, anon, make_user):
    ds = create_dataset()
    content = csv_bytes([row(1)])
    assert upload(anon, ds["id"], content).status_code == 401
    response = upload(client_for(researcher), ds["id"], content)
    assert response.status_code == 403 and "custodian" in response.json()["detail"]
    assert upload(client_for(make_user("dac1", role="dac")), ds["id"], content).status_code == 403
    custodian2 = make_user("custodian2", role="custodian")
    assert upload(client_for(custodian2), 999_999, content).status_code == 404
    assert upload(client_for(researcher), 999_999, content).status_code == 404
    assert client_for(researcher).get(f"/api/v1/datasets/{ds['id']}/versions/").status_code == 403
    assert anon.get(f"/api/v1/datasets/{ds['id']}/versions/").status_code == 401
    assert client_for(custodian2).get("/api/v1/datasets/999999/versions/").status_code == 404
    assert DatasetVersion.objects.count() == 0 and incoming_files() == []


def test_sweeper_resends_a_lost_load(create_dataset, as_custodian, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from environment.services import sweep_stuck_loads

    ds = create_dataset()
    version_id = upload(as_custodian, ds["id"], csv_bytes([row(1)])).json()["version"]  # broker "lost" it
    later = timezone.now() + timedelta(hours=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stuck_loads(now=later) == {"resent": 1, "failed": 0}
    assert DatasetVersion.objects.get(pk=version_id).status == "ready"


def test_declared_columns_reach_the_store_schema(create_dataset, load):
    columns = [{"name": "nhs", "type": "text"}, {"name": "n", "type": "integer"}, {"name": "flag", "type": "boolean", "drop": True}]
    ds = create_dataset(name="small", columns=columns, identifier_column="nhs")
    version = load(ds["id"], csv_bytes([[make_nhs_number(1), "5", "true"]], ["nhs", "n", "flag"]))
    names, stored = store_rows(version, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'data' ORDER BY ordinal_position")
    assert stored == [("person_id", "VARCHAR"), ("n", "BIGINT"), ("_rk", "SMALLINT"), ("_rk2", "BIGINT")]
    assert COLUMNS  # (imported for the shape of the default dataset)


def test_upload_must_be_multipart(create_dataset, as_custodian):
    ds = create_dataset()
    response = as_custodian.post(f"/api/v1/datasets/{ds['id']}/versions/", {"file": "nhs_number\n"}, format="json")
    assert response.status_code == 415
    assert DatasetVersion.objects.count() == 0


def test_progress_is_reported_while_writing(tmp_path, monkeypatch):
    from environment import ingest

    monkeypatch.setattr(filesources, "PROGRESS_INTERVAL", 0.01)
    source = tmp_path / "big.csv"
    source.write_bytes(csv_bytes([row(i % 5000) for i in range(300_000)]))
    seen = []
    dictionary, _ = declare({"name": "big", "identifier_column": "nhs_number", "columns": COLUMNS})
    result = ingest.build_version_file(
        source=source, fmt="csv", dictionary=dictionary, out_path=tmp_path / "out.duckdb",
        temp_dir=tmp_path, progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert result.ok and result.row_count == 300_000 and result.person_count == 5000
    assert seen[0] == ("validating", 0, None)  # from the first second, before the file is counted
    loading = [(done, total) for phase, done, total in seen if phase == "loading"]
    assert loading and all(total == 300_000 and 0 <= done <= total for done, total in loading)


def test_sweep_store_removes_leftovers_of_crashes(create_dataset, as_custodian):
    import os
    import time

    from environment.tasks import sweep_store

    ds = create_dataset()
    upload(as_custodian, ds["id"], csv_bytes([row(1)]))  # still waiting for its load: kept
    waiting = incoming_files()
    old = time.time() - 2 * 24 * 3600
    orphan = store.incoming_dir() / "orphan.upload"
    orphan.write_bytes(b"x")
    partial = store.dataset_dir(ds["id"]) / ".v9-abc.tmp"
    partial.write_bytes(b"x")
    spill = store.scratch_dir()
    for path in (orphan, partial, spill, store.incoming_dir() / waiting[0]):
        os.utime(path, (old, old))
    result = sweep_store()
    assert result["stale_removed"] == 3
    assert not orphan.exists() and not partial.exists() and not spill.exists()
    assert incoming_files() == waiting


def test_a_data_line_as_header_is_not_echoed(create_dataset, load):
    ds = create_dataset()
    first = row(1)
    content = (",".join(first.values()) + "\n" + ",".join(row(2).values()) + "\n").encode()
    version = load(ds["id"], content)
    assert version.status == "failed"
    text = str(version.errors)
    assert first["nhs_number"] not in text and "AB1 1XY" not in text and "'f'" not in text and "false" not in text
    assert {"row": None, "column": None, "value_preview": None,
            "reason": "the first line must be the header, naming the declared columns"} in version.errors
