"""The hash chain: ``hash = SHA-256(prev_hash + canonical JSON of the event)``.

Canonical JSON is orjson with sorted keys (compact, UTF-8). The timestamp is ISO 8601 in UTC with
microseconds, exactly as PostgreSQL and Python both render it, so the verifier can hash rows
without rebuilding Python objects.
"""

import hashlib
from datetime import UTC

import orjson

GENESIS = "0" * 64


def canonical(value) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def iso_utc(ts) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def hash_body(prev_hash: str, *, seq, timestamp: str, actor, actor_id, action, target_type, target_id, project, data, ip) -> str:
    body = {
        "seq": seq, "timestamp": timestamp, "actor": actor, "actor_id": actor_id, "action": action,
        "target_type": target_type, "target_id": target_id, "project": project, "data": data, "ip": ip,
    }
    return hashlib.sha256(prev_hash.encode() + canonical(body)).hexdigest()


def event_hash(prev_hash: str, *, timestamp, **fields) -> str:
    return hash_body(prev_hash, timestamp=iso_utc(timestamp), **fields)
