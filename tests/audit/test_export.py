"""The export carries every hashed field in its hashed form, and scripts/verify_audit_export.py
(standard library only) verifies it without the server: a real export passes, a tampered one
(changed data, a deleted row, reordered rows) fails naming the first bad seq."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import transaction

from audit.chain import hash_body
from audit.models import AuditEvent
from audit.services import audit_record
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "verify_audit_export.py"
FIELDS = ["seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data", "ip",
          "prev_hash", "hash"]


@pytest.fixture
def auditor(make_user):
    return make_user("audrey", role="auditor")


@pytest.fixture
def events(make_user, rf, db):
    """A chain with what makes canonical JSON tricky: non-ASCII text, quotes, commas and newlines,
    floats, nested objects, null and empty fields, an IP address and a user id."""
    eve = make_user("évé")
    request = rf.get("/", REMOTE_ADDR="192.0.2.7")
    with transaction.atomic():
        audit_record(actor=eve, action="project.submitted", target=("project", 7), project=7, request=request,
                     data={"comment": 'a, "b"\nnew line – ünïcode ✓', "round": 1, "ratio": 0.9, "nested": {"z": [1, 2.5], "a": None}})
        audit_record(actor=None, action="system.ping", data={})
        audit_record(actor="fay", action="query.completed", target=("query", 3), project=8,
                     data={"elapsed_ms": 12.25, "empty": "", "tiny": 0.00001})
    return eve


def _export(client, file_format=None, **params) -> bytes:
    if file_format:
        params["file_format"] = file_format
    response = client.get("/api/v1/audit/events/export/", params)
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def _run(tmp_path: Path, content: bytes, suffix: str, *args) -> subprocess.CompletedProcess:
    path = tmp_path / f"export{suffix}"
    path.write_bytes(content)
    return subprocess.run([sys.executable, str(SCRIPT), *args, str(path)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_csv_export_has_every_hashed_field_in_the_hashed_form(events, auditor, client_for):
    body = _export(client_for(auditor))
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert list(rows[0]) == FIELDS
    first = rows[0]
    stored = AuditEvent.objects.get(seq=1)
    assert first["actor"] == "évé" and first["actor_id"] == str(events.pk) and first["ip"] == "192.0.2.7"
    assert first["timestamp"] == stored.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    assert first["data"] == ('{"comment":"a, \\"b\\"\\nnew line – ünïcode ✓","nested":{"a":null,"z":[1,2.5]},'
                             '"ratio":0.9,"round":1}')
    ping = rows[1]
    assert (ping["actor"], ping["actor_id"], ping["project"], ping["ip"], ping["data"]) == ("", "", "", "", "{}")
    # the hash recomputes from the exported text alone
    for row in rows:
        recomputed = hash_body(row["prev_hash"], seq=int(row["seq"]), timestamp=row["timestamp"], actor=row["actor"],
                               actor_id=int(row["actor_id"]) if row["actor_id"] else None, action=row["action"],
                               target_type=row["target_type"], target_id=row["target_id"],
                               project=int(row["project"]) if row["project"] else None,
                               data=json.loads(row["data"]), ip=row["ip"] or None)
        assert recomputed == row["hash"], row["seq"]


def test_jsonl_export(events, auditor, client_for):
    lines = _export(client_for(auditor), "jsonl").decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(r) for r in rows] == [FIELDS] * len(rows)
    assert rows[0]["actor_id"] == events.pk and rows[1]["actor_id"] is None and rows[1]["ip"] is None
    assert json.loads(rows[2]["data"]) == {"elapsed_ms": 12.25, "empty": "", "tiny": 0.00001}
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert AuditEvent.objects.filter(action="audit.exported", data__file_format="jsonl").count() == 1


def test_an_unknown_format_is_a_400(auditor, client_for, db):
    response = client_for(auditor).get("/api/v1/audit/events/export/", {"file_format": "xml"})
    assert response.status_code == 400 and response.json() == {"file_format": ["one of csv, jsonl, not 'xml'"]}
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_the_export_is_for_auditors_only(anon, make_user, client_for, db):
    url = "/api/v1/audit/events/export/?file_format=jsonl"
    assert anon.get(url).status_code == 401
    assert client_for(make_user(role="dac")).get(url).status_code == 403


@pytest.mark.parametrize("file_format, suffix", [("csv", ".csv"), ("jsonl", ".jsonl")])
def test_the_script_verifies_a_real_export(events, auditor, client_for, tmp_path, file_format, suffix):
    content = _export(client_for(auditor), file_format)
    result = _run(tmp_path, content, suffix)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    last = AuditEvent.objects.order_by("-seq").first()
    assert verdict == {"valid": True, "events_checked": last.seq, "first_invalid_seq": None, "last_seq": last.seq,
                       "last_hash": last.hash}


def _tamper_csv(content: bytes, change) -> bytes:
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    rows = change(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _tamper_jsonl(content: bytes, change) -> bytes:
    rows = change([json.loads(line) for line in content.decode().splitlines()])
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _changed_data(rows):
    rows[2]["data"] = rows[2]["data"].replace("12.25", "13.25")
    return rows


def _changed_actor(rows):
    rows[0]["actor"] = "mallory"
    return rows


def _deleted(rows):
    return rows[:1] + rows[2:]


def _reordered(rows):
    rows[1], rows[2] = rows[2], rows[1]
    return rows


def _rehashed_deletion(rows):
    """Delete seq 2 and mend the link: seq 3's hash no longer matches its new prev_hash."""
    rows = rows[:1] + rows[2:]
    rows[1]["prev_hash"] = rows[0]["hash"]
    return rows


