from django.apps import AppConfig


class TreConfig(AppConfig):
    name = "tre"
    verbose_name = "tre core"

    def ready(self):
        from django.conf import settings

        from . import signals  # noqa: F401  (roles' groups after migrate)

        try:
            settings.TRE_STORE_DIR.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # reported by /healthz as "missing" or "unwritable"
