"""Domain errors and the one DRF exception handler that maps them to HTTP.

Services raise these; views never build error responses by hand.

| exception      | status | body                                   |
|----------------|--------|----------------------------------------|
| Invalid        | 400    | ``{field: [messages]}`` or ``{detail}`` |
| Forbidden      | 403    | ``{detail, rule}``                      |
| NotFound       | 404    | ``{detail}``                            |
| WrongState     | 409    | ``{detail, status?}``                   |
| Unavailable    | 503    | ``{detail, dependency}``                |
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .middleware import TransientConflict, is_transient

log = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict:
        return {"detail": self.detail, **self.extra}


class Invalid(DomainError):
    """Bad input. ``fields`` maps a field name to a list of messages (DRF style)."""

    status_code = 400

    def __init__(self, detail: str | None = None, *, fields: dict | None = None, **extra):
        self.fields = fields or {}
        super().__init__(detail or "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in self.fields.items()), **extra)

    def body(self) -> dict:
        if self.fields:
            return {**self.fields, **self.extra}
        return super().body()


class Forbidden(DomainError):
    status_code = 403

    def __init__(self, detail: str, *, rule: str | None = None, **extra):
        super().__init__(detail, **({"rule": rule} if rule else {}), **extra)


class NotFound(DomainError):
    status_code = 404


class WrongState(DomainError):
    status_code = 409


class Unavailable(DomainError):
    status_code = 503

    def __init__(self, detail: str, *, dependency: str, **extra):
        super().__init__(detail, dependency=dependency, **extra)


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(exc.body(), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "message_dict"):
            return Response(exc.message_dict, status=status.HTTP_400_BAD_REQUEST)
        return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = drf.NotFound("not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if is_transient(exc):
        raise TransientConflict() from exc  # RetryTransientConflicts runs the request again
    if isinstance(exc, DatabaseError) and _is_connection_error(exc):
        log.exception("database unavailable")
        return Response({"detail": "the database is unavailable; try again shortly", "dependency": "database"}, status=503)
    return None  # a real bug: let it surface as a 500 (and be logged)


def _is_connection_error(exc) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))
