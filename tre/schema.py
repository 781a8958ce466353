"""The OpenAPI schema: every operation declares the error answers it can give, as JSON.

drf-spectacular documents what views annotate; this schema class adds the answers that tre's
shared machinery gives on every operation of a kind, so clients (and schemathesis) can rely on
the schema: 401 where login is needed, 403 where a role or rule may refuse, 404 for unknown or
invisible objects and bad pages, 400 for bad input, 429 for throttled logins, 503 when a
dependency is down. Views' own declarations win; bodiless error declarations get the JSON body.
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import build_object_type
from rest_framework import serializers
from rest_framework.permissions import AllowAny

DESCRIPTIONS = {
    400: "bad input: an object naming each bad field (DRF style), or `detail`",
    401: "not authenticated",
    403: "not allowed: `detail` says why and `rule` names the rule",
    404: "unknown, not visible to you, or no such page",
    409: "wrong state for this action",
    413: "too large",
    429: "too many attempts; see Retry-After",
    503: "a dependency (database, broker, store) is unavailable",
}


class ErrorOut(serializers.Serializer):
    detail = serializers.CharField()
    rule = serializers.CharField(required=False)
    dependency = serializers.CharField(required=False)
    status = serializers.CharField(required=False)


class AutoSchema(SpectacularAutoSchema):
    def _implied_errors(self) -> set[int]:
        codes = {503}
        public = any(p is AllowAny or isinstance(p, AllowAny) for p in self.view.get_permissions())
        if not public:
            codes |= {401, 403}
        if self.path_regex and "(?P<" in self.path_regex:
            codes.add(404)
        if self.method in ("POST", "PUT", "PATCH") or self._is_list_view() or self.get_filter_backends():
            codes.add(400)
        if self.method == "GET" and self._is_paginated():
            codes |= {400, 404}
        return codes

    def _is_paginated(self) -> bool:
        return bool(getattr(self.view, "pagination_class", None)) and self._is_list_view()

    def _error_content(self, code: int) -> dict:
        if code == 400:
            schema = build_object_type(additionalProperties=True, description=DESCRIPTIONS[400])
        else:
            schema = self.resolve_serializer(ErrorOut, "response").ref
        return {"application/json": {"schema": schema}}

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in sorted(self._implied_errors() | {int(c) for c in responses if c.isdigit() and int(c) >= 400}):
            key = str(code)
            if key not in responses:
                responses[key] = {"description": DESCRIPTIONS.get(code, "error")}
            if not responses[key].get("content"):
                responses[key]["content"] = self._error_content(code)
        return responses
