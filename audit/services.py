"""The one way to write an audit event."""

import json
import re
import zlib

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from tre.errors import Invalid

from .actions import AuditAction, action_of
from .chain import GENESIS, canonical, event_hash, iso_utc
from .models import AuditEvent

# One constant key for the PostgreSQL advisory lock that serialises appends to the chain.
_LOCK_KEY = zlib.crc32(b"tre.audit.chain")

# What must never be written into an event's data: a defensive check, not the primary control.
_FORBIDDEN_KEYS = {"password", "token", "nhs_number", "nhs_numbers", "secret", "key", "pseudonym_key"}
_NHS_LIKE = re.compile(r"(?<!\d)\d{10}(?!\d)")


class AuditDataRefused(Invalid):
    """Event data that must never be audited: a 400 everywhere, naming the field it came from."""

    def __init__(self, path: str, message: str):
        field = path.removeprefix("data").lstrip(".").split(".")[0].split("[")[0] or "detail"
        super().__init__(fields={field: [message + " (it would be written to the audit log)"]})
        self.path = path


def _clean_data(data) -> dict:
    """JSON-normalise ``data`` so what is hashed is exactly what is stored; refuse secrets."""
    data = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder), parse_float=_stable_float)
    _check_no_secrets(data)
    return data


def _stable_float(text: str):
    # PostgreSQL's jsonb prints 1e20 as 100000000000000000000, which reads back as an int: store
    # such integral floats as ints from the start so the stored value hashes the same way.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) >= 1e15 else value


def _check_no_secrets(value, path="data"):
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in _FORBIDDEN_KEYS:
                raise AuditDataRefused(f"{path}.{k}", "must not hold a password, token, key or NHS number")
            _check_no_secrets(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_secrets(v, f"{path}[{i}]")
    elif isinstance(value, str) and _NHS_LIKE.search(value):
        raise AuditDataRefused(path, "must not contain a 10-digit number (it looks like an NHS number)")


def _client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


_COLUMNS = "seq, timestamp, actor, actor_id, action, target_type, target_id, project, data, ip, prev_hash, hash"
_SEQ_MARK = -987654321012345  # stands in for seq while the canonical JSON is split around it

# PostgreSQL: lock, read the head, hash and insert in ONE round trip, so the serialised section is
# as short as it can be (it still includes the commit). The digest is SHA-256 over
# prev_hash || prefix || seq || suffix, which is exactly chain.hash_body's input: the verifier
# recomputes it in Python.
_PG_APPEND = f"""
SELECT pg_advisory_xact_lock({_LOCK_KEY});
INSERT INTO audit_auditevent ({_COLUMNS})
SELECT h.seq, %(ts)s, %(actor)s, %(actor_id)s, %(action)s, %(target_type)s, %(target_id)s, %(project)s,
       %(data)s::jsonb, %(ip)s, h.hash,
       encode(sha256(convert_to(h.hash || %(prefix)s || h.seq::text || %(suffix)s, 'UTF8')), 'hex')
FROM (SELECT coalesce(max(seq), 0) + 1 AS seq,
             coalesce((SELECT hash FROM audit_auditevent ORDER BY seq DESC LIMIT 1), '{GENESIS}') AS hash
      FROM audit_auditevent) h
RETURNING seq, prev_hash, hash
"""


def _split_canonical(fields) -> tuple[str, str]:
    body = {**fields, "timestamp": iso_utc(fields["timestamp"]), "seq": _SEQ_MARK}
    text = canonical(body).decode()
    mark = f',"seq":{_SEQ_MARK},'
    assert text.count(mark) == 1
    head, tail = text.split(mark)
    return head + ',"seq":', "," + tail


def _append_postgresql(cursor, fields, data_json):
    prefix, suffix = _split_canonical(fields)
    cursor.execute(_PG_APPEND, {**fields, "ts": fields["timestamp"], "data": data_json, "prefix": prefix, "suffix": suffix})
    return cursor.fetchone()


def _append_sqlite(cursor, fields, data_json):
    # Every SQLite transaction is BEGIN IMMEDIATE (settings), so writers are already serialised.
    cursor.execute("SELECT seq, hash FROM audit_auditevent ORDER BY seq DESC LIMIT 1")
    head = cursor.fetchone()
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
    digest = event_hash(prev_hash, seq=seq, **fields)
    cursor.execute(f"INSERT INTO audit_auditevent ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                   [seq, connection.ops.adapt_datetimefield_value(fields["timestamp"]), fields["actor"], fields["actor_id"],
                    fields["action"], fields["target_type"], fields["target_id"], fields["project"], data_json,
                    fields["ip"], prev_hash, digest])
    return seq, prev_hash, digest


def target_ref(target) -> tuple[str, str]:
    """``(type, id)`` of a model instance or a ``(type, id)`` tuple; empty strings for None."""
    if target is None:
        return "", ""
    if isinstance(target, tuple):
        return str(target[0]), str(target[1])
    return target._meta.model_name, str(target.pk)


def _project_of(project, target) -> int | None:
    if project is not None:
        return project if isinstance(project, int) else project.pk
    if target is not None and not isinstance(target, tuple):
        if target._meta.model_name == "project":
            return target.pk
        project_id = getattr(target, "project_id", None)
        if isinstance(project_id, int):
            return project_id
    return None


def audit_record(*, actor, action: AuditAction, target=None, project=None, data=None, request=None, now=None) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction.

    ``actor`` is a user, a username string, or None for the system. ``target`` is a model
    instance or a ``(type, id)`` tuple. ``action`` must be registered in ``audit/actions.py``.
    Data that must never be audited raises ``AuditDataRefused`` (a 400 naming the field); if this
    fails the caller's transaction rolls back.
    """
    if hasattr(actor, "pk"):
        actor_name = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
        actor_id = actor.pk
    else:
        actor_name, actor_id = (actor or ""), None
    target_type, target_id = target_ref(target)
    fields = dict(
        timestamp=now or timezone.now(),
        actor=actor_name,
        actor_id=actor_id,
        action=str(action_of(action)),
        target_type=target_type,
        target_id=target_id,
        project=_project_of(project, target),
        data=_clean_data(data),
        ip=_client_ip(request),
    )
    with transaction.atomic(savepoint=False):  # the caller's transaction if there is one; no extra round trips
        data_json = canonical(fields["data"]).decode()
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                seq, prev_hash, digest = _append_postgresql(cursor, fields, data_json)
            else:
                seq, prev_hash, digest = _append_sqlite(cursor, fields, data_json)
        event = AuditEvent(seq=seq, prev_hash=prev_hash, hash=digest, **fields)
        event._state.adding, event._state.db = False, connection.alias
        return event
