"""Person-key sets: the contributors of each group of a query's result, as compact 64-bit keys.

Written by the query runner (``queries``), read by disclosure control and the differencing check
(``outputs``): the format has one home, below both readers.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal

from pyroaring import BitMap64

_HEX16 = re.compile(r"[0-9a-fA-F]{16}")


def person_key(person_id: str) -> int:
    """The 64-bit key of a pseudonymised person: the first 16 hex digits of the HMAC."""
    head = person_id[:16]
    if not _HEX16.fullmatch(head):
        raise ValueError("a person_id must start with 16 hexadecimal digits")
    return int(head, 16)


def group_person_sets(key_count: int, pairs: Iterable[Sequence]) -> dict[tuple, BitMap64]:
    """Group key tuple -> its persons, from rows (key values..., person_id)."""
    members: dict[tuple, list[int]] = {}
    for row in pairs:
        members.setdefault(tuple(row[:key_count]), []).append(person_key(row[key_count]))
    return {key: BitMap64(ids) for key, ids in members.items()}


# Storage of released person sets: MAGIC, header length, JSON header [[key, format, size], …], then
# each set as a portable roaring bitmap or, when smaller (pseudonym keys are uniformly spread, so
# usually), as sorted little-endian uint64s.

_MAGIC = b"tre-sets/1\n"
_TAGS = {"decimal": Decimal, "datetime": datetime.fromisoformat, "date": date.fromisoformat,
         "time": time.fromisoformat, "text": str}


def _encode_value(value):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    for tag, kind in (("datetime", datetime), ("date", date), ("time", time)):   # datetime first:
        if isinstance(value, kind):                                               # it is a date
            return {tag: value.isoformat()}
    return {"text": str(value)}       # any other key type comes back as its text


def _decode_value(value):
    if isinstance(value, dict):
        (tag, text), = value.items()
        return _TAGS[tag](text)
    return value


def _uint64s(bm: BitMap64) -> bytes:
    values = bm.to_array()
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def _from_uint64s(data: bytes) -> BitMap64:
    values = array("Q", data)
    if sys.byteorder != "little":
        values.byteswap()
    return BitMap64(values)


def serialize_sets(sets: dict[tuple, BitMap64]) -> bytes:
    parts = []
    for key, bm in sets.items():
        roaring, flat = bm.serialize(), _uint64s(bm)
        parts.append((key, *(("roaring", roaring) if len(roaring) <= len(flat) else ("uint64", flat))))
    return _pack(parts)


def serialize_uint64_sets(groups: Iterable[tuple[tuple, bytes]]) -> bytes:
    """The same collection from each group's person keys as packed little-endian uint64 bytes
    (distinct values, any order), without building a bitmap: the query runner's fast path."""
    if sys.byteorder != "little":  # the bytes come from an Arrow buffer in native order
        raise NotImplementedError("packed person keys are read as little-endian")
    return _pack([(key, "uint64", blob) for key, blob in groups])


def _pack(parts) -> bytes:
    header = [[[_encode_value(v) for v in key], form, len(blob)] for key, form, blob in parts]
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_MAGIC, struct.pack("<Q", len(head)), head, *(blob for _, _, blob in parts)])


def deserialize_sets(data: bytes) -> dict[tuple, BitMap64]:
    if not data.startswith(_MAGIC):
        raise ValueError("not a serialised person-set collection")
    start = len(_MAGIC) + 8
    (size,) = struct.unpack_from("<Q", data, len(_MAGIC))
    load = {"roaring": BitMap64.deserialize, "uint64": _from_uint64s}
    sets, offset = {}, start + size
    for key, form, length in json.loads(data[start:offset]):
        blob = data[offset:offset + length]
        if len(blob) != length:
            raise ValueError("truncated person-set collection")
        sets[tuple(_decode_value(v) for v in key)] = load[form](blob)
        offset += length
    if offset != len(data):
        raise ValueError("person-set collection has trailing bytes")
    return sets
