"""Cross-cutting endpoints: API root, healthz, and the JSON answers for errors outside DRF."""

import time

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from .health import health_report

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
