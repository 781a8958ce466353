"""Odd inputs answer 4xx, never 500."""

import pytest

from .conftest import csv_bytes, row, upload


@pytest.mark.parametrize("path", [
    "/api/v1/datasets/99999999999999999999999/",
    "/api/v1/datasets/99999999999999999999999/versions/",
    "/api/v1/datasets/1/versions/99999999999999999999999/",
    "/api/v1/datasets/0/",
])
def test_huge_ids_are_404(as_custodian, path):
    assert as_custodian.get(path).status_code == 404


def test_unknown_version_of_a_dataset_is_404(create_dataset, load, as_custodian):
    a = create_dataset("first")
    b = create_dataset("second")
    version = load(a["id"], csv_bytes([row(1)]))
    assert as_custodian.get(f"/api/v1/datasets/{a['id']}/versions/{version.pk}/").json()["status"] == "ready"
    assert as_custodian.get(f"/api/v1/datasets/{b['id']}/versions/{version.pk}/").status_code == 404


@pytest.mark.parametrize("payload", [
    {"name": "x\x00y", "title": "t", "identifier_column": "a", "columns": [{"name": "a", "type": "text"}]},
    {"name": "ok_name", "title": "t", "identifier_column": "a", "columns": "not a list"},
    {"name": "ok_name", "title": "t", "identifier_column": "a", "columns": [None]},
    {"name": "ok_name", "title": "t", "identifier_column": "a", "columns": [{"name": 5, "type": "text"}]},
    {"name": "ok_name", "title": "t", "identifier_column": ["a"], "columns": [{"name": "a", "type": "text"}]},
    {"name": "ok_name", "title": "t" * 500, "identifier_column": "a", "columns": [{"name": "a", "type": "text"}]},
    {"name": "ok_name", "title": "t", "identifier_column": "a", "columns": [{"name": "a", "type": "text", "drop": "maybe"}]},
])
def test_odd_dataset_bodies_are_400(as_custodian, payload):
    assert as_custodian.post("/api/v1/datasets/", payload, format="json").status_code == 400


def test_dataset_with_only_the_identifier(create_dataset, load):
    ds = create_dataset("ids_only", columns=[{"name": "nhs", "type": "text"}], identifier_column="nhs")
    version = load(ds["id"], b"nhs\n9434765919\n")
    assert version.status == "ready" and version.row_count == 1


def test_random_bytes_fail_cleanly(create_dataset, load):
    ds = create_dataset()
    version = load(ds["id"], bytes(range(256)) * 10)
    assert version.status == "failed" and version.errors


def test_two_file_parts_take_the_first(create_dataset, as_custodian, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    ds = create_dataset()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_custodian.post(f"/api/v1/datasets/{ds['id']}/versions/", {
            "file": [SimpleUploadedFile("a.csv", csv_bytes([row(1)])), SimpleUploadedFile("b.csv", csv_bytes([row(2), row(3)]))],
        }, format="multipart")
    assert response.status_code == 202
    from environment.models import DatasetVersion

    assert DatasetVersion.objects.get().row_count == 1
    assert upload  # (helper kept for symmetry)
