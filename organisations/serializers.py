from rest_framework import serializers

from tre.openapi import NamedChoiceField

from .models import Organisation, Purpose, Sector


class PurposeField(NamedChoiceField):
    """One word of the purpose vocabulary (``purpose_categories``, ``prohibited_uses``)."""

    def __init__(self, **kwargs):
        super().__init__(enum_name="PurposeEnum", choices=Purpose.choices, **kwargs)


class OrganisationIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    sector = NamedChoiceField(enum_name="SectorEnum", choices=Sector.choices)


class OrganisationOut(serializers.ModelSerializer):
    sector = NamedChoiceField(enum_name="SectorEnum", choices=Sector.choices)

    class Meta:
        model = Organisation
        fields = ["id", "name", "sector", "created_at"]
