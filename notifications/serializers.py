from rest_framework import serializers

from tre.openapi import NamedChoiceField

from .models import Kind, Notification


class NotificationOut(serializers.ModelSerializer):
    kind = NamedChoiceField(enum_name="NotificationKindEnum", choices=Kind.choices)
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "text", "link", "target_type", "target_id", "created_at", "read", "read_at"]

    def get_read(self, obj) -> bool:
        return obj.read_at is not None
