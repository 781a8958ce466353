"""The sandbox: the datasets as relations, joins on person_id, and nothing else on the machine."""

import threading

import duckdb
import pyarrow as pa
import pytest

from environment import store
from environment.models import SandboxLease
from environment.pseudonym import make_nhs_number, person_id_for
from environment.sandbox import dataset_schema, open_sandbox
from environment.services import DatasetNotLoaded, delete_superseded_files

from .conftest import csv_bytes, row

DRUGS = [{"name": "nhs", "type": "text"}, {"name": "drug", "type": "text"}, {"name": "cost", "type": "float"}]


@pytest.fixture
def two_datasets(create_dataset, load):
    a = create_dataset("admissions")
    b = create_dataset("prescriptions", columns=DRUGS, identifier_column="nhs")
    va = load(a["id"], csv_bytes([row(i) for i in range(10)]))
    vb = load(b["id"], csv_bytes([[make_nhs_number(i), f"drug{i % 3}", str(i)] for i in range(5, 15)], ["nhs", "drug", "cost"]))
    assert va.status == vb.status == "ready"
    return a, b, va, vb


def test_relations_and_join_on_person_id(two_datasets):
    a, b, va, vb = two_datasets
    with open_sandbox([a["id"], b["id"]]) as sandbox:
        assert sandbox.versions == {"admissions": va.pk, "prescriptions": vb.pk}
        assert sandbox.optout_watermark == 0
        con = sandbox.conn
        cols = [r[0] for r in con.execute("DESCRIBE admissions").fetchall()]
        # the record keys ride along for the cell-key method; no query may name them (not in the dictionary)
        assert cols == ["person_id", "sex", "age", "weight", "admitted", "smoker", "_rk", "_rk2"]
        assert [r[0] for r in con.execute("DESCRIBE prescriptions").fetchall()] == ["person_id", "drug", "cost", "_rk", "_rk2"]
        assert con.execute("DESCRIBE tre_optouts").fetchall()[0][:3] == ("person_id", "VARCHAR", "NO")
        joined = con.execute(
            "SELECT a.person_id FROM admissions a JOIN prescriptions p ON a.person_id = p.person_id ORDER BY 1"
        ).fetchall()
        assert sorted(r[0] for r in joined) == sorted(person_id_for(make_nhs_number(i)) for i in range(5, 10))
        assert con.execute("SELECT count(DISTINCT person_id) FROM admissions JOIN prescriptions USING (person_id)").fetchall() == [(5,)]
        assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] >= 1


def test_dataset_schema(two_datasets):
    a, b, *_ = two_datasets
    assert dataset_schema([a["id"], "prescriptions"]) == {
        "admissions": {"person_id": "text", "sex": "text", "age": "integer", "weight": "float", "admitted": "date", "smoker": "boolean"},
        "prescriptions": {"person_id": "text", "drug": "text", "cost": "float"},
    }


def test_a_dataset_without_data(create_dataset):
    ds = create_dataset()
    with pytest.raises(DatasetNotLoaded) as info:
        with open_sandbox([ds["id"]]):
            pass
    assert isinstance(info.value, LookupError)


def _alias(con):
    return con.execute("SELECT database_name FROM duckdb_databases() WHERE database_name LIKE 'tre_src_%' LIMIT 1").fetchall()[0][0]


ESCAPES = [
    "SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_parquet('{outside}')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT content FROM read_blob('{version_file}')",
    "SELECT * FROM read_csv('{version_file}')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_json('/etc/passwd')",
    "COPY (SELECT 1) TO '{written}'",
    "COPY (SELECT * FROM admissions) TO '{written}' (FORMAT parquet)",
    "EXPORT DATABASE '{written_dir}'",
    "ATTACH '{version_file}' AS again",
    "ATTACH '{outside_db}' AS other",
    "ATTACH ':memory:' AS scratch",
    "INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{outside}'",
    "SET enable_external_access = true",
    "SET memory_limit = '64GB'",
    "SET threads = 64",
    "PRAGMA threads = 64",
    "RESET memory_limit",
    "SET temp_directory = '{written_dir}'",
    "SET disabled_filesystems = ''",
    "SET lock_configuration = false",
    "PRAGMA enable_profiling",
    "SET profiling_output = '{written}'",
    "CREATE TABLE t (x INTEGER)",
    "CREATE TABLE main.t AS SELECT 1 AS x",
    "CREATE VIEW v AS SELECT 1 AS x",
    "CREATE MACRO m(x) AS x",
    "CREATE SEQUENCE s",
    "INSERT INTO admissions SELECT * FROM admissions",
    "UPDATE admissions SET age = 0",
    "DELETE FROM admissions",
    "DROP VIEW admissions",
    "DROP TABLE admissions",
    "ALTER VIEW admissions RENAME TO x",
    "INSERT INTO tre_optouts VALUES ('x')",
    "DELETE FROM tre_optouts",
    "DELETE FROM tre_optout_pending",
    "DROP TABLE tre_optouts",
    "INSERT INTO {alias}.data SELECT * FROM {alias}.data",
    "UPDATE {alias}.data SET age = 0",
    "DELETE FROM {alias}.data",
    "DROP TABLE {alias}.data",
    "CREATE TABLE {alias}.t (x INTEGER)",
    "CREATE TEMP TABLE leak AS SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM python_table",
    "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')",
]


