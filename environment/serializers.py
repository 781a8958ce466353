from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tre.roles import Role, has_role

from .counts import shown_counts
from .dictionary import Granularity
from .dictionary import Role as DictRole
from .ingest import ENCODINGS, ROW_CONVENTION
from .models import Dataset, DatasetVersion

_ANY_VALUE = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}], "nullable": True,
              "description": "typed as the column: a string (text; a date as YYYY-MM-DD), a number or a boolean; "
                             "null where not declared and not yet derived"}


@extend_schema_field(_ANY_VALUE)
class DomainValueField(serializers.JSONField):
    """A category value or a bound: its type follows the column's (checked by ``declaration.py``)."""


class ColumnIn(serializers.Serializer):
    name = serializers.CharField(max_length=63, trim_whitespace=False)
    type = serializers.ChoiceField(choices=Dataset.ColumnType.choices)
    role = serializers.ChoiceField(choices=[r.value for r in DictRole], required=False,
                                   help_text="default: identifier for the identifier_column, drop when drop is true, "
                                             "category for text and boolean, measure for integer and float, date for date")
    values = serializers.ListField(child=DomainValueField(), required=False,
                                   help_text="category: its domain (undeclared: derived safely at the first load)")
    min = DomainValueField(required=False, help_text="measure or date: the lower bound (undeclared: derived)")
    max = DomainValueField(required=False, help_text="measure or date: the upper bound (undeclared: derived)")
    granularity = serializers.ChoiceField(choices=[g.value for g in Granularity], required=False,
                                          help_text="date: the finest unit a query may use (default day)")
    drop = serializers.BooleanField(required=False, default=False)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ProtectionIn(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["ckm", "dp"], required=False, help_text="ckm (default) or dp")
    threshold = serializers.IntegerField(required=False, help_text="at least TRE_SDC_THRESHOLD")
    ckm_d = serializers.IntegerField(required=False, help_text="at least TRE_CKM_D")
    ckm_v = serializers.FloatField(required=False, help_text="at least TRE_CKM_V")
    rho = serializers.FloatField(required=False, help_text="mode dp: the privacy budget (zCDP), > 0")
    review = serializers.ChoiceField(choices=["required", "optional"], required=False, help_text="mode dp")
    max_rows_per_person = serializers.IntegerField(required=False, help_text="mode dp")


class DatasetIn(serializers.Serializer):
    """The declaration (its schema). ``title``/``description`` are checked by ``DatasetMetaIn``,
    everything else by ``environment.declaration.declare`` — every bad field named at once."""

    name = serializers.CharField(max_length=63, trim_whitespace=False)
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)
    identifier_column = serializers.CharField(max_length=63, trim_whitespace=False)
    rows_per_person = serializers.ChoiceField(choices=Dataset.RowsPerPerson.choices, required=False, default="many")
    columns = serializers.ListField(child=ColumnIn(), min_length=1, max_length=1000)
    protection = ProtectionIn(required=False)


class DatasetMetaIn(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)


class ColumnOut(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=Dataset.ColumnType.choices)
    role = serializers.ChoiceField(choices=[r.value for r in DictRole])
    drop = serializers.BooleanField()
    description = serializers.CharField()


class DictionaryColumnOut(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=Dataset.ColumnType.choices)
    role = serializers.ChoiceField(choices=[r.value for r in DictRole])
    description = serializers.CharField()
    values = serializers.ListField(child=DomainValueField(), required=False, allow_null=True,
                                   help_text="category: the domain (null until derived at the first load)")
    min = DomainValueField(required=False, allow_null=True)
    max = DomainValueField(required=False, allow_null=True)
    granularity = serializers.CharField(required=False)
    derived = serializers.ListField(child=serializers.CharField(), required=False,
                                    help_text="which of values/min/max were derived safely from the first loaded version")

    def to_representation(self, instance):
        shown = super().to_representation(instance)
        return {k: v for k, v in shown.items() if k in instance}  # a field only where the role has it


class DictionaryOut(serializers.Serializer):
    dataset = serializers.CharField()
    version = serializers.IntegerField(help_text="the dictionary version")
    rows_per_person = serializers.ChoiceField(choices=Dataset.RowsPerPerson.choices)
    complete = serializers.BooleanField(help_text="every domain, bound and range known (false until the first load)")
    columns = DictionaryColumnOut(many=True)
    protection = serializers.DictField(required=False)


