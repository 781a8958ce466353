"""Recompute the chain and name the first bad ``seq``."""

from dataclasses import asdict, dataclass

import orjson
from django.db import connection, transaction

from .chain import GENESIS, hash_body, iso_utc
from .models import AuditEvent


@dataclass
class Verification:
    valid: bool
    events_checked: int
    first_invalid_seq: int | None
    reason: str | None = None

    def as_dict(self):
        return asdict(self)


# PostgreSQL renders the timestamp exactly as the chain hashes it, and hands over the JSON as text.
_PG_SQL = """
SELECT seq, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), actor, actor_id, action,
       target_type, target_id, project, data::text, host(ip), prev_hash, hash
FROM audit_auditevent ORDER BY seq
"""
_COLUMNS = ("seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data", "ip",
            "prev_hash", "hash")


def _rows_postgresql(chunk_size):
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.itersize = chunk_size
        cursor.execute(_PG_SQL)
        for row in cursor:
            yield (*row[:8], orjson.loads(row[8]), *row[9:])


def _rows_orm(chunk_size):
    for row in AuditEvent.objects.order_by("seq").values_list(*_COLUMNS).iterator(chunk_size=chunk_size):
        yield (row[0], iso_utc(row[1]), *row[2:])


def verify_chain(chunk_size: int = 20_000) -> Verification:
    rows = _rows_postgresql(chunk_size) if connection.vendor == "postgresql" else _rows_orm(chunk_size)
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for seq, ts, actor, actor_id, action, ttype, tid, project, data, ip, prev_hash, stored in rows:
        checked += 1
        if seq != expected_seq:
            return Verification(False, checked, seq, f"sequence gap: expected {expected_seq}, found {seq}")
        if prev_hash != expected_prev:
            return Verification(False, checked, seq, "prev_hash does not match the previous event's hash")
        computed = hash_body(prev_hash, seq=seq, timestamp=ts, actor=actor, actor_id=actor_id, action=action,
                             target_type=ttype, target_id=tid, project=project, data=data, ip=ip)
        if computed != stored:
            return Verification(False, checked, seq, "hash does not match the event's content")
        expected_prev, expected_seq = stored, seq + 1
    return Verification(True, checked, None)
