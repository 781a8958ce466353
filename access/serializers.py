from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from environment.models import Dataset
from organisations.models import Organisation, Purpose
from organisations.serializers import PurposeField
from tre.openapi import NamedChoiceField, object_id

from .models import Agreement


class FreeText(serializers.JSONField):
    """A string, or a list of strings (``permitted_purposes``)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(value, str):
            if len(value) > 5000:
                raise serializers.ValidationError("at most 5000 characters")
            return value
        if isinstance(value, list) and all(isinstance(v, str) and len(v) <= 500 for v in value) and len(value) <= 100:
            return value
        raise serializers.ValidationError("a text, or a list of short texts")


class AgreementIn(serializers.Serializer):
    organisation = object_id()
    datasets = serializers.ListField(child=object_id(), allow_empty=False, max_length=1000)
    title = serializers.CharField(max_length=200)
    reference = serializers.CharField(max_length=100, allow_blank=True, required=False, default="")
    permitted_purposes = FreeText(required=False, default=list)
    prohibited_uses = serializers.ListField(child=PurposeField(), required=False,
                                            default=list, max_length=len(Purpose.values) * 2)
    commercial_use_allowed = serializers.BooleanField(required=False, default=False)
    valid_from = serializers.DateField()
    valid_until = serializers.DateField(required=False, allow_null=True, default=None)

    def validate_organisation(self, value):
        org = Organisation.objects.filter(pk=value).first()
        if org is None:
            raise serializers.ValidationError(f"unknown organisation id {value}")
        return org

    def validate_datasets(self, value):
        ids = list(dict.fromkeys(value))
        found = list(Dataset.objects.filter(pk__in=ids))
        missing = sorted(set(ids) - {d.pk for d in found})
        if missing:
            raise serializers.ValidationError(f"unknown dataset id(s): {', '.join(map(str, missing))}")
        return found

    def validate(self, attrs):
        if attrs.get("valid_until") is not None and attrs["valid_until"] < attrs["valid_from"]:
            raise serializers.ValidationError({"valid_until": ["valid_until must not be before valid_from"]})
        return attrs


class AgreementRevokeIn(serializers.Serializer):
    """``{reason}``; a blank or missing reason is refused by the service (400, after the state check).
    ``comment`` is the deprecated name of ``reason``, still accepted."""

    reason = serializers.CharField(max_length=2000, allow_blank=True, required=False, default="")
    comment = serializers.CharField(max_length=2000, allow_blank=True, required=False, default="",
                                    help_text="deprecated: use reason")

    def validate(self, attrs):
        return {"reason": attrs.get("reason", "").strip() or attrs.pop("comment", "")}


class AgreementOut(serializers.ModelSerializer):
    organisation_name = serializers.CharField(source="organisation.name", read_only=True)
    datasets = serializers.SerializerMethodField()
    dataset_names = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    activated_by = serializers.SerializerMethodField()
    revoked_by = serializers.SerializerMethodField()
    permitted_purposes = serializers.JSONField()

    class Meta:
        model = Agreement
        fields = ["id", "organisation", "organisation_name", "datasets", "dataset_names", "title", "reference",
                  "permitted_purposes", "prohibited_uses", "commercial_use_allowed", "valid_from", "valid_until",
                  "status", "created_by", "created_at", "activated_by", "activated_at", "revoked_by", "revoked_at",
                  "revoke_reason"]

    def get_datasets(self, obj) -> list[int]:
        return sorted(d.pk for d in obj.datasets.all())

    def get_dataset_names(self, obj) -> list[str]:
        return sorted(d.name for d in obj.datasets.all())

    @extend_schema_field(NamedChoiceField(enum_name="AgreementStatusEnum",
                                          choices=[*Agreement.Status.values, Agreement.EXPIRED]))
    def get_status(self, obj):
        return obj.effective_status()

    @staticmethod
    def _username(user):
        return user.get_username() if user else None

    def get_created_by(self, obj) -> str | None:
        return self._username(obj.created_by)

    def get_activated_by(self, obj) -> str | None:
        return self._username(obj.activated_by)

    def get_revoked_by(self, obj) -> str | None:
        return self._username(obj.revoked_by)
