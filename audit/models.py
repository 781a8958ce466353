"""The audit log: one append-only, hash-chained table.

No foreign keys: the log must outlive what it describes, so actor and target are stored as text
and ids. UPDATE and DELETE are refused by the database (triggers from migration 0002) and here.
"""

from django.db import models


class AppendOnly(Exception):
    pass


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly("audit events are append-only: update refused")

    def delete(self):
        raise AppendOnly("audit events are append-only: delete refused")

    def bulk_update(self, *args, **kwargs):
        raise AppendOnly("audit events are append-only: update refused")


class AuditEvent(models.Model):
    seq = models.BigIntegerField(primary_key=True)
    timestamp = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, blank=True, db_index=True)  # username; "" for the system
    actor_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    project = models.BigIntegerField(null=True, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]
        constraints = [models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_seq_positive")]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnly("audit events are append-only: update refused")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly("audit events are append-only: delete refused")

    def __str__(self):
        return f"#{self.seq} {self.action} by {self.actor or 'system'}"
