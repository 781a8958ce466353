"""Recompute the chain and name the first bad ``seq``."""

from dataclasses import asdict, dataclass

from .chain import GENESIS, event_hash
from .models import AuditEvent


@dataclass
class Verification:
    valid: bool
    events_checked: int
    first_invalid_seq: int | None
    reason: str | None = None

    def as_dict(self):
        return asdict(self)


_COLUMNS = ("seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data", "ip", "prev_hash", "hash")


def verify_chain(chunk_size: int = 20_000) -> Verification:
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    rows = AuditEvent.objects.order_by("seq").values_list(*_COLUMNS).iterator(chunk_size=chunk_size)
    for seq, ts, actor, actor_id, action, ttype, tid, project, data, ip, prev_hash, stored in rows:
        checked += 1
        if seq != expected_seq:
            return Verification(False, checked, seq, f"sequence gap: expected {expected_seq}, found {seq}")
        if prev_hash != expected_prev:
            return Verification(False, checked, seq, "prev_hash does not match the previous event's hash")
        computed = event_hash(prev_hash, seq=seq, timestamp=ts, actor=actor, actor_id=actor_id, action=action,
                              target_type=ttype, target_id=tid, project=project, data=data, ip=ip)
        if computed != stored:
            return Verification(False, checked, seq, "hash does not match the event's content")
        expected_prev, expected_seq = stored, seq + 1
    return Verification(True, checked, None)
