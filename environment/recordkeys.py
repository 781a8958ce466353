"""Record keys: each person's two secret keys for the cell key method (DESIGN.md §6).

``d = HMAC-SHA256(TRE_CELLKEY_SECRET, person_id)`` (``person_id`` as its ASCII hex text);
``_rk = d[0]`` (0…255) and ``_rk2`` = the big-endian integer of ``d[1:5]`` (0 … 2³²−1). The same
person has the same keys in every dataset and version; without the secret they cannot be
recomputed. Every store file's ``data`` table carries them as ``_rk`` (SMALLINT) and ``_rk2``
(BIGINT), written at ingestion, copied by erasure, and made up from the fake person ids of the
dummy twins. They are not in the dictionary, so a researcher can never name them (column names
start with a letter).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

RK, RK2 = "_rk", "_rk2"
RK_SQL_TYPES = {RK: "SMALLINT", RK2: "BIGINT"}


def _secret(secret: str | bytes | None = None) -> bytes:
    if secret is None:
        from django.conf import settings

        secret = settings.TRE_CELLKEY_SECRET
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def record_keys(person_id: str, *, secret: str | bytes | None = None) -> tuple[int, int]:
    d = hmac.new(_secret(secret), person_id.encode("ascii"), hashlib.sha256).digest()
    return d[0], int.from_bytes(d[1:5], "big")


def record_keys_many(person_ids: Iterable[str], *, secret: str | bytes | None = None) -> tuple[list[int], list[int]]:
    """``(_rk values, _rk2 values)`` of many person ids, in order (the load's fast path)."""
    key = _secret(secret)
    new, digest = hmac.new, hashlib.sha256
    rk, rk2 = [], []
    for pid in person_ids:
        d = new(key, pid.encode("ascii"), digest).digest()
        rk.append(d[0])
        rk2.append(int.from_bytes(d[1:5], "big"))
    return rk, rk2
