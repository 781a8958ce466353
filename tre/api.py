"""Cross-cutting endpoints: API root, login (token), me, healthz."""

import time

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.cache import cache
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from audit.actions import AuditAction
from audit.services import audit_record

from .health import health_report
from .roles import user_roles

LOGIN_FAILURE_LIMIT = 10  # failed logins per username (and per client address) ...
LOGIN_FAILURE_WINDOW = 15 * 60  # ... within this many seconds, then 429 until the window passes


# Answers Django gives before or outside DRF are JSON too, never an HTML page.

@csrf_exempt
def not_found(request, *args, **kwargs):
    return JsonResponse({"detail": "not found"}, status=404)


def bad_request_handler(request, exception=None):
    return JsonResponse({"detail": "bad request"}, status=400)


def permission_denied_handler(request, exception=None):
    return JsonResponse({"detail": "forbidden"}, status=403)


def not_found_handler(request, exception=None):
    return JsonResponse({"detail": "not found"}, status=404)


def server_error_handler(request):
    return JsonResponse({"detail": "internal error; it has been logged"}, status=500)


def csrf_failure(request, reason=""):
    return JsonResponse({"detail": f"CSRF check failed: {reason}; API clients should use token authentication"}, status=403)


class ApiRootApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        names = ["auth-token", "me", "register", "projects", "datasets", "organisations", "agreements",
                 "outputs", "opt-outs", "audit-events"]
        links = {}
        for name in names:
            try:
                links[name] = reverse(name, request=request)
            except Exception:  # an app not yet routed
                continue
        return Response({"links": links, "schema": reverse("schema", request=request), "docs": reverse("docs", request=request)})


class TokenIn(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=512, trim_whitespace=False)


def _failure_keys(request, username: str) -> list[str]:
    return [f"login-fail:user:{username.lower()}", f"login-fail:ip:{request.META.get('REMOTE_ADDR', '')}"]


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
        username, password = body.validated_data["username"], body.validated_data["password"]
        keys = _failure_keys(request, username)
        if any((cache.get(k) or 0) >= LOGIN_FAILURE_LIMIT for k in keys):
            return Response({"detail": "too many failed logins; try again later"}, status=429,
                            headers={"Retry-After": str(LOGIN_FAILURE_WINDOW)})
        user = authenticate(request, username=username, password=password)
        if user is None:
            for k in keys:
                cache.add(k, 0, LOGIN_FAILURE_WINDOW)
                try:
                    cache.incr(k)
                except ValueError:
                    cache.set(k, 1, LOGIN_FAILURE_WINDOW)
            with transaction.atomic():
                audit_record(actor=None, action=AuditAction.AUTH_LOGIN_FAILED, data={"username": username[:150]}, request=request)
            return Response({"non_field_errors": ["unable to log in with the credentials given"]}, status=400)
        with transaction.atomic():
            token, created = Token.objects.get_or_create(user=user)
            if not created and token.created < _expiry_cutoff():
                token.delete()
                token = Token.objects.create(user=user)
            audit_record(actor=user, action=AuditAction.AUTH_LOGIN_SUCCEEDED, target=("user", user.pk), request=request)
        from datetime import timedelta

        return Response({"token": token.key, "expires_at": token.created + timedelta(hours=settings.TRE_TOKEN_TTL_HOURS)})


def _expiry_cutoff():
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(hours=settings.TRE_TOKEN_TTL_HOURS)


class MeOut(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    organisation = serializers.IntegerField(allow_null=True)
    organisation_name = serializers.CharField(allow_null=True)
    projects = serializers.ListField(child=serializers.DictField())


class MeApi(APIView):
    @extend_schema(responses={200: MeOut, 401: None})
    def get(self, request):
        from projects.selectors import member_projects

        user = request.user
        org = getattr(getattr(user, "profile", None), "organisation", None)
        return Response({
            "username": user.get_username(),
            "roles": sorted(user_roles(user)),
            "organisation": org.pk if org else None,
            "organisation_name": org.name if org else None,
            "projects": member_projects(user),
        })


class HealthzApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: inline_serializer("Health", {"database": serializers.CharField(), "broker": serializers.CharField(),
                                                                "store": serializers.CharField()}), 503: None})
    def get(self, request):
        started = time.monotonic()
        report = health_report()
        report["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        ok = all(report[k] == "ok" for k in ("database", "broker", "store"))
        return Response(report, status=200 if ok else 503)
