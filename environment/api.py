"""Datasets, their versions (uploads), opt-outs. Views are thin: check, call a service/selector."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from tre.errors import Forbidden, Invalid
from tre.openapi import answers
from tre.roles import Role, has_role, require_role

from . import selectors, services, store
from .ingest import ENCODINGS, ROW_CONVENTION, normalise_encoding
from .models import DatasetVersion
from .serializers import (
    DatasetIn,
    DatasetMetaIn,
    DatasetOut,
    OptOutAccepted,
    OptOutIn,
    OptOutStatus,
    UploadIn,
    VersionAccepted,
    VersionOut,
)
from .uploads import FIELD, MULTIPART_SLACK, IncomingFile, IncomingUploadHandler, UploadTooLarge, copy_to_incoming


def require_optout_registrar(user) -> None:
    """Custodians, and the machine account(s) in group ``opt_out_service``."""
    if has_role(user, Role.CUSTODIAN):
        return
    if user.groups.filter(name=services.OPTOUT_SERVICE_GROUP).exists():
        return
    raise Forbidden(f"only a data custodian (group '{Role.CUSTODIAN.value}') or the opt-out service "
                    f"(group '{services.OPTOUT_SERVICE_GROUP}') may do this", rule=f"role_{Role.CUSTODIAN.value}")


class DatasetListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """``GET``: every dataset (any signed-in user). ``POST``: register a dataset (custodians)."""

    serializer_class = DatasetOut
    parser_classes = [JSONParser]

    def get_queryset(self):
        return selectors.dataset_list()

    @extend_schema(responses=answers(DatasetOut(many=True), 401))
    def get(self, request):
        return self.list(request)

    @extend_schema(request=DatasetIn, responses=answers(DatasetOut, 400, 401, 403, ok_code=201))
    def post(self, request):
        """Declare a dataset and its data dictionary. A 400 names every bad field at once (the
        declaration's rules: ``environment/declaration.py``, docs/environment.md)."""
        require_role(request.user, Role.CUSTODIAN)
        if not isinstance(request.data, dict):
            raise Invalid(fields={"non_field_errors": ["the declaration must be a JSON object"]})
        meta = DatasetMetaIn(data=request.data)
        meta.is_valid()
        errors = {**meta.errors, **services.dataset_declaration_problems(request.data)}
        if errors:
            raise Invalid(fields=errors)
        dataset = services.dataset_create(actor=request.user, request=request, title=meta.validated_data["title"],
                                          description=meta.validated_data["description"], declaration=request.data)
        return Response(DatasetOut(selectors.dataset_get(pk=dataset.pk), context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class DatasetDetailApi(APIView):
    @extend_schema(responses=answers(DatasetOut, 401, 404))
    def get(self, request, pk):
        return Response(DatasetOut(selectors.dataset_get(pk=pk), context={"request": request}).data)


class DatasetVersionListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """Custodians: ``GET`` the versions of a dataset (newest first); ``POST`` upload a new one.

    The upload is a multipart form with one file part, ``file``: a CSV (comma-separated, UTF-8 —
    or the ``encoding`` declared in the form, e.g. ``cp1252`` — a header line naming the declared
    columns in any order) or a Parquet file. It streams to the store and is loaded by a worker: 202
    ``{version, status: loading}``; follow the version here (``progress: {phase, rows_done,
    rows_total}``) until ``ready`` or ``failed`` (with ``errors``: the first 1,000 problems
    ``{row, column, value_preview, reason}``, """ + ROW_CONVENTION + """, and ``error_count``).
    A failed load keeps no data and does not move ``current_version``.
    """

    serializer_class = VersionOut
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return DatasetVersion.objects.none()
        return selectors.version_list(dataset=self.dataset)

    @extend_schema(responses=answers(VersionOut(many=True), 401, 403, 404))
    def get(self, request, pk):
        self.dataset = selectors.dataset_get(pk=pk)
        require_role(request.user, Role.CUSTODIAN)
        return self.list(request)

    @extend_schema(request={"multipart/form-data": UploadIn},
                   responses=answers(VersionAccepted, 400, 401, 403, 404, 413, 415, ok_code=202))
    def post(self, request, pk):
        dataset = selectors.dataset_get(pk=pk)
        require_role(request.user, Role.CUSTODIAN)
        limit = int(settings.TRE_MAX_UPLOAD_BYTES)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit + MULTIPART_SLACK:
            raise UploadTooLarge(limit)  # refused before reading the body
        handler = IncomingUploadHandler(request._request, limit=limit)
        try:
            request._request.upload_handlers = [handler]
        except AttributeError:  # the body was parsed already (e.g. by a CSRF check): copied below
            handler = None
        incoming = None
        try:
            upload = request.FILES.get(FIELD)
            if upload is None:
                raise Invalid(fields={FIELD: ["No file was submitted (a multipart form with a 'file' part)."]})
            declared = request.POST.get("encoding") or ""
            encoding = normalise_encoding(declared) if declared else ""
            if encoding is None:
                raise Invalid(fields={"encoding": [f"'{declared[:40]}' is not an accepted encoding; use one of "
                                                   f"{', '.join(ENCODINGS)} (a CSV is UTF-8 unless declared)"]})
            incoming = upload if isinstance(upload, IncomingFile) else copy_to_incoming(upload, limit=limit)
            version = services.version_upload(dataset=dataset, actor=request.user, incoming_path=incoming.path,
                                               size=incoming.size, sha256=incoming.sha256, filename=incoming.name,
                                               encoding=encoding, request=request)
        except BaseException:
            if handler is not None:
                handler.cleanup()
            if incoming is not None:
                store.remove_quietly(incoming.path)
            raise
        # the status at acceptance (``loading``); the load may already be running
        return Response({"version": version.pk, "id": version.pk, "number": version.number, "status": version.status},
                        status=status.HTTP_202_ACCEPTED)


class DatasetVersionDetailApi(APIView):
    @extend_schema(responses=answers(VersionOut, 401, 403, 404))
    def get(self, request, pk, version_id):
        dataset = selectors.dataset_get(pk=pk)
        require_role(request.user, Role.CUSTODIAN)
        return Response(VersionOut(selectors.version_get(dataset=dataset, pk=version_id)).data)


class OptOutApi(APIView):
    """Register national data opt-outs: ``{nhs_numbers: [...]}``. Every number is validated
    (10 digits, modulus-11 check digit; spaces and dashes are ignored); one invalid number refuses
    the batch (400 naming positions, never numbers). Only the keyed hash is kept. From the moment
    of registration queries exclude these persons; erasure then rewrites the datasets."""

    parser_classes = [JSONParser]

    @extend_schema(request=OptOutIn, responses=answers(OptOutAccepted, 400, 401, 403, ok_code=202))
    def post(self, request):
        require_optout_registrar(request.user)
        body = OptOutIn(data=request.data)
        body.is_valid(raise_exception=True)
        counts = services.optouts_register(actor=request.user, nhs_numbers=body.validated_data["nhs_numbers"], request=request)
        return Response(counts, status=status.HTTP_202_ACCEPTED)


class OptOutStatusApi(APIView):
    @extend_schema(responses=answers(OptOutStatus, 401, 403))
    def get(self, request):
        require_optout_registrar(request.user)
        return Response(OptOutStatus(services.optout_status()).data)
