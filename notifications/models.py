"""What awaits a user or changed for them: one row per person and event, shown in the app
(``GET me/notifications/``) and sent by e-mail after the change commits.

No foreign key to the thing it is about (it may sit in an app above this one): the target is
``target_type``/``target_id``, as in the audit log.
"""

from django.conf import settings
from django.db import models


class Kind(models.TextChoices):
    # projects (DAC review)
    PROJECT_SUBMITTED = "project_submitted", "a project awaits your DAC vote"
    PROJECT_APPROVED = "project_approved", "your project was approved"
    PROJECT_REJECTED = "project_rejected", "your project was rejected"
    PROJECT_RETURNED = "project_returned", "your project was returned to you"
    # environment (loads)
    VERSION_READY = "version_ready", "your upload was loaded"
    VERSION_FAILED = "version_failed", "your upload failed to load"
    # outputs (review): wired by the outputs app
    OUTPUT_AWAITING_REVIEW = "output_awaiting_review", "an output awaits your review"
    OUTPUT_RETURNED = "output_returned", "your output was returned to you"
    OUTPUT_RELEASED = "output_released", "your output was released"
    OUTPUT_REJECTED = "output_rejected", "your output was rejected"


class Notification(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    text = models.CharField(max_length=500)
    link = models.CharField(max_length=500, blank=True)  # a path of the API or web UI, e.g. /api/v1/projects/7/
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)  # set once the e-mail went out (idempotent sends)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at", "-id"], name="notification_inbox_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=[k.value for k in Kind]), name="notification_kind_known"),
            models.CheckConstraint(condition=~models.Q(text=""), name="notification_text_required"),
        ]

    def __str__(self):
        return f"{self.kind} for {self.user_id}: {self.text}"
