"""Organisations. Views are thin: validate, call a selector/service."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, mixins, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from tre.openapi import answers
from tre.roles import Role, require_role

from . import selectors, services
from .serializers import OrganisationIn, OrganisationOut


class OrganisationListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """``GET``: every organisation (any signed-in user). ``POST``: a new one (custodians)."""

    serializer_class = OrganisationOut

    def get_queryset(self):
        return selectors.organisation_list()

    @extend_schema(responses=answers(OrganisationOut(many=True), 401))
    def get(self, request):
        return self.list(request)

    @extend_schema(request=OrganisationIn, responses=answers(OrganisationOut, 400, 401, 403, ok_code=201))
    def post(self, request):
        require_role(request.user, Role.CUSTODIAN)
        body = OrganisationIn(data=request.data)
        body.is_valid(raise_exception=True)
        org = services.organisation_create(actor=request.user, request=request, **body.validated_data)
        return Response(OrganisationOut(org).data, status=status.HTTP_201_CREATED)


class OrganisationDetailApi(APIView):
    @extend_schema(responses=answers(OrganisationOut, 401, 404))
    def get(self, request, pk):
        return Response(OrganisationOut(selectors.organisation_get(pk=pk)).data)


# --- login: a username and password for an API token -------------------------------------

class TokenIn(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=512, trim_whitespace=False)


class TokenApi(APIView):
    """Exchange a username and password for an API token. Repeated failures are throttled (429)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=TokenIn,
        responses={200: inline_serializer("TokenOut", {"token": serializers.CharField(), "expires_at": serializers.DateTimeField()}),
                   400: None, 429: None},
    )
    def post(self, request):
        body = TokenIn(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            user = services.login_check(request=request, **body.validated_data)
        except services.LoginThrottled:
            return Response({"detail": "too many failed logins; try again later"}, status=429,
                            headers={"Retry-After": str(services.LOGIN_FAILURE_WINDOW)})
        if user is None:
            return Response({"non_field_errors": ["unable to log in with the credentials given"]}, status=400)
        token, expires_at = services.api_token_for(user=user, request=request)
        return Response({"token": token.key, "expires_at": expires_at})
