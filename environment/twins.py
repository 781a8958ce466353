"""Dummy twins: synthetic data generated from a dataset's dictionary alone (DESIGN.md §4).

``generate_twin(dictionary, rows=, seed=)`` draws every value from the dictionary's domains,
bounds and ranges — category values uniformly from ``values``, measures uniformly within
``[min, max]``, dates uniformly within ``[min, max]`` at the column's granularity — with about 2%
missing values in each column, so a query meets NULLs on the twin as it will on the data. It reads
no data, so it holds no real value and no real person: its persons are ``dummy0000001`` … (the same
ids in every twin, so joins on ``person_id`` find partners on dummy data too), and their record
keys (``_rk``, ``_rk2``) are computed from those ids like any person's. ``rows_per_person: one``
gives every row its own person; ``many`` gives persons one to five rows.

The twin is written as an ordinary store file (``write_twin_file``): the table ``data`` with the
same columns as a real version, plus a one-row table ``tre_twin`` saying it is dummy, which
dictionary version it was made from, and its seed. ``DummyTwin`` in ``models.py`` records it; a new
dictionary version makes a new twin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path

import pyarrow as pa

from .dictionary import PERSON_ID, ColumnType, Dictionary, Granularity, Role
from .engine import connect, quote_ident
from .recordkeys import RK, RK2, record_keys_many
from .values import DUCKDB_TYPES

MISSING_SHARE = 0.02
DUMMY_PREFIX = "dummy"
_ARROW = {ColumnType.INTEGER: pa.int64(), ColumnType.FLOAT: pa.float64(), ColumnType.TEXT: pa.string(),
          ColumnType.DATE: pa.date32(), ColumnType.BOOLEAN: pa.bool_()}


class IncompleteDictionary(ValueError):
    """A twin needs every domain, bound and range (declared, or derived at the first load)."""


def twin_seed(dictionary: Dictionary) -> int:
    """A stable seed per dataset and dictionary version (the same dictionary, the same twin)."""
    digest = hashlib.sha256(f"{dictionary.dataset}:{dictionary.version}".encode()).digest()
    return int.from_bytes(digest[:7], "big")  # fits a signed 64-bit column


def dummy_person_id(i: int) -> str:
    """The ``i``-th dummy person: never a real ``person_id`` (those are 64 hexadecimal digits)."""
    return f"{DUMMY_PREFIX}{i:07d}"


def _person_indexes(rows: int, one_per_person: bool, rng: random.Random) -> list[int]:
    if one_per_person:
        return list(range(1, rows + 1))
    out, person = [], 0
    while len(out) < rows:
        person += 1
        out.extend([person] * rng.randint(1, 5))
    return out[:rows]


def _draw(column, rng: random.Random, rows: int) -> list:
    def maybe(make):
        return [None if rng.random() < MISSING_SHARE else make() for _ in range(rows)]

    if column.role == Role.CATEGORY:
        values = list(column.values or ())
        if not values:
            return [None] * rows
        return maybe(lambda: rng.choice(values))
    if column.role == Role.MEASURE:
        lo, hi = column.min, column.max
        if column.type == ColumnType.INTEGER:
            return maybe(lambda: rng.randint(int(lo), int(hi)))
        return maybe(lambda: min(hi, max(lo, round(rng.uniform(lo, hi), 2))))
    if column.role == Role.DATE:
        lo, hi = column.min, column.max
        span = (hi - lo).days
        granularity = column.granularity or Granularity.DAY

        def day():
            d = lo + dt.timedelta(days=rng.randint(0, span))
            if granularity == Granularity.MONTH:
                d = max(lo, d.replace(day=1))
            elif granularity == Granularity.YEAR:
                d = max(lo, d.replace(month=1, day=1))
            return d

        return maybe(day)
    raise ValueError(f"column {column.name} (role {column.role}) is not stored")


def generate_twin(dictionary: Dictionary, *, rows: int, seed: int | None = None,
                  cellkey_secret: str | bytes | None = None) -> pa.Table:
    """The twin's rows as an Arrow table: ``person_id``, the stored columns, ``_rk``, ``_rk2``."""
    if not dictionary.complete:
        missing = [c.name for c in dictionary.stored_columns if not c.complete]
        raise IncompleteDictionary(f"the dictionary has no domain yet for {', '.join(missing)} (load a first version)")
    rng = random.Random(twin_seed(dictionary) if seed is None else seed)
    persons = _person_indexes(rows, dictionary.rows_per_person.value == "one", rng)
    distinct = sorted(set(persons))
    ids = [dummy_person_id(i) for i in distinct]
    rk_of, rk2_of = record_keys_many(ids, secret=cellkey_secret)
    index = {p: k for k, p in enumerate(distinct)}
    arrays = {PERSON_ID: pa.array([ids[index[p]] for p in persons], pa.string())}
    for column in dictionary.stored_columns:
        arrays[column.name] = pa.array(_draw(column, rng, rows), _ARROW[column.type])
    arrays[RK] = pa.array([rk_of[index[p]] for p in persons], pa.int16())
    arrays[RK2] = pa.array([rk2_of[index[p]] for p in persons], pa.int64())
    return pa.table(arrays)


def write_twin_file(table: pa.Table, dictionary: Dictionary, path: Path, *, seed: int) -> None:
    """Write the twin as a store file (``data`` + the ``tre_twin`` marker)."""
    schema = ", ".join([f"{PERSON_ID} VARCHAR NOT NULL"]
                       + [f"{quote_ident(c.name)} {DUCKDB_TYPES[c.type]}" for c in dictionary.stored_columns]
                       + [f"{RK} SMALLINT NOT NULL", f"{RK2} BIGINT NOT NULL"])
    con = connect(path, memory_limit="256MB", threads=1)
    try:
        con.execute(f"CREATE TABLE data ({schema})")
        con.register("tre_twin_rows", table)
        con.execute("INSERT INTO data SELECT * FROM tre_twin_rows")
        con.unregister("tre_twin_rows")
        con.execute("CREATE TABLE tre_twin (kind VARCHAR, dataset VARCHAR, dictionary_version INTEGER, seed UBIGINT, rows BIGINT)")
        con.execute("INSERT INTO tre_twin VALUES ('dummy', ?, ?, ?, ?)",
                    [dictionary.dataset, dictionary.version, seed, table.num_rows])
        con.execute("CHECKPOINT")
    finally:
        con.close()
