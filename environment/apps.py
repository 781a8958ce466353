from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_optout_service_group(sender, **kwargs):
    if sender.name != "environment":
        return
    from django.contrib.auth.models import Group

    from .services import OPTOUT_SERVICE_GROUP

    Group.objects.get_or_create(name=OPTOUT_SERVICE_GROUP)


class EnvironmentConfig(AppConfig):
    name = "environment"

    def ready(self):
        post_migrate.connect(_ensure_optout_service_group, sender=self, dispatch_uid="environment.optout_service_group")
