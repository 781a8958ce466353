from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .ingest import ROW_CONVENTION
from .models import Dataset, DatasetVersion


class ColumnIn(serializers.Serializer):
    name = serializers.CharField(max_length=63, trim_whitespace=False)
    type = serializers.ChoiceField(choices=Dataset.ColumnType.choices)
    drop = serializers.BooleanField(required=False, default=False)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class DatasetIn(serializers.Serializer):
    name = serializers.CharField(max_length=63, trim_whitespace=False)
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)
    identifier_column = serializers.CharField(max_length=63, trim_whitespace=False)
    columns = serializers.ListField(child=ColumnIn(), min_length=1, max_length=1000)


class ColumnOut(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=Dataset.ColumnType.choices)
    drop = serializers.BooleanField()
    description = serializers.CharField()


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
        fields = ["id", "name", "title", "description", "identifier_column", "columns", "current_version",
                  "current_version_number", "row_count", "person_count", "created_by", "created_at"]

    @extend_schema_field(ColumnOut(many=True))
    def get_columns(self, obj):
        return [{"name": c["name"], "type": c["type"], "drop": bool(c.get("drop", False)),
                 "description": c.get("description") or ""} for c in obj.columns]

    def get_current_version_number(self, obj) -> int | None:
        return obj.current_version.number if obj.current_version_id else None

    def get_row_count(self, obj) -> int | None:
        return obj.current_version.row_count if obj.current_version_id else None

    def get_person_count(self, obj) -> int | None:
        return obj.current_version.person_count if obj.current_version_id else None

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
    reason = serializers.CharField()


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
                  "build_seconds", "optout_watermark", "source_format", "source_bytes", "progress",
                  "created_by", "created_at", "started_at", "finished_at", "superseded_at", "file_deleted"]

    def get_is_current(self, obj) -> bool:
        return obj.dataset.current_version_id == obj.pk

    def get_file_deleted(self, obj) -> bool:
        return obj.file_deleted_at is not None

    @extend_schema_field(serializers.DictField(allow_null=True, help_text="{rows_loaded, rows_total} while loading"))
    def get_progress(self, obj):
        """While loading: ``{rows_loaded, rows_total}`` (an estimate, updated every few seconds)."""
        if obj.status != DatasetVersion.Status.LOADING:
            return None
        return {"rows_loaded": obj.rows_loaded or 0, "rows_total": obj.rows_total}

    def get_created_by(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by_id else None


class VersionAccepted(serializers.Serializer):
    version = serializers.IntegerField(help_text="the new version's id")
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    status = VersionStatusField()


class UploadIn(serializers.Serializer):
    file = serializers.FileField(help_text="CSV (comma-separated, UTF-8, header line) or Parquet")


class OptOutIn(serializers.Serializer):
    nhs_numbers = serializers.ListField(child=serializers.CharField(max_length=32, trim_whitespace=True), allow_empty=False)


class OptOutAccepted(serializers.Serializer):
    registered = serializers.IntegerField(help_text="new in this request")
    already_registered = serializers.IntegerField()


class OptOutStatus(serializers.Serializer):
    registered = serializers.IntegerField()
    pending_erasure = serializers.IntegerField()
    last_erasure_at = serializers.DateTimeField(allow_null=True)
