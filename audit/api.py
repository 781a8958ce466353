import csv

import orjson
from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actions import AuditAction
from tre.errors import Invalid
from tre.pagination import Pagination, paginated
from tre.roles import Role, require_role

from .selectors import EXPORT_FIELDS, FILTERS, audit_event_list, export_rows, present_event
from .services import audit_record
from .verify import verify_chain

FILTER_PARAMS = [
    OpenApiParameter("actor", str, description="username"),
    OpenApiParameter("action", str, description="exact action, or a prefix ending in * (e.g. project.*)"),
    OpenApiParameter("project", int),
    OpenApiParameter("target_type", str),
    OpenApiParameter("target_id", str),
    OpenApiParameter("since", str, description="ISO date or date-time, inclusive"),
    OpenApiParameter("until", str, description="ISO date (that whole day included) or date-time (exclusive)"),
]

class EventOut(serializers.Serializer):
    seq = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    actor = serializers.CharField()
    actor_id = serializers.IntegerField(allow_null=True)
    action = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    project = serializers.IntegerField(allow_null=True)
    data = serializers.DictField()
    ip = serializers.CharField(allow_null=True)
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


def _filters_used(params) -> dict:
    return {k: params[k] for k in FILTERS if params.get(k)}


class AuditEventListApi(APIView):
    @extend_schema(parameters=FILTER_PARAMS, responses={200: paginated(EventOut), 400: None, 401: None, 403: None})
    def get(self, request):
        require_role(request.user, Role.AUDITOR)
        qs = audit_event_list(params=request.query_params)
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        body = [present_event(e) for e in page]
        with transaction.atomic():
            audit_record(actor=request.user, action=AuditAction.AUDIT_VIEWED, request=request,
                         data={"filters": _filters_used(request.query_params), "events": len(body)})
        return paginator.get_paginated_response(body)


class _Echo:
    def write(self, value):
        return value


EXPORT_FORMATS = ("csv", "jsonl")


def _csv_lines(rows):
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        # null (actor_id, project, ip) is the empty cell; the string fields are never null
        yield writer.writerow(["" if row[f] is None else row[f] for f in EXPORT_FIELDS])


def _jsonl_lines(rows):
    for row in rows:
        yield orjson.dumps(row) + b"\n"  # the keys in EXPORT_FIELDS order; ``data`` is the canonical text


class AuditEventExportApi(APIView):
    """Every event matching the filters, each with every field the hash covers in the exact form
    hashed (docs/audit.md), as CSV (default) or JSON Lines. ``scripts/verify_audit_export.py``
    verifies the file without the server."""

    @extend_schema(
        parameters=[*FILTER_PARAMS, OpenApiParameter("file_format", str, enum=list(EXPORT_FORMATS),
                                                     description="csv (default) or jsonl")],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/jsonl"): OpenApiTypes.STR, 400: None,
                   401: None, 403: None})
    def get(self, request):
        require_role(request.user, Role.AUDITOR)
        file_format = request.query_params.get("file_format") or "csv"
        if file_format not in EXPORT_FORMATS:
            raise Invalid(fields={"file_format": [f"one of {', '.join(EXPORT_FORMATS)}, not {file_format!r}"]})
        qs = audit_event_list(params=request.query_params)
        with transaction.atomic():
            audit_record(actor=request.user, action=AuditAction.AUDIT_EXPORTED, request=request,
                         data={"filters": _filters_used(request.query_params), "file_format": file_format})
        if file_format == "jsonl":
            response = StreamingHttpResponse(_jsonl_lines(export_rows(qs)), content_type="application/jsonl; charset=utf-8")
        else:
            response = StreamingHttpResponse(_csv_lines(export_rows(qs)), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="audit-events.{file_format}"'
        return response


class AuditVerifyApi(APIView):
    @extend_schema(responses={200: inline_serializer("AuditVerification", {
        "valid": serializers.BooleanField(), "events_checked": serializers.IntegerField(),
        "first_invalid_seq": serializers.IntegerField(allow_null=True), "reason": serializers.CharField(allow_null=True)}),
        401: None, 403: None})
    def get(self, request):
        require_role(request.user, Role.AUDITOR)
        result = verify_chain()
        with transaction.atomic():
            audit_record(actor=request.user, action=AuditAction.AUDIT_VERIFIED, request=request, data=result.as_dict())
        return Response(result.as_dict())
