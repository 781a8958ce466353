"""Outputs: the list and the two views, the researcher's transitions, the checkers' votes and the
download. Thin views: find the output the user may see (404 otherwise), check who may act (403),
validate (400), call one service (409 for the wrong state)."""

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from tre.openapi import answers
from tre.roles import Role, has_role

from . import exports, policies, selectors, services
from .models import Output
from .serializers import (
    DownloadParams,
    ListParams,
    OutputCheckerOut,
    OutputListOut,
    OutputMemberOut,
    OutputReviewIn,
    OutputTransitionIn,
    checker_view,
    list_item,
    member_view,
)

OutputDetail = PolymorphicProxySerializer(
    component_name="OutputDetail",
    serializers={"member": OutputMemberOut, "checker": OutputCheckerOut},
    resource_type_field_name="view",
)


def output_view(request, output) -> dict:
    """The view of ``output`` that ``request.user`` gets. A checker's view reads the raw table and
    is audited (``output.raw_viewed``)."""
    user = request.user
    if policies.sees_checker_view(user, output):
        services.output_raw_viewed(output=output, actor=user, request=request)
        reviews = selectors.reviews_visible_to(user=user, output=output, checker_view=True)
        return checker_view(output, reviews=reviews)
    reviews = selectors.reviews_visible_to(user=user, output=output, checker_view=False)
    return member_view(output, reviews=reviews)


def _fresh(request, pk) -> dict:
    return output_view(request, selectors.output_get_for(user=request.user, pk=pk))


class OutputListApi(generics.GenericAPIView):
    """Members: the outputs of their projects. Output checkers: outputs whose release was requested
    (``?status=submitted`` is the queue, oldest request first). Anyone else: an empty list."""

    serializer_class = OutputListOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Output.objects.none()
        params = ListParams(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return selectors.output_list_for(user=self.request.user, status=params.validated_data.get("status"))

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=Output.Status.values, required=False,
                                     description="only outputs in this state; `submitted` is oldest first")],
        responses=answers(OutputListOut(many=True), 400, 401))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        member_of = selectors.member_project_ids(request.user)
        checker = has_role(request.user, Role.OUTPUT_CHECKER)
        data = [list_item(o, checker=checker and o.project_id not in member_of) for o in page]
        return self.get_paginated_response(data)


class OutputDetailApi(APIView):
    @extend_schema(responses=answers(OutputDetail, 401, 404),
                   description="The member view, or (for an output checker who is not a member of the project) "
                               "the checker view with the raw table; each checker view is audited.")
    def get(self, request, pk):
        return Response(_fresh(request, pk))


class _MemberTransitionApi(APIView):
    """A member moves their output along its lifecycle through one service."""

    service: Any = None  # a function from outputs.services
    action = ""  # for the refusal message: "only a member may <action>"

    def post(self, request, pk):
        output = selectors.output_get_for(user=request.user, pk=pk)
        policies.require_member(request.user, output, self.action)
        body = OutputTransitionIn(data=request.data)
        body.is_valid(raise_exception=True)
        type(self).service(output=output, actor=request.user, request=request, **body.validated_data)
        return Response(_fresh(request, pk))


@extend_schema_view(post=extend_schema(
    request=OutputTransitionIn, responses=answers(OutputDetail, 400, 401, 403, 404, 409),
    description="A member asks for release (`pending`/`returned` → `submitted`); `comment` is a note to the checkers."))
class OutputRequestReleaseApi(_MemberTransitionApi):
    service, action = services.output_request_release, "request its release"


@extend_schema_view(post=extend_schema(
    request=OutputTransitionIn, responses=answers(OutputDetail, 400, 401, 403, 404, 409),
    description="A member withdraws the output (`pending`/`returned` → `withdrawn`)."))
class OutputWithdrawApi(_MemberTransitionApi):
    service, action = services.output_withdraw, "withdraw it"


class OutputReviewsApi(APIView):
    @extend_schema(request=OutputReviewIn, responses=answers(OutputCheckerOut, 400, 401, 403, 404, 409),
                   description="An eligible output checker votes in the current round (once). Answers the checker "
                               "view (audited as a raw view).")
    def post(self, request, pk):
        output = selectors.output_get_for(user=request.user, pk=pk)
        policies.require_eligible_checker(request.user, output)
        body = OutputReviewIn(data=request.data)
        body.is_valid(raise_exception=True)
        services.output_review(output=output, actor=request.user, request=request, **body.validated_data)
        return Response(_fresh(request, pk))


def _attachment(content, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


class OutputDownloadApi(APIView):
    """The released table (never ``n_persons``), audited as ``output.downloaded``."""

    def perform_content_negotiation(self, request, force=False):
        # The answer is a file whatever the client accepts; errors are JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[OpenApiParameter("file_format", str, enum=list(exports.FORMATS), required=False,
                                     description="csv (default), json, acro (ACRO's results.json) or acro_zip "
                                                 "(a directory SACRO-Viewer opens)")],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="the released table: a header row, then the rows"),
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="`{metadata, columns, rows}`, or ACRO's results.json"),
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="acro_zip: the folder SACRO-Viewer opens"),
            **{k: v for k, v in answers(None, 400, 401, 403, 404, 409).items() if k != 200}})
    def get(self, request, pk):
        output = selectors.output_get_for(user=request.user, pk=pk)
        policies.require_member(request.user, output, "download it")
        params = DownloadParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        file_format = params.validated_data["file_format"]
        services.output_downloaded(output=output, actor=request.user, file_format=file_format, request=request)
        output.refresh_from_db()
        stem = f"output-{output.pk}"
        if file_format == "csv":
            return _attachment(exports.as_csv(output), "text/csv; charset=utf-8", f"{stem}.csv")
        if file_format == "json":
            body = json.dumps(exports.as_json(output), cls=DjangoJSONEncoder)
            return _attachment(body, "application/json", f"{stem}.json")
        comments = [r.comment for r in output.reviews.filter(round=output.round, decision="approve")
                    .order_by("created_at", "id")]
        if file_format == "acro":
            body = json.dumps(exports.acro_results(output, comments=comments), indent=4, cls=DjangoJSONEncoder)
            return _attachment(body, "application/json", "results.json")
        return _attachment(exports.acro_zip(output, comments=comments), "application/zip", f"{stem}-acro.zip")
