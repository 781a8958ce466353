"""End to end on a real Celery worker (Redis broker, the test database): a load, then an erasure."""

import pytest

from environment import store
from environment.models import Dataset, DatasetVersion
from environment.pseudonym import make_nhs_number, person_id_for
from tests.conftest import wait_for

from .conftest import COLUMNS, csv_bytes, row, store_rows, upload

pytestmark = pytest.mark.worker


def test_load_and_erasure_on_a_real_worker(celery_worker_process, make_user, client_for):
    custodian = make_user("custodian_w", role="custodian", organisation="Trust W")
    client = client_for(custodian)
    ds = client.post("/api/v1/datasets/", {"name": "admissions", "title": "A", "identifier_column": "nhs_number",
                                            "columns": COLUMNS}, format="json").json()
    numbers = [make_nhs_number(i) for i in range(50)]
    response = upload(client, ds["id"], csv_bytes([row(i) for i in range(50)] + [row(7)]))
    assert response.status_code == 202 and response.json()["status"] == "loading"
    version_id = response.json()["version"]

    version = wait_for(lambda: DatasetVersion.objects.filter(pk=version_id).exclude(status="loading").first(),
                       timeout=60, message="the worker to load the version")
    assert version.status == "ready", (version.errors, celery_worker_process.log()[-3000:])
    assert (version.row_count, version.person_count) == (51, 50)
    _, stored = store_rows(version, "SELECT DISTINCT person_id FROM data")
    assert {r[0] for r in stored} == {person_id_for(n) for n in numbers}
    assert client.get(f"/api/v1/datasets/{ds['id']}/").json()["current_version"] == version_id
    wait_for(lambda: not any((store.root() / "incoming").iterdir()), timeout=10, message="the upload to be deleted")

    # an opt-out: registration commits, the erasure task runs on the worker
    assert client.post("/api/v1/opt-outs/", {"nhs_numbers": [numbers[7], numbers[8]]}, format="json").status_code == 202
    current = wait_for(
        lambda: Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version.origin == "erasure"
        and Dataset.objects.select_related("current_version").get(pk=ds["id"]).current_version,
        timeout=60, message="the worker to erase the opted-out persons")
    assert (current.row_count, current.person_count, current.rows_removed, current.persons_removed) == (48, 48, 3, 2)
    wait_for(lambda: DatasetVersion.objects.get(pk=version_id).file_deleted_at is not None, timeout=30,
             message="the old file to be deleted")
    assert not store.abspath(version.file_path).exists()
    assert client.get("/api/v1/opt-outs/status/").json()["pending_erasure"] == 0
    log = celery_worker_process.log()
    assert "environment.tasks.ingest_version" in log and "environment.tasks.erase_opted_out" in log
    assert not any(n in log for n in numbers)
