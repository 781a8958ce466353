"""Writes for data-access agreements. Every write audits itself in the same transaction: if the
audit event cannot be written, nothing changed."""

from django.db import transaction
from django.utils import timezone

from audit import transitions
from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid

from .models import TRANSITIONS, Agreement

# --- Data-access agreements ---------------------------------------------------------------

def _agreement_data(agreement) -> dict:
    return {"organisation": agreement.organisation_id, "title": agreement.title, "reference": agreement.reference,
            "datasets": sorted(d.pk for d in agreement.datasets.all()), "status": agreement.status,
            "commercial_use_allowed": agreement.commercial_use_allowed,
            "prohibited_uses": agreement.prohibited_uses,
            "valid_from": agreement.valid_from, "valid_until": agreement.valid_until}


@transaction.atomic
def agreement_create(*, actor, organisation, datasets, title, valid_from, valid_until=None, reference="",
                     permitted_purposes=None, prohibited_uses=(), commercial_use_allowed=False,
                     request=None) -> Agreement:
    """A draft agreement between ``organisation`` and ``datasets`` (validated input)."""
    if valid_until is not None and valid_until < valid_from:
        raise Invalid(fields={"valid_until": ["valid_until must not be before valid_from"]})
    if not datasets:
        raise Invalid(fields={"datasets": ["an agreement covers at least one dataset"]})
    agreement = Agreement.objects.create(
        organisation=organisation, title=title, reference=reference,
        permitted_purposes=permitted_purposes if permitted_purposes is not None else [],
        prohibited_uses=list(dict.fromkeys(prohibited_uses)), commercial_use_allowed=commercial_use_allowed,
        valid_from=valid_from, valid_until=valid_until, created_by=actor)
    agreement.datasets.set(datasets)
    audit_record(actor=actor, action=AuditAction.AGREEMENT_CREATED, target=agreement, data=_agreement_data(agreement),
           request=request)
    return agreement


@transaction.atomic
def agreement_activate(*, agreement, actor, now=None, request=None) -> Agreement:
    agreement = Agreement.objects.select_for_update().get(pk=agreement.pk)
    now = now or timezone.now()
    transitions.check(TRANSITIONS, agreement, "activate", status=agreement.effective_status(timezone.localdate(now)))
    return transitions.apply(TRANSITIONS, agreement, "activate", actor=actor, request=request,
                             fields={"activated_by": actor, "activated_at": now},
                             data={"organisation": agreement.organisation_id})


@transaction.atomic
def agreement_revoke(*, agreement, actor, reason: str = "", now=None, request=None) -> Agreement:
    """``active → revoked`` (a draft may be revoked too, i.e. abandoned). Takes effect at once:
    the access decision only counts active agreements. ``reason`` is required (400 when blank,
    checked after the state: revoking a revoked agreement is 409 whatever the body)."""
    agreement = Agreement.objects.select_for_update().get(pk=agreement.pk)
    previous = agreement.status
    transitions.check(TRANSITIONS, agreement, "revoke")
    reason = (reason or "").strip()
    if not reason:
        raise Invalid(fields={"reason": ["a reason is required"]})
    return transitions.apply(TRANSITIONS, agreement, "revoke", actor=actor, request=request,
                             fields={"revoked_by": actor, "revoked_at": now or timezone.now(), "revoke_reason": reason},
                             data={"organisation": agreement.organisation_id, "previous_status": previous,
                                   "reason": reason})
