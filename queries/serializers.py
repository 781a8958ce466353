"""Inputs, and what a member sees of a query (DESIGN.md §5).

A real query shows its status and text only: no value, no engine error, no timing, no count of
cells — each of them was an oracle in version 1. A failed real query shows ``error_code``
``time_limit`` or ``system_error`` and a generic message. A dummy query (over the dummy twins,
which hold no real value) adds its exact ``result``, the engine's ``error`` and its ``timings``.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Query


class QueryIn(serializers.Serializer):
    sql = serializers.CharField(trim_whitespace=False, allow_blank=False)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    target = serializers.ChoiceField(choices=Query.Target.choices, required=False, default=Query.Target.REAL)


class QueryResultOut(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField(child=serializers.JSONField(allow_null=True)))


class QueryOut(serializers.ModelSerializer):
    """What a member sees of a query. ``result``, ``timings``, ``started_at`` and ``finished_at``
    are null for a real query; ``error`` is generic for a real query."""

    submitted_by = serializers.CharField(source="submitted_by.username", read_only=True)
    datasets = serializers.ListField(source="dataset_names", child=serializers.CharField(), read_only=True)
    output = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    error_code = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    started_at = serializers.SerializerMethodField()
    finished_at = serializers.SerializerMethodField()

    class Meta:
        model = Query
        fields = ["id", "project", "title", "target", "status", "sql", "datasets", "submitted_by", "submitted_at",
                  "error", "error_code", "output", "rerun_of", "result", "timings", "started_at", "finished_at"]

    def _dummy(self, query) -> bool:
        return query.target == Query.Target.DUMMY

    def get_output(self, query) -> int | None:
        output = getattr(query, "output", None)
        return output.pk if output is not None else None

    def get_error(self, query) -> str:
        return query.error if query.status == Query.Status.FAILED else ""

    def get_error_code(self, query) -> str:
        """``time_limit`` or ``system_error`` (a real query's closed set); "" unless failed."""
        return query.error_code if query.status == Query.Status.FAILED else ""

    @extend_schema_field(QueryResultOut(allow_null=True, help_text="dummy runs only: the whole grid, exact"))
    def get_result(self, query):
        return query.result if self._dummy(query) else None

    @extend_schema_field(serializers.DictField(allow_null=True, help_text="dummy runs only"))
    def get_timings(self, query):
        return dict(query.timings) if self._dummy(query) else None

    @extend_schema_field(serializers.DateTimeField(allow_null=True, help_text="dummy runs only"))
    def get_started_at(self, query):
        return serializers.DateTimeField().to_representation(query.started_at) \
            if self._dummy(query) and query.started_at else None

    @extend_schema_field(serializers.DateTimeField(allow_null=True, help_text="dummy runs only"))
    def get_finished_at(self, query):
        return serializers.DateTimeField().to_representation(query.finished_at) \
            if self._dummy(query) and query.finished_at else None
