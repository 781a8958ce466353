"""Reads of the audit log (auditors only), with the filters of the auditor API."""

from datetime import datetime, time, timedelta

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tre.errors import Invalid

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
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "project": e.project,
        "data": e.data,
        "ip": e.ip,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }
