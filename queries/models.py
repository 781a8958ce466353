from django.conf import settings
from django.db import models

from audit.actions import AuditAction
from audit.transitions import Step


class Query(models.Model):
    """A researcher's SQL, validated against the dictionaries into a plan and two statements; a real
    query is run by a worker inside the environment, a dummy query at once over the dummy twins.

    A real result never leaves the environment: its cells are written to the store
    (``queries.results``) and handed to ``outputs`` for disclosure control.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Target(models.TextChoices):
        REAL = "real"  # the datasets' current versions: nothing shown before release
        DUMMY = "dummy"  # the datasets' dummy twins: answered at once, in full

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey("projects.Project", on_delete=models.PROTECT, related_name="queries")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="queries")
    title = models.CharField(max_length=200, blank=True)
    sql = models.TextField()
    target = models.CharField(max_length=5, choices=Target.choices, default=Target.REAL)
    # the validated plan (queries.plans.plan_json): keys with their domains, statistics, grid size
    plan = models.JSONField(default=dict)
    contributions_sql = models.TextField(blank=True)  # the engine's statement (DuckDB): checkers only
    contributors_sql = models.TextField(blank=True)  # (cell, person) rows for the differencing ledger
    dataset_names = models.JSONField(default=list)  # names of the datasets the SQL reads
    result = models.JSONField(null=True, blank=True)  # dummy runs only: {columns, rows}, exact
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    submitted_at = models.DateTimeField(auto_now_add=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)  # null: the broker has not taken it yet
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # the running attempt is alive while this moves
    task_id = models.CharField(max_length=64, blank=True)  # the Celery task running it: a retry of it may resume
    cancel_requested = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)  # generic, safe for the researcher
    error_code = models.CharField(max_length=40, blank=True)  # for the researcher: time_limit | system_error
    failure = models.CharField(max_length=40, blank=True)  # the internal failure code: checkers and logs
    error_detail = models.TextField(blank=True)  # engine text: logs and checkers only
    dataset_versions = models.JSONField(default=dict)  # {dataset name: version id} the run read
    optout_watermark = models.BigIntegerField(null=True, blank=True)
    result_groups = models.IntegerField(null=True, blank=True)
    timings = models.JSONField(default=dict)  # queue_wait_ms, engine_ms, total_ms
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")

    class Meta:
        ordering = ["-submitted_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(status="completed") | models.Q(finished_at__isnull=False),
                                   name="query_completed_has_finished_at"),
            models.CheckConstraint(condition=~models.Q(status="running") | models.Q(started_at__isnull=False),
                                   name="query_running_has_started_at"),
        ]
        indexes = [models.Index(fields=["status", "enqueued_at"], name="query_sweep_idx")]

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def __str__(self):
        return f"query {self.pk} ({self.status})"


_Q = Query.Status
# Every change of a query's status: (from, action) → (to, audit action). ``start`` from running is
# a resumed attempt (the same task retried) or a dead attempt's successor; ``requeue`` is the
# sweeper's second chance for an attempt whose worker stopped reporting.
TRANSITIONS = {
    (_Q.QUEUED, "start"): Step(_Q.RUNNING, AuditAction.QUERY_STARTED),
    (_Q.RUNNING, "start"): Step(_Q.RUNNING, AuditAction.QUERY_STARTED),
    (_Q.RUNNING, "complete"): Step(_Q.COMPLETED, AuditAction.QUERY_COMPLETED),
    (_Q.QUEUED, "fail"): Step(_Q.FAILED, AuditAction.QUERY_FAILED),
    (_Q.RUNNING, "fail"): Step(_Q.FAILED, AuditAction.QUERY_FAILED),
    (_Q.QUEUED, "cancel"): Step(_Q.CANCELLED, AuditAction.QUERY_CANCELLED),
    (_Q.RUNNING, "cancel"): Step(_Q.CANCELLED, AuditAction.QUERY_CANCELLED),
    (_Q.RUNNING, "requeue"): Step(_Q.QUEUED, AuditAction.QUERY_REQUEUED),
}
