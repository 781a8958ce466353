"""The one way to write an audit event."""

import json
import re
import zlib

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from .chain import GENESIS, event_hash
from .models import AuditEvent

# One constant key for the PostgreSQL advisory lock that serialises appends to the chain.
_LOCK_KEY = zlib.crc32(b"tre.audit.chain")

# What must never be written into an event's data: a defensive check, not the primary control.
_FORBIDDEN_KEYS = {"password", "token", "nhs_number", "nhs_numbers", "secret", "key", "pseudonym_key"}
_NHS_LIKE = re.compile(r"(?<!\d)\d{10}(?!\d)")


class AuditDataRefused(ValueError):
    pass


def _clean_data(data) -> dict:
    """JSON-normalise ``data`` so what is hashed is exactly what is stored; refuse secrets."""
    data = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    _check_no_secrets(data)
    return data


def _check_no_secrets(value, path="data"):
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in _FORBIDDEN_KEYS:
                raise AuditDataRefused(f"{path}.{k}: audit events never hold passwords, tokens, keys or NHS numbers")
            _check_no_secrets(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_secrets(v, f"{path}[{i}]")
    elif isinstance(value, str) and _NHS_LIKE.search(value):
        raise AuditDataRefused(f"{path}: a 10-digit number looks like an NHS number and is never audited")


def _client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def _lock_chain():
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
    # SQLite: every transaction is BEGIN IMMEDIATE (settings), so writers are already serialised.


def _target_of(target) -> tuple[str, str]:
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


def audit_record(*, actor, action: str, target=None, project=None, data=None, request=None, now=None) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction.

    ``actor`` is a user, a username string, or None for the system. ``target`` is a model
    instance or a ``(type, id)`` tuple. If this fails the caller's transaction rolls back.
    """
    with transaction.atomic():
        if hasattr(actor, "pk"):
            actor_name = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
            actor_id = actor.pk
        else:
            actor_name, actor_id = (actor or ""), None
        target_type, target_id = _target_of(target)
        fields = dict(
            timestamp=now or timezone.now(),
            actor=actor_name,
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            project=_project_of(project, target),
            data=_clean_data(data),
            ip=_client_ip(request),
        )
        _lock_chain()
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
        event = AuditEvent(seq=seq, prev_hash=prev_hash, hash=event_hash(prev_hash, seq=seq, **fields), **fields)
        event.save()
        return event
