import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


def on_optouts_registered(sender, dataset_ids, registered_at, **kwargs):
    """``environment.signals.optouts_registered`` (sent on commit of an opt-out registration):
    unreleased outputs computed from those datasets before the registration go stale and their
    queries are re-run. The registration has already committed, so a failure here is logged rather
    than turned into an error for the custodian; the outputs of other datasets are unaffected."""
    from .services import mark_stale_for_datasets

    try:
        mark_stale_for_datasets(dataset_ids=list(dataset_ids), registered_at=registered_at)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("marking outputs stale after an opt-out failed (datasets %s)", list(dataset_ids))


class OutputsConfig(AppConfig):
    name = "outputs"

    def ready(self):
        # The environment app sends ``optouts_registered(sender, dataset_ids, registered_at)`` on
        # commit when an opt-out touches datasets. It is written alongside this app: until its
        # ``signals`` module exists there is nothing to subscribe to, and nothing is lost (no
        # opt-out can be registered without it).
        try:
            from environment.signals import optouts_registered
        except ImportError:
            log.info("environment.signals.optouts_registered does not exist yet: outputs are not marked stale")
            return
        optouts_registered.connect(on_optouts_registered, dispatch_uid="outputs.mark_stale_on_optout")
