import csv
import json

from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actions import AuditAction
from tre.pagination import Pagination, paginated
from tre.roles import Role, require_role

from .selectors import FILTERS, audit_event_list, present_event
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


CSV_COLUMNS = ["seq", "timestamp", "actor", "action", "target_type", "target_id", "project", "data", "ip", "prev_hash", "hash"]


class AuditEventExportApi(APIView):
    @extend_schema(parameters=FILTER_PARAMS, responses={(200, "text/csv"): OpenApiTypes.STR, 400: None, 401: None, 403: None})
    def get(self, request):
        require_role(request.user, Role.AUDITOR)
        qs = audit_event_list(params=request.query_params)
        with transaction.atomic():
            audit_record(actor=request.user, action=AuditAction.AUDIT_EXPORTED, request=request,
                         data={"filters": _filters_used(request.query_params)})
        writer = csv.writer(_Echo())

        def rows():
            yield writer.writerow(CSV_COLUMNS)
            for e in qs.iterator(chunk_size=2000):
                d = present_event(e)
                d["data"] = json.dumps(d["data"], sort_keys=True)
                yield writer.writerow([d[c] if d[c] is not None else "" for c in CSV_COLUMNS])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
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
