"""A full or unwritable store during ingestion: the load fails with a clear error, no partial
version is left, and the current version (and its file) are untouched. Uses a real, tiny tmpfs."""

import subprocess
import tempfile
from pathlib import Path

import pytest

from demo.data import COLUMNS, records, to_csv
from environment.models import Dataset, DatasetVersion
from tests.scenario import ok

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tiny_store(settings):
    path = Path(tempfile.mkdtemp(prefix="tre-tiny-store-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test (run as root): {mounted.stderr}")
    settings.TRE_STORE_DIR = path
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def custodian(make_user, client_for):
    return client_for(make_user("store_custodian", role="custodian", organisation="Store Trust"))


def _upload(client, dataset_id, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(f"/api/v1/datasets/{dataset_id}/versions/", {"file": SimpleUploadedFile("d.csv", content, "text/csv")},
                       format="multipart")


def _dataset(custodian):
    return ok(custodian.post("/api/v1/datasets/", {"name": "spells", "title": "Spells", "identifier_column": "nhs_number",
                                                   "columns": COLUMNS}, format="json"))


def _files(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}


def test_a_full_store_fails_the_load_cleanly(tiny_store, custodian):
    ds = _dataset(custodian)
    assert _upload(custodian, ds["id"], to_csv(records(200, 40))).status_code == 202
    first = Dataset.objects.get(pk=ds["id"]).current_version
    assert first is not None and first.status == "ready"
    before = _files(tiny_store)
    big = to_csv(records(24_000, 4_000, seed=5))  # about 2 MB: the upload fits, the new version does not
    assert 1_500_000 < len(big) < 2_600_000
    response = _upload(custodian, ds["id"], big)
    assert response.status_code == 202, response.content  # the upload fits; the load fails
    dataset = Dataset.objects.get(pk=ds["id"])
    assert dataset.current_version_id == first.pk  # current did not move
    failed = DatasetVersion.objects.filter(dataset=dataset).exclude(pk=first.pk)
    for version in failed:
        assert version.status == "failed" and version.errors, version.errors
        assert not version.file_path
    message = str([v.errors for v in failed]) + response.content.decode(errors="replace")
    assert "ran out of disk space" in message, message
    after = _files(tiny_store)
    assert after <= before | {p for p in after if p.startswith(("tmp/", "sandboxes/"))}, after - before  # nothing partial kept
    assert (tiny_store / first.file_path).exists()  # the current version's file is intact


def test_an_unwritable_store_fails_the_load_cleanly(tiny_store, custodian):
    ds = _dataset(custodian)
    assert _upload(custodian, ds["id"], to_csv(records(100, 20))).status_code == 202
    first = Dataset.objects.get(pk=ds["id"]).current_version
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_store)], check=True)
    try:
        response = _upload(custodian, ds["id"], to_csv(records(100, 20, seed=9)))
        assert response.status_code == 503 and response.json()["dependency"] == "store", response.content
        assert Dataset.objects.get(pk=ds["id"]).current_version_id == first.pk
        assert not DatasetVersion.objects.filter(dataset_id=ds["id"], status="ready").exclude(pk=first.pk).exists()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_store)], check=True)
