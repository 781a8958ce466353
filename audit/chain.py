"""The hash chain: ``hash = SHA-256(prev_hash + canonical JSON of the event)``."""

import hashlib
import json
from datetime import UTC

GENESIS = "0" * 64

FIELDS = ("seq", "timestamp", "actor", "actor_id", "action", "target_type", "target_id", "project", "data", "ip")


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_hash(prev_hash: str, *, seq, timestamp, actor, actor_id, action, target_type, target_id, project, data, ip) -> str:
    body = {
        "seq": seq,
        "timestamp": timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "actor_id": actor_id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "project": project,
        "data": data,
        "ip": ip,
    }
    return hashlib.sha256((prev_hash + canonical(body)).encode()).hexdigest()
