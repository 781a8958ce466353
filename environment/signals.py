"""Signals the environment sends.

``optouts_registered(sender, dataset_ids: list[int], registered_at: datetime)`` is sent after the
commit of an opt-out registration that added persons present in the current version of those
datasets (the outputs app marks unreleased outputs computed from them stale). It carries no person
identifiers.
"""

from django.dispatch import Signal

optouts_registered = Signal()
