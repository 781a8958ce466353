from django.utils import timezone
from rest_framework import serializers

from .models import Query


class QueryIn(serializers.Serializer):
    sql = serializers.CharField(trim_whitespace=False, allow_blank=False)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class QueryOut(serializers.ModelSerializer):
    """What a member sees of a query: never result values, never the rewritten SQL."""

    submitted_by = serializers.CharField(source="submitted_by.username", read_only=True)
    datasets = serializers.ListField(source="dataset_names", child=serializers.CharField(), read_only=True)
    output = serializers.SerializerMethodField()
    elapsed_ms = serializers.SerializerMethodField()

    class Meta:
        model = Query
        fields = ["id", "project", "title", "status", "sql", "datasets", "submitted_by", "submitted_at", "started_at",
                  "finished_at", "elapsed_ms", "error", "error_code", "output", "rerun_of"]

    def get_output(self, query) -> int | None:
        output = getattr(query, "output", None)
        return output.pk if output is not None else None

    def get_elapsed_ms(self, query) -> int | None:
        """Time running so far (while running) or the run's duration (once finished)."""
        if query.started_at is None:
            return None
        end = query.finished_at or timezone.now()
        return max(0, round((end - query.started_at).total_seconds() * 1000))
