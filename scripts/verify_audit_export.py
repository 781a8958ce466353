#!/usr/bin/env python3
"""Verify an export of tre's audit log without the server (standard library only).

    python3 scripts/verify_audit_export.py audit-events.csv
    python3 scripts/verify_audit_export.py audit-events.jsonl
    python3 scripts/verify_audit_export.py --partial filtered.csv   # an export made with filters

Each event's ``hash`` is SHA-256 over the previous event's hash followed by the canonical JSON of
the event's fields (docs/audit.md):

    hash = sha256(prev_hash || '{"action":…,"actor":…,"actor_id":…,"data":…,"ip":…,"project":…,
                               "seq":…,"target_id":…,"target_type":…,"timestamp":…}')

with the keys sorted, no spaces, UTF-8 and non-ASCII characters written as themselves. ``data`` is
exported as its canonical JSON text and is inserted verbatim.

A complete export (the default) must start at seq 1 with ``prev_hash`` = 64 zeros and continue
without a gap; every row's ``prev_hash`` must be the previous row's ``hash``. With ``--partial``
(an export filtered by actor, action, dates …) rows may be missing between the rows present: each
row's own hash is still checked, and so is every link between consecutive seqs.

Exit status: 0 valid, 1 invalid (the first bad ``seq`` is named), 2 the file cannot be read.
To trust the result, compare the last hash printed with one obtained independently (for example
from ``GET /api/v1/audit/verify/`` on a later day, or a hash you recorded earlier).
"""

import argparse
import csv
import hashlib
import json
import sys

GENESIS = "0" * 64
FIELDS = ("seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data", "ip",
          "prev_hash", "hash")
HASHED = sorted(f for f in FIELDS if f not in ("prev_hash", "hash"))
NULLABLE = {"actor_id", "project", "ip"}
INTEGERS = {"seq", "actor_id", "project"}


class Unreadable(Exception):
    pass


class Bad(Exception):
    def __init__(self, seq, reason):
        super().__init__(reason)
        self.seq, self.reason = seq, reason


def _json_value(value) -> str:
    # Python's json with these options writes strings and integers exactly as the server's orjson.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def canonical(row: dict) -> str:
    parts = []
    for key in HASHED:
        text = row["data"] if key == "data" else _json_value(row[key])
        parts.append(f"{_json_value(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def event_hash(row: dict) -> str:
    return hashlib.sha256((row["prev_hash"] + canonical(row)).encode("utf-8")).hexdigest()


def _checked(row: dict, where: str) -> dict:
    """Types and forms of one row; a malformed row is invalid, named by its seq where it has one."""
    seq = row.get("seq")
    for field in FIELDS:
        if field not in row:
            raise Bad(seq, f"{where}: field {field!r} is missing")
    for field in INTEGERS:
        value = row[field]
        if value is None and field in NULLABLE:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise Bad(seq, f"{where}: {field} is not an integer: {value!r}")
    for field in ("timestamp", "actor", "action", "target_type", "target_id", "data", "prev_hash", "hash"):
        if not isinstance(row[field], str):
            raise Bad(seq, f"{where}: {field} is not text")
    if row["ip"] is not None and not isinstance(row["ip"], str):
        raise Bad(seq, f"{where}: ip is not text")
    try:
        json.loads(row["data"])  # one JSON value, nothing around it
    except ValueError:
        raise Bad(seq, f"{where}: data is not JSON") from None
    return row


def _int_or_none(text: str, field: str):
    if text == "" and field in NULLABLE:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # reported by _checked


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or list(reader.fieldnames) != list(FIELDS):
            raise Unreadable(f"the header must be {','.join(FIELDS)}")
        for line, raw in enumerate(reader, start=2):
            row: dict = dict(raw)
            if None in row:
                raise Bad(_int_or_none(raw["seq"], "seq"), f"line {line}: more cells than columns")
            for field in INTEGERS:
                row[field] = _int_or_none(row[field] or "", field)
            if row["ip"] == "":
                row["ip"] = None
            yield _checked(row, f"line {line}")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError:
                raise Bad(None, f"line {line}: not JSON") from None
            if not isinstance(row, dict):
                raise Bad(None, f"line {line}: not a JSON object")
            yield _checked(row, f"line {line}")


def verify(rows, *, partial: bool = False) -> tuple[int, dict | None]:
    """Check every row and link; raise ``Bad`` at the first problem. Returns (rows checked, last row)."""
    previous, checked = None, 0
    for row in rows:
        seq = row["seq"]
        if previous is None:
            if not partial and seq != 1:
                raise Bad(seq, f"a complete export starts at seq 1, this one at seq {seq} (use --partial for a "
                               "filtered export)")
            if seq == 1 and row["prev_hash"] != GENESIS:
                raise Bad(seq, "the first event's prev_hash is not the genesis hash (64 zeros)")
        else:
            if seq <= previous["seq"]:
                raise Bad(seq, f"out of order: seq {seq} follows seq {previous['seq']}")
            if seq == previous["seq"] + 1:
                if row["prev_hash"] != previous["hash"]:
                    raise Bad(seq, "prev_hash does not match the previous event's hash")
            elif not partial:
                raise Bad(seq, f"missing events: seq {previous['seq'] + 1} to {seq - 1}")
        if event_hash(row) != row["hash"]:
            raise Bad(seq, "hash does not match the event's content")
        previous, checked = row, checked + 1
    return checked, previous


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify an export of tre's audit log (CSV or JSON Lines).")
    parser.add_argument("file")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="default: from the file name (.jsonl or .csv)")
    parser.add_argument("--partial", action="store_true", help="the export was filtered: allow gaps between rows")
    args = parser.parse_args(argv)
    file_format = args.format or ("jsonl" if args.file.endswith((".jsonl", ".ndjson")) else "csv")
    reader = read_jsonl if file_format == "jsonl" else read_csv
    try:
        checked, last = verify(reader(args.file), partial=args.partial)
    except Bad as bad:
        where = f"seq {bad.seq}" if bad.seq is not None else "an unnumbered row"
        print(f"INVALID: first bad event: {where}: {bad.reason}", file=sys.stderr)
        print(json.dumps({"valid": False, "first_invalid_seq": bad.seq, "reason": bad.reason}))
        return 1
    except (OSError, UnicodeDecodeError, Unreadable, csv.Error) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if checked == 0:
        print(f"cannot verify {args.file}: it holds no events", file=sys.stderr)
        return 2
    print(json.dumps({"valid": True, "events_checked": checked, "first_invalid_seq": None,
                      "last_seq": last["seq"] if last else None, "last_hash": last["hash"] if last else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