class DatasetOut(serializers.ModelSerializer):
    columns = serializers.SerializerMethodField()
    current_version = serializers.IntegerField(source="current_version_id", allow_null=True,
                                               help_text="id of the DatasetVersion queries read (null until a load succeeds)")
    current_version_number = serializers.SerializerMethodField()
    row_count = serializers.SerializerMethodField()
    person_count = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["id", "name", "title", "description", "identifier_column", "rows_per_person", "protection", "columns",
                  "dictionary_version", "current_version", "current_version_number", "row_count", "person_count",
                  "created_by", "created_at"]

    protection = serializers.DictField(help_text="stricter disclosure control than the settings ({} when none)")
    dictionary_version = serializers.SerializerMethodField()

    @extend_schema_field(ColumnOut(many=True))
    def get_columns(self, obj):
        return [{"name": c["name"], "type": c["type"], "role": c.get("role") or ("drop" if c.get("drop") else ""),
                 "drop": bool(c.get("drop", False)), "description": c.get("description") or ""} for c in obj.columns]

    def get_dictionary_version(self, obj) -> int | None:
        return (obj.dictionary or {}).get("version")

    def get_current_version_number(self, obj) -> int | None:
        return obj.current_version.number if obj.current_version_id else None

    def _counts(self, obj) -> tuple[int | None, int | None]:
        """Exact for custodians; perturbed and rounded to two significant figures for anyone else
        (``environment.counts``). Without a request in the context: the perturbed counts."""
        request = self.context.get("request")
        exact = bool(request is not None and has_role(request.user, Role.CUSTODIAN))
        return shown_counts(obj.current_version if obj.current_version_id else None, exact=exact)

    def get_row_count(self, obj) -> int | None:
        return self._counts(obj)[0]

    def get_person_count(self, obj) -> int | None:
        return self._counts(obj)[1]

    def get_created_by(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by_id else None


@extend_schema_field({"type": "string", "description": "one of loading, ready, failed (loading → ready | failed)"})
class VersionStatusField(serializers.CharField):
    """A plain string in the schema (an enum would collide with the other apps' ``status`` enums)."""


@extend_schema_field({"type": "string", "enum": DatasetVersion.Origin.values,
                      "description": "upload, or erasure (rewritten without opted-out persons)"})
class VersionOriginField(serializers.CharField):
    pass


class VersionError(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text=f"null for a file-level problem; {ROW_CONVENTION}")
    column = serializers.CharField(allow_null=True)
    value_preview = serializers.CharField(allow_null=True, help_text="the start of the refused value (never for the identifier)")
    reason = serializers.CharField()


class VersionProgress(serializers.Serializer):
    phase = serializers.ChoiceField(choices=DatasetVersion.Phase.choices)
    rows_done = serializers.IntegerField()
    rows_total = serializers.IntegerField(allow_null=True, help_text="null until the file has been counted")


class VersionOut(serializers.ModelSerializer):
    version = serializers.IntegerField(source="pk", help_text="the version's id (as in the dataset's current_version)")
    status = VersionStatusField()
    origin = VersionOriginField()
    dataset = serializers.IntegerField(source="dataset_id")
    errors = VersionError(many=True)
    is_current = serializers.SerializerMethodField()
    file_deleted = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    derived_from = serializers.IntegerField(source="derived_from_id", allow_null=True)
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = ["id", "version", "number", "dataset", "status", "origin", "derived_from", "is_current",
                  "row_count", "person_count", "errors", "error_count", "rows_removed", "persons_removed",
                  "build_seconds", "optout_watermark", "source_format", "source_bytes", "encoding", "progress",
                  "created_by", "created_at", "started_at", "finished_at", "superseded_at", "file_deleted"]

    def get_is_current(self, obj) -> bool:
        return obj.dataset.current_version_id == obj.pk

    def get_file_deleted(self, obj) -> bool:
        return obj.file_deleted_at is not None

    @extend_schema_field(VersionProgress(allow_null=True, help_text="while loading: {phase, rows_done, rows_total}"))
    def get_progress(self, obj):
        """While loading: ``{phase, rows_done, rows_total}`` (updated every second)."""
        if obj.status != DatasetVersion.Status.LOADING:
            return None
        return {"phase": obj.phase or DatasetVersion.Phase.VALIDATING, "rows_done": obj.rows_loaded or 0,
                "rows_total": obj.rows_total}

    def get_created_by(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by_id else None


class VersionAccepted(serializers.Serializer):
    version = serializers.IntegerField(help_text="the new version's id")
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    status = VersionStatusField()


class UploadIn(serializers.Serializer):
    file = serializers.FileField(help_text="CSV (comma-separated, UTF-8, header line) or Parquet")
    encoding = serializers.ChoiceField(choices=list(ENCODINGS), required=False,
                                       help_text="the CSV file's encoding when it is not UTF-8 (never guessed)")


class OptOutIn(serializers.Serializer):
    nhs_numbers = serializers.ListField(child=serializers.CharField(max_length=32, trim_whitespace=True), allow_empty=False)


class OptOutAccepted(serializers.Serializer):
    registered = serializers.IntegerField(help_text="new in this request")
    already_registered = serializers.IntegerField()


class OptOutStatus(serializers.Serializer):
    registered = serializers.IntegerField()
    pending_erasure = serializers.IntegerField()
    last_erasure_at = serializers.DateTimeField(allow_null=True)
