"""Schema helpers shared by every app: the error answers of tre.errors, declared per status code
for drf-spectacular, and a choice field whose vocabulary is one named schema component."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

_detail = inline_serializer("ErrorDetail", {"detail": serializers.CharField()})
_rule = inline_serializer("ErrorRule", {"detail": serializers.CharField(), "rule": serializers.CharField()})
_state = inline_serializer("ErrorState", {"detail": serializers.CharField(),
                                          "status": serializers.CharField(required=False)})

ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad input: an object naming each bad field (DRF style)"),
    401: OpenApiResponse(_detail, description="not authenticated"),
    403: OpenApiResponse(_rule, description="not allowed: `detail` says why and `rule` names the rule"),
    404: OpenApiResponse(_detail, description="unknown, or not visible to you"),
    409: OpenApiResponse(_state, description="wrong state for this action"),
    413: OpenApiResponse(inline_serializer("ErrorTooLarge", {"detail": serializers.CharField(),
                                                             "limit_bytes": serializers.IntegerField()}),
                         description="the upload is larger than TRE_MAX_UPLOAD_BYTES"),
    415: OpenApiResponse(_detail, description="not a multipart/form-data request"),
}


def answers(ok, *errors: int, ok_code: int = 200) -> dict:
    """``{ok_code: ok, **the named error answers}`` for ``extend_schema(responses=...)``."""
    return {ok_code: ok, **{code: ERRORS[code] for code in errors}}


class NamedChoiceField(serializers.ChoiceField):
    """A ChoiceField whose choice set is one named schema component (``enum_name``), shared by
    every field that uses it, so the schema names each vocabulary once (no enum-name warnings,
    which ``manage.py check`` reports)."""

    def __init__(self, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(**kwargs)


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField
    match_subclasses = True

    def get_name(self):
        return self.target.enum_name

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "enum": list(self.target.choices)}


BIGINT_MAX = 2**63 - 1


def object_id(**kwargs):
    """A reference to another object by id (a positive 64-bit integer)."""
    return serializers.IntegerField(min_value=1, max_value=BIGINT_MAX, **kwargs)
