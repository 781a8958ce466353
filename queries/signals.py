"""Signals the queries app sends to the apps above it (DESIGN §1: hand-overs going up are signals).

``query_completed(sender=Query, query=Query)`` is sent inside the transaction that marks a real
query ``completed``; ``outputs`` subscribes (disclosure control, the output). A receiver that
raises fails the query with ``system_error`` (see ``queries.services._hand_over``).
"""

from django.dispatch import Signal

query_completed = Signal()
