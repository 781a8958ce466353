"""Research projects, their members and the DAC's reviews.

Every write goes through ``projects.services`` (one transaction, audited). Per-object rights are
django-guardian permissions stored in the direct foreign-key tables below; they are granted and
revoked only by ``projects.grants``.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from audit.actions import AuditAction
from audit.transitions import Step


class Project(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        SUBMITTED = "submitted"
        RETURNED = "returned"
        APPROVED = "approved"
        REJECTED = "rejected"
        SUSPENDED = "suspended"
        CLOSED = "closed"

    # Read-time only: an approved or suspended project past its end_date reads as expired.
    EXPIRED = "expired"

    title = models.CharField(max_length=200)
    lay_summary = models.TextField(blank=True)
    purpose = models.TextField(blank=True)
    purpose_categories = models.JSONField(default=list, blank=True)  # values of organisations.models.Purpose
    public_benefit = models.TextField(blank=True)
    legal_basis = models.TextField(blank=True)  # free text (e.g. "GDPR 6(1)(e), 9(2)(j)")
    commercial = models.BooleanField(default=False)
    datasets = models.ManyToManyField("environment.Dataset", blank=True, related_name="project_requests")
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    ethics_reference = models.CharField(max_length=200, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True)
    organisation = models.ForeignKey("organisations.Organisation", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="projects")
    lead = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="led_projects")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="ProjectMembership",
                                     through_fields=("project", "user"), related_name="tre_projects")
    review_round = models.PositiveIntegerField(default=1)  # a return starts a new round

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)  # when the expiry task revoked its grants

    class Meta:
        ordering = ["-created_at", "-id"]
        default_permissions = ("view",)
        permissions = [
            ("run_query", "Can run queries in the project"),
            ("view_output", "Can see the project's outputs"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(start_date__isnull=True) | models.Q(end_date__isnull=True)
                | models.Q(end_date__gte=models.F("start_date")),
                name="project_end_after_start"),
            models.CheckConstraint(
                condition=models.Q(status__in=["draft", "submitted", "returned", "approved", "rejected",
                                               "suspended", "closed"]),
                name="project_status_known"),
            # approved, suspended and closed projects were approved at some moment
            models.CheckConstraint(
                condition=~models.Q(status__in=["approved", "suspended", "closed"]) | models.Q(approved_at__isnull=False),
                name="project_approved_has_approved_at"),
            models.CheckConstraint(condition=~models.Q(status="closed") | models.Q(closed_at__isnull=False),
                                   name="project_closed_has_closed_at"),
            models.CheckConstraint(condition=~models.Q(status="rejected") | models.Q(rejected_at__isnull=False),
                                   name="project_rejected_has_rejected_at"),
        ]

    def __str__(self):
        return self.title

    def effective_status(self, today=None) -> str:
        """The status as clients see it: ``expired`` for approved/suspended projects past end_date."""
        if self.status in (self.Status.APPROVED, self.Status.SUSPENDED) and self.is_past_end(today):
            return self.EXPIRED
        return self.status

    def is_past_end(self, today=None) -> bool:
        return self.end_date is not None and self.end_date < (today or timezone.localdate())


_P = Project.Status
# Every change of a project's status: (from, action) → (to, audit action). The source of a
# transition is the *effective* status (an approved or suspended project past its end date reads
# as expired). Votes decide ``approve``/``reject``/``return`` (tre/rounds.py).
TRANSITIONS = {
    (_P.DRAFT, "submit"): Step(_P.SUBMITTED, AuditAction.PROJECT_SUBMITTED),
    (_P.RETURNED, "submit"): Step(_P.SUBMITTED, AuditAction.PROJECT_SUBMITTED),
    (_P.SUBMITTED, "approve"): Step(_P.APPROVED, AuditAction.PROJECT_APPROVED),
    (_P.SUBMITTED, "reject"): Step(_P.REJECTED, AuditAction.PROJECT_REJECTED),
    (_P.SUBMITTED, "return"): Step(_P.RETURNED, AuditAction.PROJECT_RETURNED),
    (_P.APPROVED, "suspend"): Step(_P.SUSPENDED, AuditAction.PROJECT_SUSPENDED),
    (_P.SUSPENDED, "reinstate"): Step(_P.APPROVED, AuditAction.PROJECT_REINSTATED),
    (_P.APPROVED, "close"): Step(_P.CLOSED, AuditAction.PROJECT_CLOSED),
    (_P.SUSPENDED, "close"): Step(_P.CLOSED, AuditAction.PROJECT_CLOSED),
    (Project.EXPIRED, "close"): Step(_P.CLOSED, AuditAction.PROJECT_CLOSED),
}


class ProjectMembership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead"
        MEMBER = "member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["added_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.UniqueConstraint(fields=["project"], condition=models.Q(role="lead"), name="membership_one_lead"),
            models.CheckConstraint(condition=models.Q(role__in=["lead", "member"]), name="membership_role_known"),
        ]

    def __str__(self):
        return f"{self.user} ({self.role}) in {self.project}"


class ProjectReview(models.Model):
    """One DAC vote. Votes are never deleted: a return starts a new round and the old round's votes
    stay here as history (``round`` < ``project.review_round``) without counting any more."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        RETURN = "return"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField()
    round = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "reviewer", "round"], name="review_one_vote_per_round"),
            models.CheckConstraint(condition=~models.Q(comment=""), name="review_comment_required"),
            models.CheckConstraint(condition=models.Q(decision__in=["approve", "reject", "return"]),
                                   name="review_decision_known"),
        ]

    def __str__(self):
        return f"{self.decision} by {self.reviewer} on {self.project} (round {self.round})"


class ProjectUserObjectPermission(UserObjectPermissionBase):
    """guardian's direct foreign-key table for per-user project permissions."""

    content_object = models.ForeignKey(Project, on_delete=models.CASCADE)

    class Meta(UserObjectPermissionBase.Meta):
        pass


class ProjectGroupObjectPermission(GroupObjectPermissionBase):
    """guardian's direct foreign-key table for per-group project permissions (unused by default)."""

    content_object = models.ForeignKey(Project, on_delete=models.CASCADE)

    class Meta(GroupObjectPermissionBase.Meta):
        pass
