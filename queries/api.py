import time

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from projects.policies import is_member
from projects.selectors import project_get_for
from tre.errors import Forbidden
from tre.pagination import Pagination, paginated

from .models import Query
from .selectors import query_get_for, query_list_for
from .serializers import QueryIn, QueryOut
from .services import query_cancel, query_submit

CANCEL_WAIT_SECONDS = 2.5  # a running query's engine is interrupted well within this


def _require_member(user, project):
    if not is_member(user, project):
        raise Forbidden("only a member of this project may do this", rule="not_member")


class ProjectQueryListApi(APIView):
    @extend_schema(request=QueryIn, responses={201: QueryOut, 400: OpenApiResponse(description="the SQL breaks a rule: {\"sql\": [...]}"),
                                               401: None, 403: OpenApiResponse(description="access refused: {detail, rule}"),
                                               404: None, 409: OpenApiResponse(description="a dataset has no data yet"),
                                               413: None})
    def post(self, request, pk):
        project = project_get_for(user=request.user, pk=pk)
        body = QueryIn(data=request.data)
        body.is_valid(raise_exception=True)
        query = query_submit(project=project, actor=request.user, request=request, **body.validated_data)
        data = QueryOut(query).data
        if query.target == Query.Target.REAL:
            data["status"] = Query.Status.QUEUED  # as accepted; in-process runs (embedded mode) may already be done
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: paginated(QueryOut), 401: None, 403: None, 404: None})
    def get(self, request, pk):
        project = project_get_for(user=request.user, pk=pk)
        _require_member(request.user, project)
        paginator = Pagination()
        page = paginator.paginate_queryset(query_list_for(user=request.user, project=project), request, view=self)
        return paginator.get_paginated_response(QueryOut(page, many=True).data)


class QueryDetailApi(APIView):
    @extend_schema(responses={200: QueryOut, 401: None, 404: None})
    def get(self, request, pk):
        return Response(QueryOut(query_get_for(user=request.user, pk=pk)).data)


class QueryCancelApi(APIView):
    @extend_schema(request=None, responses={200: QueryOut, 401: None, 404: None, 409: None})
    def post(self, request, pk):
        query = query_get_for(user=request.user, pk=pk)
        query = query_cancel(query=query, actor=request.user, request=request)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while not query.is_finished and time.monotonic() < deadline:
            time.sleep(0.1)
            query.refresh_from_db()
        return Response(QueryOut(query_get_for(user=request.user, pk=pk)).data)
