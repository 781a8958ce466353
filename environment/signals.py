"""Signals the environment sends (how it tells the apps above it; it never imports them).

``optouts_registered(sender, dataset_ids: list[int], registered_at: datetime)`` is sent by the task
that follows an opt-out registration (``tasks.apply_optouts``, after the registration committed)
when the batch added persons present in the current version of those datasets (the outputs app
marks unreleased outputs computed from them before ``registered_at`` stale). It carries no person
identifiers. A redelivered task may send it again for the same batch; receivers decide by time.
"""

from django.dispatch import Signal

optouts_registered = Signal()
