import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


def on_query_completed(sender, query, **kwargs):
    """``queries.signals.query_completed``: disclosure control and the output, in the completion's
    transaction (a failure here fails the query with ``system_error``)."""
    from .services import output_create_for_query  # noqa: PLC0415 — apps.py is loaded before models

    output_create_for_query(query=query)


def on_optouts_registered(sender, dataset_ids, registered_at, **kwargs):
    """``environment.signals.optouts_registered`` (sent on commit of an opt-out registration):
    unreleased outputs computed from those datasets before the registration go stale and their
    queries are re-run. The registration has already committed, so a failure here is logged rather
    than turned into an error for the custodian; the outputs of other datasets are unaffected."""
    from .services import mark_stale_for_datasets  # noqa: PLC0415 — apps.py is loaded before models

    try:
        mark_stale_for_datasets(dataset_ids=list(dataset_ids), registered_at=registered_at)
    except Exception:
        log.exception("marking outputs stale after an opt-out failed (datasets %s)", list(dataset_ids))


class OutputsConfig(AppConfig):
    name = "outputs"

    def ready(self):
        from django.conf import settings  # noqa: PLC0415

        from environment.counts import register_perturbation  # noqa: PLC0415
        from environment.signals import optouts_registered  # noqa: PLC0415 — signals are wired in ready()
        from queries.signals import query_completed  # noqa: PLC0415 — signals are wired in ready()

        from .disclosure import DisclosureParams, perturb_dataset_count  # noqa: PLC0415

        params = DisclosureParams.from_settings(settings)
        register_perturbation(lambda count, ckey: perturb_dataset_count(count, ckey, params))
        query_completed.connect(on_query_completed, dispatch_uid="outputs.create_on_query_completed")
        optouts_registered.connect(on_optouts_registered, dispatch_uid="outputs.mark_stale_on_optout")