@pytest.mark.parametrize("statement", ESCAPES)
def test_escape_attempts_fail(statement, two_datasets, tmp_path):
    a, _, va, _ = two_datasets
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    outside_db = tmp_path / "outside.duckdb"
    duckdb.connect(str(outside_db)).close()
    written = tmp_path / "written.csv"
    python_table = pa.table({"x": [1]})  # noqa: F841 — a replacement scan must not find it
    with open_sandbox([a["id"]]) as sandbox:
        con = sandbox.conn
        sql = statement.format(outside=outside, outside_db=outside_db, written=written, written_dir=tmp_path / "out",
                               version_file=store.abspath(va.file_path), alias=_alias(con))
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
        # and the sandbox is intact afterwards
        assert con.execute("SELECT count(*) FROM admissions").fetchall() == [(10,)]
        assert con.execute("SELECT current_setting('enable_external_access')").fetchall() == [(False,)]
    assert not written.exists() and not (tmp_path / "out").exists()


def test_temp_tables_are_in_memory_only(two_datasets, tmp_path, settings):
    """DuckDB always allows the temp catalog: what lands there stays in memory, under the limit."""
    a, *_ = two_datasets
    settings.TRE_SANDBOX_MEMORY_LIMIT, settings.TRE_SANDBOX_THREADS = "200MB", 1
    with open_sandbox([a["id"]]) as sandbox:
        con = sandbox.conn
        assert con.execute("SELECT current_setting('threads')").fetchall() == [(1,)]
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith(("190", "200"))
        con.execute("CREATE TEMP TABLE t AS SELECT count(*) AS n FROM admissions")
        assert con.execute("SELECT n FROM t").fetchall() == [(10,)]
        assert con.execute("SELECT current_setting('temp_directory')").fetchall() == [("",)]
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TEMP TABLE big AS SELECT repeat('x', 1000) || i AS s FROM range(100000000) t(i)").fetchall()


def test_detach_then_attach_read_write_fails(two_datasets):
    a, _, va, _ = two_datasets
    with open_sandbox([a["id"]]) as sandbox:
        con = sandbox.conn
        alias = _alias(con)
        con.execute(f"DETACH {alias}")  # allowed, but only breaks this sandbox
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{store.abspath(va.file_path)}' AS {alias}")
        with pytest.raises(duckdb.Error):
            con.execute("SELECT count(*) FROM admissions").fetchall()


def test_interrupt_stops_a_running_query(two_datasets):
    a, *_ = two_datasets
    outcome = {}
    with open_sandbox([a["id"]]) as sandbox:
        def run():
            try:
                sandbox.conn.execute("SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3").fetchall()
                outcome["result"] = "finished"
            except duckdb.InterruptException:
                outcome["result"] = "interrupted"

        thread = threading.Thread(target=run)
        thread.start()
        import time

        time.sleep(0.3)
        sandbox.conn.interrupt()
        thread.join(timeout=10)
        assert outcome == {"result": "interrupted"}


def test_lease_keeps_the_file_until_the_sandbox_closes(create_dataset, load, django_capture_on_commit_callbacks):
    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(i) for i in range(4)]))
    with open_sandbox([ds["id"]]) as sandbox:
        assert SandboxLease.objects.filter(version=v1).count() == 1
        v2 = load(ds["id"], csv_bytes([row(i) for i in range(6)]))  # supersedes v1 while it is read
        assert v2.status == "ready"
        assert delete_superseded_files() == 0
        v1.refresh_from_db()
        assert v1.superseded_at and v1.file_deleted_at is None and store.abspath(v1.file_path).exists()
        assert sandbox.conn.execute("SELECT count(*) FROM admissions").fetchall() == [(4,)]  # still v1
        catalog_dirs = list((store.root() / "sandboxes").iterdir())
        assert len(catalog_dirs) == 1
    assert SandboxLease.objects.count() == 0
    assert list((store.root() / "sandboxes").iterdir()) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert delete_superseded_files() == 1
    v1.refresh_from_db()
    assert v1.file_deleted_at and not store.abspath(v1.file_path).exists()
    with open_sandbox(["admissions"]) as sandbox:
        assert sandbox.versions == {"admissions": v2.pk}
        assert sandbox.conn.execute("SELECT count(*) FROM admissions").fetchall() == [(6,)]


def test_expired_lease_no_longer_holds(create_dataset, load):
    from datetime import timedelta

    from django.utils import timezone

    ds = create_dataset()
    v1 = load(ds["id"], csv_bytes([row(1)]))
    SandboxLease.objects.create(version=v1, holder="dead-worker:1", expires_at=timezone.now() - timedelta(seconds=1))
    SandboxLease.objects.create(version=v1, holder="live-worker:2", expires_at=timezone.now() + timedelta(hours=1))
    load(ds["id"], csv_bytes([row(2)]))
    assert delete_superseded_files() == 0  # the live lease holds
    SandboxLease.objects.filter(holder="live-worker:2").delete()
    assert delete_superseded_files() == 1 and SandboxLease.objects.count() == 0
