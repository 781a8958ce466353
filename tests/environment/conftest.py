"""Helpers for the environment's tests: datasets declared through the API, files uploaded through
the API (loads run in-process unless a test asks for the real worker), rows read back from the
store."""

import csv
import io
from pathlib import Path

import duckdb
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from environment.pseudonym import make_nhs_number

COLUMNS = [
    {"name": "nhs_number", "type": "text", "description": "the direct identifier"},
    {"name": "sex", "type": "text"},
    {"name": "age", "type": "integer"},
    {"name": "weight", "type": "float"},
    {"name": "admitted", "type": "date"},
    {"name": "smoker", "type": "boolean"},
    {"name": "postcode", "type": "text", "drop": True},
]
HEADER = [c["name"] for c in COLUMNS]


def row(seed: int, **overrides) -> dict:
    """A good row for ``COLUMNS`` (person ``seed``)."""
    values = {"nhs_number": make_nhs_number(seed), "sex": "F" if seed % 2 else "M", "age": str(20 + seed % 60),
              "weight": f"{60 + seed % 30}.5", "admitted": f"2024-0{1 + seed % 9}-1{seed % 10}",
              "smoker": "true" if seed % 3 == 0 else "false", "postcode": f"AB{seed % 9} 1XY"}
    values.update(overrides)
    return values


def csv_bytes(rows, header=HEADER, *, line_end="\n") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(header)
    for r in rows:
        writer.writerow([r.get(h, "") for h in header] if isinstance(r, dict) else r)
    return out.getvalue().encode("utf-8")


def upload(client, dataset_id, content: bytes, filename="data.csv"):
    return client.post(f"/api/v1/datasets/{dataset_id}/versions/",
                       {"file": SimpleUploadedFile(filename, content, content_type="text/csv")}, format="multipart")


def store_rows(version_or_path, sql="SELECT * FROM data ORDER BY ALL"):
    from environment import store

    path = version_or_path if isinstance(version_or_path, (str, Path)) else store.abspath(version_or_path.file_path)
    con = duckdb.connect(str(path), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return names, cursor.fetchall()
    finally:
        con.close()


def incoming_files():
    from environment import store

    base = store.root() / "incoming"
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


@pytest.fixture(autouse=True)
def _own_store(settings, tmp_path):
    """Each test gets an empty store (a worker started by the test inherits it)."""
    path = tmp_path / "store"
    path.mkdir()
    settings.TRE_STORE_DIR = path
    yield path


@pytest.fixture
def custodian(make_user):
    return make_user("custodian1", role="custodian", organisation="Trust A")


@pytest.fixture
def researcher(make_user):
    return make_user("researcher1", organisation="University B")


@pytest.fixture
def as_custodian(custodian, client_for):
    return client_for(custodian)


@pytest.fixture
def create_dataset(as_custodian):
    def make(name="admissions", columns=None, identifier_column="nhs_number", **extra):
        body = {"name": name, "title": name.title(), "description": "test data", "identifier_column": identifier_column,
                "columns": columns or COLUMNS, **extra}
        response = as_custodian.post("/api/v1/datasets/", body, format="json")
        assert response.status_code == 201, response.json()
        return response.json()

    return make


@pytest.fixture
def load(as_custodian, django_capture_on_commit_callbacks):
    """Upload ``content`` and run the load in-process (on commit). Returns the version (model)."""
    from environment.models import DatasetVersion

    def do(dataset_id, content: bytes, filename="data.csv"):
        with django_capture_on_commit_callbacks(execute=True):
            response = upload(as_custodian, dataset_id, content, filename)
        assert response.status_code == 202, response.content
        return DatasetVersion.objects.get(pk=response.json()["version"])

    return do
