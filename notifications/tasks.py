"""E-mail for notifications, after the change committed. Ids in; idempotent (``emailed_at``)."""

import logging
import smtplib

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from .models import Notification

log = logging.getLogger(__name__)

# Transient: the mail server refused, dropped or could not be reached. Retried with backoff.
MAIL_ERRORS = (smtplib.SMTPException, ConnectionError, TimeoutError)


@shared_task(name="notifications.tasks.send_emails", bind=True, acks_late=True, ignore_result=True,
             autoretry_for=MAIL_ERRORS, retry_backoff=True, retry_backoff_max=600, max_retries=5,
             soft_time_limit=60, time_limit=90)
def send_emails(self, notification_ids: list[int]) -> int:
    """Send each notification not yet e-mailed to its user's address (users without one are
    skipped). A redelivery or a retry sends nothing twice. Returns how many were sent now."""
    sent = 0
    pending = (Notification.objects.filter(pk__in=notification_ids, emailed_at__isnull=True)
               .select_related("user").order_by("pk"))
    for notification in pending:
        address = notification.user.email
        if not address:
            continue
        body = notification.text
        if notification.link:
            body += f"\n\n{settings.TRE_BASE_URL.rstrip('/')}{notification.link}"
        send_mail(subject=f"[tre] {notification.text}"[:200], message=body, from_email=None,
                  recipient_list=[address])
        Notification.objects.filter(pk=notification.pk, emailed_at__isnull=True).update(emailed_at=timezone.now())
        sent += 1
    return sent
