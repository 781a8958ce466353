"""No raw NHS number in the database (a full pg_dump), the audit log, the logs or the store."""

import logging
import os
import subprocess

import pytest
from django.db import connection

from environment import store
from environment.pseudonym import make_nhs_number
from environment.services import erase_opted_out
from tests.factories import make_invalid_nhs_number

from .conftest import csv_bytes, row, upload


def _pg_dump() -> str:
    db = connection.settings_dict
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    out = subprocess.run(
        ["pg_dump", "-h", db.get("HOST") or "127.0.0.1", "-p", str(db.get("PORT") or 5432), "-U", db.get("USER") or "postgres",
         "--no-owner", db["NAME"]],
        capture_output=True, env=env, timeout=120, check=True,
    )
    return out.stdout.decode("utf-8", errors="replace")


def _variants(number: str) -> list[str]:
    return [number, f"{number[:3]} {number[3:6]} {number[6:]}", f"{number[:3]}-{number[3:6]}-{number[6:]}"]


@pytest.mark.django_db(transaction=True)
def test_no_raw_nhs_number_anywhere(create_dataset, as_custodian, caplog):
    caplog.set_level(logging.DEBUG)
    ds = create_dataset()
    loaded = [make_nhs_number(i) for i in range(40)]
    rows = [row(i) for i in range(40)]
    rows[3]["nhs_number"] = _variants(loaded[3])[1]
    assert upload(as_custodian, ds["id"], csv_bytes(rows)).status_code == 202  # committed: the load ran on commit
    invalid = [make_invalid_nhs_number(i) for i in range(100, 105)]
    bad_rows = [row(i) for i in range(40, 45)] + [row(0, nhs_number=n) for n in invalid]
    assert upload(as_custodian, ds["id"], csv_bytes(bad_rows)).status_code == 202  # fails: errors name rows only
    opted = [make_nhs_number(i) for i in (1, 2, 200)]
    response = as_custodian.post("/api/v1/opt-outs/", {"nhs_numbers": [opted[0], _variants(opted[1])[2], opted[2]]}, format="json")
    assert response.status_code == 202
    refused = as_custodian.post("/api/v1/opt-outs/", {"nhs_numbers": [make_nhs_number(300), invalid[0]]}, format="json")
    assert refused.status_code == 400 and invalid[0] not in refused.content.decode()
    erase_opted_out()

    from environment.models import DatasetVersion

    statuses = sorted(DatasetVersion.objects.values_list("origin", "status"))
    assert statuses == [("erasure", "ready"), ("upload", "failed"), ("upload", "ready")]

    dump = _pg_dump()
    assert "optout.registered" in dump and "dataset.erased" in dump  # the dump holds the audit log
    logs = caplog.text
    store_bytes = b"".join(p.read_bytes() for p in store.root().rglob("*") if p.is_file())
    for number in loaded + opted + invalid + [make_nhs_number(300), make_nhs_number(40)]:
        for text in _variants(number):
            assert text not in dump, "an NHS number is in the database"
            assert text not in logs, "an NHS number is in the logs"
            assert text.encode() not in store_bytes, "an NHS number is in the store"