@pytest.mark.parametrize("change, first_bad, reason", [
    (_changed_data, 3, "hash does not match"),
    (_changed_actor, 1, "hash does not match"),
    (_deleted, 3, "missing events: seq 2 to 2"),
    (_reordered, 3, "missing events: seq 2 to 2"),  # seq 3 came straight after seq 1
    (_rehashed_deletion, 3, "missing events"),
])
@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_the_script_names_the_first_bad_seq_of_a_tampered_export(events, auditor, client_for, tmp_path, change,
                                                                 first_bad, reason, file_format):
    content = _export(client_for(auditor), file_format)
    tampered = (_tamper_csv if file_format == "csv" else _tamper_jsonl)(content, change)
    result = _run(tmp_path, tampered, f".{file_format}")
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is False and verdict["first_invalid_seq"] == first_bad
    assert reason in verdict["reason"] and f"seq {first_bad}" in result.stderr


def test_partial_exports(events, auditor, client_for, tmp_path):
    client = client_for(auditor)
    filtered = _export(client, "csv", actor="fay")
    assert _run(tmp_path, filtered, ".csv").returncode == 1  # a complete export must start at seq 1
    result = _run(tmp_path, filtered, ".csv", "--partial")
    assert result.returncode == 0 and json.loads(result.stdout)["events_checked"] == 1
    # in a partial export a changed row is still caught, and rows must still go up
    assert _run(tmp_path, _tamper_csv(filtered, lambda rows: [{**rows[0], "action": "x"}]), ".csv",
                "--partial").returncode == 1
    full = _export(client, "csv")
    assert _run(tmp_path, _tamper_csv(full, _deleted), ".csv", "--partial").returncode == 0  # a gap is allowed
    assert _run(tmp_path, _tamper_csv(full, _reordered), ".csv", "--partial").returncode == 1


def test_the_script_refuses_what_it_cannot_read(tmp_path):
    assert _run(tmp_path, b"not,an,export\n1,2,3\n", ".csv").returncode == 2
    assert _run(tmp_path, b"", ".jsonl").returncode == 2
    assert _run(tmp_path, b"{not json\n", ".jsonl").returncode == 1


def test_the_script_uses_the_standard_library_only():
    import ast

    tree = ast.parse(SCRIPT.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)
