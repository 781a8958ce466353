"""Reads of the audit log (auditors only), with the filters of the auditor API."""

from datetime import datetime, time, timedelta

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tre.errors import Invalid

from .chain import canonical, iso_utc
from .models import AuditEvent

FILTERS = ("actor", "action", "project", "target_type", "target_id", "since", "until")


def _moment(name: str, value: str, *, end: bool):
    dt = parse_datetime(value)
    if dt is None:
        d = parse_date(value)
        if d is None:
            raise Invalid(fields={name: [f"not a date or date-time: {value!r} (use ISO 8601, e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"]})
        dt = datetime.combine(d + timedelta(days=1) if end else d, time.min)
        dt = timezone.make_aware(dt)
    elif dt.tzinfo is None:
        dt = timezone.make_aware(dt)
    return dt


def audit_event_list(*, params) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.order_by("seq")
    if params.get("actor"):
        qs = qs.filter(actor=params["actor"])
    if params.get("action"):
        action = params["action"]
        qs = qs.filter(action__startswith=action[:-1]) if action.endswith("*") else qs.filter(action=action)
    if params.get("project"):
        try:
            qs = qs.filter(project=int(params["project"]))
        except ValueError:
            raise Invalid(fields={"project": ["must be a project id (an integer)"]}) from None
    if params.get("target_type"):
        qs = qs.filter(target_type=params["target_type"])
    if params.get("target_id"):
        qs = qs.filter(target_id=params["target_id"])
    if params.get("since"):
        qs = qs.filter(timestamp__gte=_moment("since", params["since"], end=False))
    if params.get("until"):
        # a bare date includes that whole day; a date-time is exclusive
        qs = qs.filter(timestamp__lt=_moment("until", params["until"], end=True))
    return qs


def present_event(e: AuditEvent) -> dict:
    return {
        "seq": e.seq,
        "timestamp": e.timestamp.isoformat().replace("+00:00", "Z"),
        "actor": e.actor,
        "actor_id": e.actor_id,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "project": e.project,
        "data": e.data,
        "ip": e.ip,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


# The fields of an export, in order: every field the hash covers, then the two hashes (docs/audit.md).
EXPORT_FIELDS = ("seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data",
                 "ip", "prev_hash", "hash")


def export_rows(qs, chunk_size: int = 2000):
    """The events of ``qs`` in the exact form they were hashed (audit/chain.py): ``timestamp`` as
    ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` in UTC, ``data`` as its canonical JSON *text* (orjson,
    sorted keys, compact, UTF-8), the other fields as stored (``actor_id``, ``project`` and ``ip``
    may be null). An auditor re-hashes a row without re-serialising ``data`` (which a JSON library
    might render differently, e.g. ``1e16`` for ``1e+16``)."""
    for row in qs.values_list(*EXPORT_FIELDS).iterator(chunk_size=chunk_size):
        seq, ts, actor, actor_id, action, ttype, tid, project, data, ip, prev_hash, digest = row
        yield {"seq": seq, "timestamp": iso_utc(ts), "actor": actor, "actor_id": actor_id, "action": action,
               "target_type": ttype, "target_id": tid, "project": project, "data": canonical(data).decode(),
               "ip": None if ip is None else str(ip), "prev_hash": prev_hash, "hash": digest}
