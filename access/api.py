"""Data-access agreements. Views are thin: validate, call a selector/service."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tre.openapi import answers
from tre.roles import Role, require_role

from . import selectors, services
from .models import Agreement
from .serializers import AgreementIn, AgreementOut, AgreementRevokeIn

_agreement_filters = [
    OpenApiParameter("organisation", int, description="only this organisation's agreements"),
    OpenApiParameter("dataset", int, description="only agreements covering this dataset"),
]


class AgreementListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """Custodians only: ``GET`` every agreement; ``POST`` a draft agreement."""

    serializer_class = AgreementOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Agreement.objects.none()
        qs = selectors.agreement_list_for(user=self.request.user)
        for param, field in (("organisation", "organisation_id"), ("dataset", "datasets")):
            value = self.request.query_params.get(param, "")
            if value:
                qs = qs.filter(**{field: int(value)}) if value.isdigit() and len(value) <= 18 else qs.none()
        return qs

    @extend_schema(parameters=_agreement_filters, responses=answers(AgreementOut(many=True), 401, 403))
    def get(self, request):
        return self.list(request)

    @extend_schema(request=AgreementIn, responses=answers(AgreementOut, 400, 401, 403, ok_code=201))
    def post(self, request):
        require_role(request.user, Role.CUSTODIAN)
        body = AgreementIn(data=request.data)
        body.is_valid(raise_exception=True)
        agreement = services.agreement_create(actor=request.user, request=request, **body.validated_data)
        agreement = selectors.agreement_get_for(user=request.user, pk=agreement.pk)
        return Response(AgreementOut(agreement).data, status=status.HTTP_201_CREATED)


class AgreementDetailApi(APIView):
    @extend_schema(responses=answers(AgreementOut, 401, 403, 404))
    def get(self, request, pk):
        return Response(AgreementOut(selectors.agreement_get_for(user=request.user, pk=pk)).data)


class AgreementActivateApi(APIView):
    @extend_schema(request=None, responses=answers(AgreementOut, 401, 403, 404, 409))
    def post(self, request, pk):
        agreement = selectors.agreement_get_for(user=request.user, pk=pk)  # 403 unless custodian, then 404
        services.agreement_activate(agreement=agreement, actor=request.user, request=request)
        return Response(AgreementOut(selectors.agreement_get_for(user=request.user, pk=pk)).data)


class AgreementRevokeApi(APIView):
    @extend_schema(request=AgreementRevokeIn, responses=answers(AgreementOut, 400, 401, 403, 404, 409))
    def post(self, request, pk):
        agreement = selectors.agreement_get_for(user=request.user, pk=pk)
        body = AgreementRevokeIn(data=request.data)
        body.is_valid(raise_exception=True)
        services.agreement_revoke(agreement=agreement, actor=request.user, reason=body.validated_data["reason"],
                                  request=request)
        return Response(AgreementOut(selectors.agreement_get_for(user=request.user, pk=pk)).data)
