"""The secure data environment's metadata. The rows themselves live only in the store.

- ``Dataset``: a custodian's declaration (name, columns, which column is the direct identifier)
  and its current data dictionary (``dictionary``: ``environment.dictionary.Dictionary.to_json()``).
- ``DictionaryVersion``: every version of a dataset's dictionary (declared at creation, completed
  by derivation at the first load, …), with the reason; each is audited.
- ``DummyTwin``: a synthetic twin of a dataset generated from one dictionary version
  (``environment/twins.py``): an ordinary store file whose rows are all made up.
- ``DatasetVersion``: one load (upload) or rewrite (erasure) of a dataset: an immutable DuckDB
  file under ``TRE_STORE_DIR`` with a table ``data`` (``person_id`` + the stored columns).
  ``Dataset.current_version`` says which one queries read.
- ``OptOut``: a person who opted out, kept only as the keyed hash (``person_id``). Its ``id`` is a
  sequence: a version's ``optout_watermark`` is the highest ``OptOut.id`` applied to its file.
- ``SandboxLease``: a version file in use by an open sandbox; erasure does not delete it meanwhile.
- ``ErasureRun``: one pass of the erasure task that changed something (for ``last_erasure_at``).
- ``TaskHeartbeat``: a load or an erasure a worker is running right now (``environment.recovery``).

Every write goes through ``environment.services``.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from .declaration import declare
from .dictionary import Dictionary


class Dataset(models.Model):
    """A dataset registered by a custodian. Its rows live only in the store (DuckDB files)."""

    class ColumnType(models.TextChoices):
        INTEGER = "integer"
        FLOAT = "float"
        TEXT = "text"
        DATE = "date"
        BOOLEAN = "boolean"

    name = models.CharField(max_length=63, unique=True)  # the SQL table name researchers query
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    class RowsPerPerson(models.TextChoices):
        ONE = "one"
        MANY = "many"

    identifier_column = models.CharField(max_length=63)  # e.g. nhs_number: replaced by person_id on ingestion
    # [{name, type, role, drop, description}] in declared order (the version-1 shape, plus the role)
    columns = models.JSONField(default=list)
    rows_per_person = models.CharField(max_length=4, choices=RowsPerPerson.choices, default=RowsPerPerson.MANY)
    protection = models.JSONField(default=dict, blank=True)  # stricter than the settings, never looser
    # the current dictionary (Dictionary.to_json()); its "version" is the latest DictionaryVersion.number
    dictionary = models.JSONField(default=dict)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    current_version = models.ForeignKey(
        "environment.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    current_twin = models.ForeignKey(
        "environment.DummyTwin", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    # --- the declaration, read by ingestion, the sandbox and the query validator -----------
    def stored_columns(self) -> list[dict]:
        """The columns that enter the store, in declared order (not the identifier, not dropped)."""
        return [c for c in self.columns if c["name"] != self.identifier_column and not c.get("drop", False)]

    def dictionary_object(self):
        """The current dictionary as an ``environment.dictionary.Dictionary`` (for a dataset saved
        without one, its version-1 declaration with the default roles)."""
        if self.dictionary:
            return Dictionary.from_json(self.dictionary)
        dictionary, _ = declare({"name": self.name, "identifier_column": self.identifier_column,
                                 "columns": self.columns}, check_name=False)
        return dictionary

    @property
    def row_count(self) -> int | None:
        version = self.current_version
        return version.row_count if version is not None else None


class DatasetVersion(models.Model):
    class Status(models.TextChoices):
        LOADING = "loading"
        READY = "ready"
        FAILED = "failed"

    class Origin(models.TextChoices):
        UPLOAD = "upload"
        ERASURE = "erasure"

    class Format(models.TextChoices):
        CSV = "csv"
        PARQUET = "parquet"

    class Phase(models.TextChoices):
        VALIDATING = "validating"
        LOADING = "loading"
        PUBLISHING = "publishing"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()  # 1, 2, 3 … per dataset
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LOADING, db_index=True)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.UPLOAD)
    # For an erasure version: the version it was rewritten from. ``upload_number`` is the number of
    # the upload whose data this version holds (itself for an upload), so a late-finishing older
    # upload never replaces a newer one.
    derived_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    upload_number = models.PositiveIntegerField()

    # the upload (deleted from incoming/ once loaded, whatever the outcome)
    source_format = models.CharField(max_length=10, choices=Format.choices, blank=True)
    source_bytes = models.BigIntegerField(null=True, blank=True)
    source_sha256 = models.CharField(max_length=64, blank=True)
    encoding = models.CharField(max_length=20, blank=True)  # as declared on the upload ("" = UTF-8)
    incoming_path = models.CharField(max_length=255, blank=True)  # relative to TRE_STORE_DIR

    # the result
    file_path = models.CharField(max_length=255, blank=True)  # relative to TRE_STORE_DIR; "" unless ready
    row_count = models.BigIntegerField(null=True, blank=True)
    person_count = models.BigIntegerField(null=True, blank=True)
    # the cell key of the version's persons (Σ _rk over distinct persons mod 256), for the perturbed
    # counts non-custodians see (environment/counts.py); computed once, lazily
    person_ckey = models.SmallIntegerField(null=True, blank=True)
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)  # progress while loading
    rows_loaded = models.BigIntegerField(null=True, blank=True)  # progress while loading: rows done in the phase
    rows_total = models.BigIntegerField(null=True, blank=True)  # rows in the file, once validated
    # [{row, column, value_preview, reason}] — the first 1,000; never a preview of an identifier
    errors = models.JSONField(default=list, blank=True)
    error_count = models.IntegerField(default=0)
    rows_removed = models.BigIntegerField(default=0)  # opted-out rows left out of this file
    persons_removed = models.BigIntegerField(default=0)
    build_seconds = models.FloatField(null=True, blank=True)
    optout_watermark = models.BigIntegerField(default=0)  # the highest OptOut.id applied to the file
    attempts = models.PositiveSmallIntegerField(default=0)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)  # no longer current
    file_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="env_version_number_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="env_version_number_positive"),
            # a failed version holds no data
            models.CheckConstraint(condition=~Q(status="failed") | Q(file_path=""), name="env_version_failed_no_file"),
            # a ready version has its file and its counts
            models.CheckConstraint(
                condition=~Q(status="ready") | (~Q(file_path="") & Q(row_count__isnull=False) & Q(person_count__isnull=False)),
                name="env_version_ready_complete",
            ),
            models.CheckConstraint(condition=Q(finished_at__isnull=True) | ~Q(status="loading"), name="env_version_finished_not_loading"),
        ]

    def __str__(self):
        return f"{self.dataset_id}/v{self.number} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.LOADING


class DictionaryVersion(models.Model):
    """One version of a dataset's data dictionary (``body`` = ``Dictionary.to_json()``)."""

    class Reason(models.TextChoices):
        DECLARED = "declared"  # the custodian's declaration, at creation
        DERIVED = "derived"  # undeclared domains, bounds and ranges derived at the first load

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="dictionary_versions")
    number = models.PositiveIntegerField()
    body = models.JSONField()
    reason = models.CharField(max_length=10, choices=Reason.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="env_dictionary_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="env_dictionary_version_positive"),
        ]

    def __str__(self):
        return f"{self.dataset_id}/d{self.number} ({self.reason})"


