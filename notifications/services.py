"""``notify``: the one way to tell people something happened.

Rows are written in the caller's transaction (they exist exactly when the change does); e-mail goes
out after commit, in a Celery task (``notifications.tasks.send_emails``, retried on SMTP and
connection errors). A mail that cannot be sent, or a broker that is down, never undoes the change:
the callback is ``robust`` (logged, not raised) and the rows stay in the in-app list.
"""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from audit.services import target_ref

from .models import Kind, Notification

log = logging.getLogger(__name__)


def notify(*, users: Iterable, kind: Kind | str, text: str, link: str = "", target=None, now=None) -> list[Notification]:
    """One notification per distinct active user in ``users``; their e-mails go out after commit.

    ``kind`` is a ``notifications.models.Kind``; ``target`` a model instance or ``(type, id)``."""
    kind = Kind(kind)
    target_type, target_id = target_ref(target)
    now = now or timezone.now()
    seen, rows = set(), []
    for user in users:
        if user is None or user.pk in seen or not user.is_active:
            continue
        seen.add(user.pk)
        rows.append(Notification(user=user, kind=kind, text=text[:500], link=link[:500], target_type=target_type,
                                 target_id=target_id, created_at=now))
    if not rows:
        return []
    rows = Notification.objects.bulk_create(rows)
    ids = [n.pk for n in rows]
    transaction.on_commit(lambda: _send_later(ids), robust=True)
    return rows


def _send_later(ids: list[int]) -> None:
    from .tasks import send_emails  # noqa: PLC0415 — the services ↔ tasks pair of one app

    send_emails.delay(ids)


def notification_mark_read(*, user, ids=None, now=None) -> int:
    """Mark ``user``'s notifications read (all, or those in ``ids``). Returns how many changed."""
    qs = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=now or timezone.now())
