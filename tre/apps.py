from django.apps import AppConfig
from django.conf import settings


class TreConfig(AppConfig):
    name = "tre"
    verbose_name = "tre core"

    def ready(self):
        from . import signals  # noqa: F401, PLC0415 — receivers connect on import, once the app registry is ready

        try:
            settings.TRE_STORE_DIR.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # reported by /healthz as "missing" or "unwritable"
