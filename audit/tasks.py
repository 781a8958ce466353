from celery import shared_task
from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_record


@shared_task(name="audit.tasks.ping", acks_late=True, ignore_result=True)
def ping(label: str) -> str:
    """A trivial audited task: proves a worker consumes the queue end to end."""
    with transaction.atomic():
        audit_record(actor=None, action=AuditAction.SYSTEM_PING, data={"label": label[:40]})
    return "pong"