class DummyTwin(models.Model):
    """A dataset's synthetic twin, generated from one dictionary version alone (``twins.py``):
    a store file like a version's (table ``data``), marked dummy inside (table ``tre_twin``)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="twins")
    dictionary_version = models.PositiveIntegerField()
    file_path = models.CharField(max_length=255)  # relative to TRE_STORE_DIR
    row_count = models.BigIntegerField()
    seed = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    file_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-dictionary_version"]
        constraints = [models.UniqueConstraint(fields=["dataset", "dictionary_version"], name="env_twin_per_dictionary")]

    def __str__(self):
        return f"{self.dataset_id}/twin-d{self.dictionary_version}"


class OptOut(models.Model):
    """A person who opted out of the use of their data: only the keyed hash of the NHS number."""

    person_id = models.CharField(max_length=64, unique=True)
    registered_at = models.DateTimeField(db_index=True)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=Q(person_id__regex=r"^[0-9a-f]{64}$"), name="env_optout_person_id_hex")]

    def __str__(self):
        return f"opt-out #{self.pk}"


class SandboxLease(models.Model):
    """An open sandbox reads this version's file: erasure leaves the file alone until released
    (or, if the holder died, until ``expires_at``)."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="leases")
    holder = models.CharField(max_length=200)  # host:pid — for operators
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self):
        return f"lease on {self.version_id} by {self.holder}"


class ErasureRun(models.Model):
    """One pass of the erasure task that removed persons or advanced a watermark."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    optout_watermark = models.BigIntegerField()
    datasets_rewritten = models.IntegerField(default=0)
    datasets_checked = models.IntegerField(default=0)
    rows_removed = models.BigIntegerField(default=0)
    persons_removed = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-finished_at"]
        get_latest_by = "finished_at"


class TaskHeartbeat(models.Model):
    """A load or an erasure that a worker is running: the worker moves ``beat_at`` while it lives.
    When it stops moving (the worker died), the recovery sweeper (``environment.recovery``) sends
    the work again and sets ``beat_at`` to null; the row goes when an attempt ends, whatever its
    outcome. One row per piece of work: a second delivery while one is alive does nothing."""

    class Kind(models.TextChoices):
        LOAD = "load"
        ERASURE = "erasure"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    key = models.BigIntegerField(default=0)  # the version's id for a load; 0 for the erasure
    holder = models.CharField(max_length=200, blank=True)  # host:pid — for operators
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)  # attempts since the work last finished
    started_at = models.DateTimeField(null=True, blank=True)
    beat_at = models.DateTimeField(null=True, blank=True, db_index=True)  # null: not running (re-sent)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="env_heartbeat_unique")]

    def __str__(self):
        return f"{self.kind} {self.key} by {self.holder or '-'}"
