"""Retry an API request whose transaction lost a deadlock or a serialization conflict.

PostgreSQL resolves a deadlock by aborting one transaction; the whole request is then safe to run
again: its transaction was rolled back and its on-commit side effects never ran. The request body
is kept (DRF re-reads it from memory); multipart requests (uploads, streamed to the store) are not
retried.
"""

import logging
import time

from django.db import OperationalError
from django.http import JsonResponse

log = logging.getLogger(__name__)

ATTEMPTS = 3


class TransientConflict(Exception):
    """Raised by the DRF exception handler so this middleware sees a retryable database conflict."""


def is_transient(exc: BaseException) -> bool:
    cause = getattr(exc, "__cause__", None)
    code = getattr(cause, "pgcode", None) or getattr(exc, "pgcode", None)
    return isinstance(exc, OperationalError) and code in ("40P01", "40001")  # deadlock, serialization failure


class RetryTransientConflicts:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.tre_attempt = 1
        request.tre_retryable = request.method in ("POST", "PUT", "PATCH", "DELETE") and \
            not request.content_type.startswith("multipart/")
        if request.tre_retryable:
            request.body  # noqa: B018  (read and keep the body so a retry can parse it again)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, TransientConflict):
            return None
        if not getattr(request, "tre_retryable", False) or request.tre_attempt >= ATTEMPTS:
            return JsonResponse({"detail": "the database was busy with a conflicting change; try again",
                                 "dependency": "database"}, status=503, headers={"Retry-After": "1"})
        log.warning("%s %s: transient database conflict, attempt %s of %s", request.method, request.path,
                    request.tre_attempt, ATTEMPTS)
        request.tre_attempt += 1
        time.sleep(0.02 * request.tre_attempt)
        return self.get_response(request)
