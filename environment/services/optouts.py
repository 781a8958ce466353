"""Opt-outs: registration, the watermark, and what reads them.

Registration costs O(numbers in the request): the numbers are validated, their keyed hashes stored
and the audit event written in one transaction; on commit a task on the ``ingest`` queue finds the
datasets that hold those persons, announces them (``signals.optouts_registered``: upper apps mark
their outputs stale) and erases them (``erasure.optouts_apply``). From the moment of the commit
every sandbox excludes them.

Opt-out ordering: every registration holds an exclusive advisory lock until it commits; whoever
takes a *watermark* (the highest ``OptOut.id``) takes the same lock shared first. So when a
watermark W is read, every opt-out with an id ≤ W has committed: "all opt-outs ≤ W are absent from
this file" is then exact. It also makes the ids of one registration a range no other registration
interleaves with, which is what its task is handed.
"""

import logging
import zlib

from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid

from ..models import Dataset, DatasetVersion, ErasureRun, OptOut
from ..pseudonym import is_valid_nhs_number, normalise_nhs_number, person_id_for

log = logging.getLogger(__name__)

OPTOUT_SERVICE_GROUP = "opt_out_service"
MAX_OPTOUTS_PER_REQUEST = 100_000
BROKER_ERRORS = (KombuOperationalError, OSError)  # the broker is down: swept / retried by beat later
_OPTOUT_LOCK = zlib.crc32(b"tre.environment.optouts")
_BATCH = 50_000


def _lock_optouts_for_registration() -> None:
    """Held until the registration commits (see the module docstring)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_OPTOUT_LOCK])


def optout_watermark_now() -> int:
    """The highest committed ``OptOut.id`` such that every lower id has committed too.

    Takes the opt-out lock shared for the one read (session level, released at once, so a caller's
    long transaction does not hold registrations up)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock_shared(%s)", [_OPTOUT_LOCK])
            try:
                cursor.execute(f'SELECT coalesce(max(id), 0) FROM "{OptOut._meta.db_table}"')
                return int(cursor.fetchone()[0])
            finally:
                cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [_OPTOUT_LOCK])
    return OptOut.objects.aggregate(m=Max("id"))["m"] or 0


def optout_rows(*, after: int = 0, upto: int):
    """``(id, person_id)`` of the opt-outs with ``after < id ≤ upto``, in id order, streamed."""
    if upto <= after:
        return
    last = after
    while True:
        chunk = list(OptOut.objects.filter(id__gt=last, id__lte=upto).order_by("id").values_list("id", "person_id")[:_BATCH])
        if not chunk:
            return
        yield from chunk
        last = chunk[-1][0]


def optout_person_ids(*, after: int = 0, upto: int):
    """``person_id`` of the opt-outs with ``after < id ≤ upto``, streamed."""
    for _, pid in optout_rows(after=after, upto=upto):
        yield pid


def optouts_register(*, actor, nhs_numbers, request=None, now=None) -> dict:
    """Register opt-outs. All numbers are validated first; one invalid number refuses the whole
    batch (400 naming the positions, never the numbers). Only the keyed hash is stored; the rest
    (which datasets hold them, staleness, erasure) runs in a task after the commit."""
    if not isinstance(nhs_numbers, list) or not nhs_numbers:
        raise Invalid(fields={"nhs_numbers": ["a non-empty list of NHS numbers is required"]})
    if len(nhs_numbers) > MAX_OPTOUTS_PER_REQUEST:
        raise Invalid(fields={"nhs_numbers": [f"at most {MAX_OPTOUTS_PER_REQUEST} numbers per request"]})
    bad = {str(i): ["not a valid NHS number (10 digits with a modulus-11 check digit)"]
           for i, n in enumerate(nhs_numbers) if not is_valid_nhs_number(n)}
    if bad:
        raise Invalid(fields={"nhs_numbers": bad})
    person_ids = list(dict.fromkeys(person_id_for(normalise_nhs_number(n)) for n in nhs_numbers))
    now = now or timezone.now()
    with transaction.atomic():
        _lock_optouts_for_registration()
        existing: set[str] = set()
        for start in range(0, len(person_ids), _BATCH):
            chunk = person_ids[start:start + _BATCH]
            existing.update(OptOut.objects.filter(person_id__in=chunk).values_list("person_id", flat=True))
        new = [p for p in person_ids if p not in existing]
        created = OptOut.objects.bulk_create([OptOut(person_id=p, registered_at=now, registered_by=actor) for p in new],
                                             batch_size=5_000)
        counts = {"registered": len(new), "already_registered": len(person_ids) - len(new)}
        audit_record(actor=actor, action=AuditAction.OPTOUT_REGISTERED, request=request,
                     data={**counts, "received": len(nhs_numbers)})
        if created:
            ids = [o.pk for o in created]
            first_id, last_id = min(ids), max(ids)
            transaction.on_commit(lambda: enqueue_optouts_apply(first_id, last_id))
    return counts


def enqueue_optouts_apply(first_id: int, last_id: int) -> bool:
    """Hand a registration's follow-up to the ``ingest`` queue. If the broker is down it runs here
    and now instead (as registration did before it had a task): the staleness it announces must
    not wait for a sweeper that cannot know which batch it missed."""
    from ..tasks import apply_optouts  # noqa: PLC0415 — tasks import services: the one allowed services ↔ tasks pair

    try:
        apply_optouts.apply_async(args=[first_id, last_id], queue="ingest", retry=False)
        return True
    except BROKER_ERRORS as exc:
        log.warning("opt-outs %s..%s applied in the request: the broker did not take them (%s)",
                    first_id, last_id, type(exc).__name__)
        apply_optouts.apply(args=[first_id, last_id])
        return False


def optout_status() -> dict:
    """``registered``: opt-outs held; ``pending_erasure``: of those, how many some loaded
    dataset's current file may still hold (newer than its watermark); ``last_erasure_at``."""
    lowest = (Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY)
              .aggregate(m=Min("current_version__optout_watermark"))["m"])
    pending = OptOut.objects.filter(id__gt=lowest).count() if lowest is not None else 0
    last = ErasureRun.objects.order_by("-finished_at").values_list("finished_at", flat=True).first()
    return {"registered": OptOut.objects.count(), "pending_erasure": pending, "last_erasure_at": last}
