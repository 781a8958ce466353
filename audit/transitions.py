"""State machines as data: one helper applies a model's transition table (checks the state,
saves, audits in the caller's transaction).

Each stateful model keeps its table beside it (``TRANSITIONS``), as OpenSAFELY Airlock's
``VALID_STATE_TRANSITIONS`` does::

    TRANSITIONS = {
        # (from status, action): Step(to status, audit action)
        (DRAFT, "activate"): Step(ACTIVE, AuditAction.AGREEMENT_ACTIVATED),
    }

A refused transition is a 409 naming the state and the actions allowed in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tre.errors import WrongState

from .actions import AuditAction
from .services import audit_record


@dataclass(frozen=True)
class Step:
    to: str
    audit: AuditAction | None  # None: the caller audits (e.g. a vote that decides the round)


Table = Mapping[tuple[Any, str], Step]  # (from status, action) → step; statuses are str (TextChoices)


def allowed_actions(table: Table, status: str) -> list[str]:
    return sorted(action for (source, action) in table if source == status)


def check(table: Table, obj, action: str, *, status: str | None = None) -> Step:
    """The step for ``action`` from ``obj``'s state, or a 409 naming the state and what is allowed.
    ``status`` overrides the stored one (e.g. a project that *reads* as expired)."""
    current = status if status is not None else obj.status
    step = table.get((current, action))
    if step is None:
        name = obj._meta.verbose_name
        allowed = allowed_actions(table, current)
        can = f"; allowed now: {', '.join(allowed)}" if allowed else "; nothing can be done to it now"
        raise WrongState(f"the {name} is {current}: it cannot {action.replace('_', ' ')}{can}", status=current)
    return step


def apply(table: Table, obj, action: str, *, actor, fields: Mapping | None = None,
          data: Mapping | None = None, request=None, status: str | None = None):
    """Apply ``action`` to ``obj`` (locked by the caller): check it, set the new status and
    ``fields``, save those columns, and write the step's audit event with ``data``. Returns ``obj``."""
    step = check(table, obj, action, status=status)
    obj.status = step.to
    for name, value in (fields or {}).items():
        setattr(obj, name, value)
    update = ["status", *(fields or {})]
    if any(f.name == "updated_at" for f in obj._meta.concrete_fields):
        update.append("updated_at")
    obj.save(update_fields=update)
    if step.audit is not None:
        audit_record(actor=actor, action=step.audit, target=obj, request=request,
                     data=dict(data or {}))
    return obj
