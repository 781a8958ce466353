"""Outputs: the disclosure-controlled result of a completed query, its checking and its release.

- ``Output``: one per completed real query: what disclosure control (``outputs.disclosure``)
  made of its cells — the exact ``raw`` grid (with ``contributors``; checkers only), the ``safe``
  grid as released, the per-cell flags, the differencing findings, the status, summary and the
  parameters in force.
- ``OutputReview``: one output checker's vote in one round of checking.
- ``ReleasedPersonSets``: the person sets of a released output's cells (``queries.personsets``'s
  serialised form), kept per project for the differencing check of later outputs.

Every write goes through ``outputs.services``.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from audit.actions import AuditAction
from audit.transitions import Step


class Output(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # disclosure control done; the researcher sees the status and column names only
        SUBMITTED = "submitted"  # release requested: in the checkers' queue
        RELEASED = "released"
        REJECTED = "rejected"  # final
        RETURNED = "returned"  # back to the researcher: request again or withdraw
        WITHDRAWN = "withdrawn"
        STALE = "stale"  # an opt-out changed its inputs before release; the query was re-run

    class SdcStatus(models.TextChoices):
        PASS = "pass"
        SUPPRESSED = "suppressed"
        REVIEW = "review"

    # The states a researcher may request release from, withdraw from, and that go stale.
    REQUESTABLE = (Status.PENDING, Status.RETURNED)
    WITHDRAWABLE = (Status.PENDING, Status.RETURNED)
    UNRELEASED = (Status.PENDING, Status.SUBMITTED, Status.RETURNED)

    query = models.OneToOneField("queries.Query", on_delete=models.PROTECT, related_name="output")
    project = models.ForeignKey("projects.Project", on_delete=models.PROTECT, related_name="outputs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)

    # What the SDC engine made of the raw result.
    sdc_status = models.CharField(max_length=20, choices=SdcStatus.choices)
    sdc_summary = models.JSONField(default=dict)  # {rule: cells}
    sdc_params = models.JSONField(default=dict)  # the parameters in force (settings, made stricter by datasets)
    columns = models.JSONField(default=list)  # the keys then the statistics (no contributors)
    column_kinds = models.JSONField(default=list)  # key, count_persons, count_rows, sum, avg, stddev, variance
    raw = models.JSONField(default=list)  # the full grid, exact, with a last contributors column: checkers only
    safe = models.JSONField(default=list)  # the full grid as released (withheld: null), sorted by key
    flags = models.JSONField(default=list)  # per row: {statistic: [rules]}
    differencing = models.JSONField(default=list)  # findings against the project's released outputs

    round = models.PositiveIntegerField(default=0)  # 0: release never requested; each request starts one
    request_comment = models.TextField(blank=True)  # the researcher's note to the checkers

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    requested_at = models.DateTimeField(null=True, blank=True, db_index=True)  # the latest request
    released_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)  # released, rejected or returned
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    stale_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "requested_at"], name="output_queue_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["pending", "submitted", "released", "rejected", "returned",
                                                           "withdrawn", "stale"]),
                                   name="output_status_known"),
            models.CheckConstraint(condition=Q(sdc_status__in=["pass", "suppressed", "review"]),
                                   name="output_sdc_status_known"),
            # anything past pending (bar withdrawal and staleness) was requested at some moment
            models.CheckConstraint(
                condition=~Q(status__in=["submitted", "released", "rejected", "returned"])
                | (Q(requested_at__isnull=False) & Q(round__gte=1)),
                name="output_requested_has_requested_at"),
            models.CheckConstraint(condition=~Q(status="released") | Q(released_at__isnull=False),
                                   name="output_released_has_released_at"),
            models.CheckConstraint(condition=Q(status="released") | Q(released_at__isnull=True),
                                   name="output_released_at_only_released"),
            models.CheckConstraint(condition=~Q(status="withdrawn") | Q(withdrawn_at__isnull=False),
                                   name="output_withdrawn_has_withdrawn_at"),
            models.CheckConstraint(condition=~Q(status="stale") | Q(stale_at__isnull=False),
                                   name="output_stale_has_stale_at"),
        ]

    def __str__(self):
        return f"output {self.pk} ({self.status})"

    @property
    def round_open(self) -> bool:
        """Checkers are voting in ``round`` right now."""
        return self.status == self.Status.SUBMITTED


_O = Output.Status
# Every change of an output's status: (from, action) → (to, audit action). ``reject``, ``return``
# and ``release`` are decided by the checkers' votes (tre/rounds.py), ``stale`` by an opt-out.
TRANSITIONS = {
    (_O.PENDING, "request_release"): Step(_O.SUBMITTED, AuditAction.OUTPUT_RELEASE_REQUESTED),
    (_O.RETURNED, "request_release"): Step(_O.SUBMITTED, AuditAction.OUTPUT_RELEASE_REQUESTED),
    (_O.PENDING, "withdraw"): Step(_O.WITHDRAWN, AuditAction.OUTPUT_WITHDRAWN),
    (_O.RETURNED, "withdraw"): Step(_O.WITHDRAWN, AuditAction.OUTPUT_WITHDRAWN),
    (_O.SUBMITTED, "release"): Step(_O.RELEASED, AuditAction.OUTPUT_RELEASED),
    (_O.SUBMITTED, "reject"): Step(_O.REJECTED, AuditAction.OUTPUT_REJECTED),
    (_O.SUBMITTED, "return"): Step(_O.RETURNED, AuditAction.OUTPUT_RETURNED),
    (_O.PENDING, "mark_stale"): Step(_O.STALE, AuditAction.OUTPUT_STALE),
    (_O.SUBMITTED, "mark_stale"): Step(_O.STALE, AuditAction.OUTPUT_STALE),
    (_O.RETURNED, "mark_stale"): Step(_O.STALE, AuditAction.OUTPUT_STALE),
}


class OutputReview(models.Model):
    """One checker's vote in one round. Votes are never deleted; a return ends the round and the
    next request starts a new one."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        RETURN = "return"

    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="reviews")
    checker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField()
    round = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["output", "checker", "round"], name="output_review_one_vote_per_round"),
            models.CheckConstraint(condition=~Q(comment=""), name="output_review_comment_required"),
            models.CheckConstraint(condition=Q(decision__in=["approve", "reject", "return"]),
                                   name="output_review_decision_known"),
        ]

    def __str__(self):
        return f"{self.decision} by {self.checker_id} on output {self.output_id} (round {self.round})"


class ReleasedPersonSets(models.Model):
    """The person sets (``queries.personsets`` bytes) of a released output's groups: what
    later outputs of the same project are compared with for differencing. Pseudonymous keys only;
    never served by the API."""

    project = models.ForeignKey("projects.Project", on_delete=models.PROTECT, related_name="+")
    output = models.OneToOneField(Output, on_delete=models.PROTECT, related_name="released_person_sets")
    blob = models.BinaryField()
    groups = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "output"]

    def __str__(self):
        return f"person sets of released output {self.output_id}"
