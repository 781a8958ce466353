from django.apps import AppConfig


class EnvironmentConfig(AppConfig):
    """The opt-out service group (``services.OPTOUT_SERVICE_GROUP``) is created by migration
    ``0002_versions_optouts``; nothing else creates it."""

    name = "environment"
