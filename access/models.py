from django.conf import settings
from django.db import models
from django.utils import timezone

from audit.actions import AuditAction
from audit.transitions import Step
from organisations.models import Organisation


class AgreementQuerySet(models.QuerySet):
    def in_force(self, today):
        """Active agreements whose ``[valid_from, valid_until]`` contains ``today``."""
        return self.filter(status=Agreement.Status.ACTIVE, valid_from__lte=today).filter(
            models.Q(valid_until__isnull=True) | models.Q(valid_until__gte=today))


class Agreement(models.Model):
    """A data-access agreement between a data custodian and an organisation, for some datasets.

    ``draft → active → revoked`` (``draft → revoked`` too); an active or draft agreement past
    ``valid_until`` *reads* as ``expired`` (see :meth:`effective_status`). Written only through
    ``access.services``.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        REVOKED = "revoked"

    EXPIRED = "expired"  # read-time only, never stored

    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="agreements")
    datasets = models.ManyToManyField("environment.Dataset", related_name="access_agreements")
    title = models.CharField(max_length=200)
    reference = models.CharField(max_length=100, blank=True)
    permitted_purposes = models.JSONField(default=list, blank=True)  # free text or a list of short texts
    prohibited_uses = models.JSONField(default=list, blank=True)  # list of Purpose values
    commercial_use_allowed = models.BooleanField(default=False)
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True)  # null: open-ended
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    activated_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.TextField(blank=True)

    objects = AgreementQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True) | models.Q(valid_until__gte=models.F("valid_from")),
                name="agreement_valid_until_after_valid_from"),
            models.CheckConstraint(condition=models.Q(status__in=["draft", "active", "revoked"]),
                                   name="agreement_status_known"),
            # an active agreement was activated at some time; a revoked one was revoked at some time
            models.CheckConstraint(condition=~models.Q(status="active") | models.Q(activated_at__isnull=False),
                                   name="agreement_active_has_activated_at"),
            models.CheckConstraint(condition=models.Q(status="revoked", revoked_at__isnull=False)
                                   | (~models.Q(status="revoked") & models.Q(revoked_at__isnull=True)),
                                   name="agreement_revoked_iff_revoked_at"),
        ]

    def __str__(self):
        return f"{self.title} ({self.organisation})"

    def effective_status(self, today=None) -> str:
        today = today or timezone.localdate()
        if self.status != self.Status.REVOKED and self.valid_until is not None and self.valid_until < today:
            return self.EXPIRED
        return self.status

    def in_force(self, today) -> bool:
        return (self.status == self.Status.ACTIVE and self.valid_from <= today
                and (self.valid_until is None or self.valid_until >= today))


_A = Agreement.Status
# Every change of an agreement's status: (from, action) → (to, audit action). A draft may be
# revoked too (abandoned). Expiry is read-time only (``effective_status``).
TRANSITIONS = {
    (_A.DRAFT, "activate"): Step(_A.ACTIVE, AuditAction.AGREEMENT_ACTIVATED),
    (_A.DRAFT, "revoke"): Step(_A.REVOKED, AuditAction.AGREEMENT_REVOKED),
    (_A.ACTIVE, "revoke"): Step(_A.REVOKED, AuditAction.AGREEMENT_REVOKED),
}
