"""The attack corpus's harness: a synthetic population, its dictionaries, and ``release(sql)``.

Pure (no Django, no I/O beyond an in-memory DuckDB). ``release`` runs a query exactly as the product
does: ``queries.language.validate`` → ``contributions_sql`` (DuckDB) → ``outputs.disclosure.apply_disclosure``
with the default ``DisclosureParams``; it never re-derives keys or noise itself.

The population
--------------
``patients`` (one row per person, 4,000 persons) and ``gp_events`` (many rows per person, 0–8 a
person). Record keys ``_rk`` (0…255) and ``_rk2`` (0…2³²−1) are the first five bytes of
HMAC-SHA256(SECRET, person_id) (``outputs.cellkey.record_keys``, as the store derives them).

The persons are split into ``REPLICAS`` independent sub-populations by the category ``replica``
(0…REPLICAS−1). Each replica holds one **target**: the only person of the replica born in April 1961,
living in the north, female (the attacker's background knowledge, ``TARGET_SQL``). The hidden attribute
is the target's diagnosis: ``diabetes`` in even replicas, ``asthma`` in odd ones (``target_diagnosis``);
a second one is whether the target had a visit in December 2024 (``target_visited``: two replicas in
three; nobody else has an event in that month).
Grouping an attack by ``replica`` runs it against ``REPLICAS`` targets at once — each cell of a replica
has its own contributors, hence its own cell keys — so success rates over many targets cost one query.
Every other person's diagnosis is drawn at random (``diabetes`` with probability ½); ``score`` is a
uniform integer 0…999 that attackers use to build padding sets.

The differencing ledger
-----------------------
DESIGN.md §6 requires a ledger of released cells' contributor sets: a new cell whose contributors
differ from a released cell's (of any project, same population) by 1 … threshold−1 persons, or equal
them while the statistic's measure or filter differs, is a finding for checkers. ``Ledger`` is that
rule over exact contributor sets (``contributors(sql)``); the attacks whose success the noise alone
cannot bound assert that it finds them (the ledger itself is not in the pure cores yet: this is its
specification by example).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp, parse_one

from environment.dictionary import Column, Dictionary, Granularity, Role, RowsPerPerson
from environment.dictionary import ColumnType as T
from outputs.cellkey import record_keys
from outputs.disclosure import DisclosureParams, Grid, apply_disclosure
from outputs.disclosure import Statistic as DStatistic
from queries.language import LanguageError, Plan, contributions_sql, validate

SECRET = b"attack-corpus-test-secret"
MAX_CELLS = 10_000
PARAMS = DisclosureParams()
THRESHOLD = PARAMS.threshold

REPLICAS = 50
PER_REPLICA = 80
DIAGNOSES = ("asthma", "copd", "diabetes", "none")
REGIONS = ("east", "north", "other", "south", "west")
TARGET_MONTH = dt.date(1961, 4, 1)
TARGET_SQL = "(birth_date >= '1961-04-01' AND birth_date < '1961-05-01' AND region = 'north' AND sex = 'F')"
NOT_TARGET_SQL = f"NOT {TARGET_SQL}"

D = dt.date
PATIENTS = Dictionary("patients", (
    Column("nhs_number", T.TEXT, Role.IDENTIFIER),
    Column("replica", T.INTEGER, Role.CATEGORY, values=tuple(range(REPLICAS))),
    Column("region", T.TEXT, Role.CATEGORY, values=REGIONS),
    Column("sex", T.TEXT, Role.CATEGORY, values=("F", "M")),
    Column("diagnosis", T.TEXT, Role.CATEGORY, values=DIAGNOSES),
    Column("birth_date", T.DATE, Role.DATE, min=D(1930, 1, 1), max=D(2009, 12, 31), granularity=Granularity.MONTH),
    Column("weight", T.FLOAT, Role.MEASURE, min=30.0, max=200.0),
    Column("income", T.INTEGER, Role.MEASURE, min=0, max=200_000),
    Column("score", T.INTEGER, Role.MEASURE, min=0, max=999),
    Column("children", T.INTEGER, Role.MEASURE, min=0, max=12),
), rows_per_person=RowsPerPerson.ONE)

GP_EVENTS = Dictionary("gp_events", (
    Column("nhs_number", T.TEXT, Role.IDENTIFIER),
    Column("code", T.TEXT, Role.CATEGORY, values=("C10", "E11", "J45", "other")),
    Column("event_date", T.DATE, Role.DATE, min=D(2015, 1, 1), max=D(2024, 12, 31), granularity=Granularity.MONTH),
    Column("value", T.FLOAT, Role.MEASURE, min=0.0, max=500.0),
    Column("cost", T.INTEGER, Role.MEASURE, min=0, max=10_000),
))

DICTIONARIES = {"patients": PATIENTS, "gp_events": GP_EVENTS}
TABLES = {"patients": "patients", "gp_events": "gp_events"}
# the target's event in December 2024 where target_visited (no other person has an event that month)
TARGET_EVENT_MONTH = D(2024, 12, 1)
TARGET_EVENT_COST = 4_321


def target_diagnosis(replica: int) -> str:
    return "diabetes" if replica % 2 == 0 else "asthma"


def target_visited(replica: int) -> bool:
    """The second hidden attribute: whether the target had a visit in December 2024 (the only event of
    that month in the replica, costing TARGET_EVENT_COST)."""
    return replica % 3 != 0


@dataclass
class Population:
    patients: list[dict]
    events: list[dict]
    keys: dict[str, tuple[int, int]]
    target: dict[int, str] = field(default_factory=dict)  # replica -> the target's person_id

    def person(self, pid: str) -> dict:
        return next(p for p in self.patients if p["person_id"] == pid)


def _pid(n: int) -> str:
    return hashlib.sha256(f"person {n}".encode()).hexdigest()[:16]


def make_population(seed: int = 2026) -> Population:
    rng = random.Random(seed)
    patients, events, keys, target = [], [], {}, {}
    n = 0
    for replica in range(REPLICAS):
        for i in range(PER_REPLICA):
            pid = _pid(n)
            n += 1
            keys[pid] = record_keys(pid, SECRET)
            if i == 0:  # the target
                region, sex, birth = "north", "F", D(1961, 4, rng.randint(1, 28))
                diagnosis = target_diagnosis(replica)
                target[replica] = pid
            else:
                while True:
                    region, sex = rng.choice(REGIONS), rng.choice("FM")
                    birth = D(1930, 1, 1) + dt.timedelta(days=rng.randrange(80 * 365))
                    if not (region == "north" and sex == "F" and birth.replace(day=1) == TARGET_MONTH):
                        break
                diagnosis = "diabetes" if rng.random() < 0.5 else rng.choice(("asthma", "copd", "none"))
            patients.append({
                "person_id": pid, "replica": replica, "region": region, "sex": sex, "diagnosis": diagnosis,
                "birth_date": birth, "weight": round(rng.uniform(45, 130), 1),
                "income": rng.randint(10_000, 90_000), "score": rng.randint(0, 999),
                "children": rng.choice((0, 0, 1, 2, 2, 3, 4))})
            rows = rng.randint(1, 8)
            for _ in range(rows):
                events.append({
                    "person_id": pid, "code": rng.choice(("C10", "E11", "J45", "other")),
                    "event_date": D(2015, 1, 1) + dt.timedelta(days=rng.randrange(365 * 10 - 31)),
                    "value": round(rng.lognormvariate(4, 0.6), 1), "cost": rng.randint(20, 2_000)})
            if i == 0 and target_visited(replica):
                events.append({"person_id": pid, "code": "E11", "event_date": D(2024, 12, 15), "value": 80.0,
                               "cost": TARGET_EVENT_COST})
    return Population(patients, events, keys, target)


def _table(rows: list[dict], dictionary: Dictionary, keys) -> pa.Table:
    names = [c.name for c in dictionary.stored_columns]
    types = {T.TEXT: pa.string(), T.INTEGER: pa.int64(), T.FLOAT: pa.float64(), T.DATE: pa.date32()}
    arrays = {"person_id": pa.array([r["person_id"] for r in rows], pa.string()),
              "_rk": pa.array([keys[r["person_id"]][0] for r in rows], pa.int16()),
              "_rk2": pa.array([keys[r["person_id"]][1] for r in rows], pa.int64())}
    for c in dictionary.stored_columns:
        arrays[c.name] = pa.array([r[c.name] for r in rows], types[c.type])
    return pa.table({k: arrays[k] for k in ["person_id", "_rk", "_rk2", *names]})


@dataclass
class Released:
    """One released grid: ``safe`` and ``raw`` by key tuple (column name → value), ``flags`` by key."""

    plan: Plan
    columns: list[str]
    safe: dict[tuple, dict]
    raw: dict[tuple, dict]
    flags: dict[tuple, dict]
    sdc: dict

    def value(self, key: tuple, column: str):
        return self.safe[key][column]


class Environment:
    """A population loaded into an in-memory DuckDB, and the product's pipeline over it."""

    def __init__(self, population: Population):
        self.population = population
        self.con = duckdb.connect()
        self.con.execute("SET threads = 1")
        patients = _table(population.patients, PATIENTS, population.keys)  # noqa: F841 - read by DuckDB
        events = _table(population.events, GP_EVENTS, population.keys)  # noqa: F841
        self.con.execute("CREATE TABLE patients AS SELECT * FROM patients")
        self.con.execute("CREATE TABLE gp_events AS SELECT * FROM events")
        self._optouts: dict[frozenset, str] = {}

    def optout_table(self, optouts: Iterable[str]) -> str | None:
        optouts = frozenset(optouts)
        if not optouts:
            return None
        if optouts not in self._optouts:
            name = f"optouts_{len(self._optouts)}"
            self.con.execute(f"CREATE TABLE {name} (person_id VARCHAR)")
            self.con.executemany(f"INSERT INTO {name} VALUES (?)", [[p] for p in sorted(optouts)])
            self._optouts[optouts] = name
        return self._optouts[optouts]

    def statement(self, sql: str, optouts: Iterable[str] = ()) -> tuple[Plan, str]:
        plan = validate(sql, DICTIONARIES, max_cells=MAX_CELLS)
        return plan, contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts=self.optout_table(optouts))

    def cells(self, statement: str) -> list[dict]:
        cursor = self.con.execute(statement)
        names = [d[0] for d in cursor.description]
        keys = [n for n in names if n[0] == "k" and n[1:].isdigit()]
        out = []
        for row in cursor.fetchall():
            record = dict(zip(names, row, strict=False))
            record["key"] = tuple(record[k] for k in keys)
            out.append(record)
        return out

    def release(self, sql: str, optouts: Iterable[str] = (), params: DisclosureParams = PARAMS,
                findings: Iterable = ()) -> Released:
        """validate → contributions_sql → apply_disclosure, as the product runs a query."""
        plan, statement = self.statement(sql, optouts)
        grid = Grid(tuple(k.name for k in plan.keys), tuple(k.domain for k in plan.keys),
                    tuple(DStatistic(s.name, s.kind, i if s.measure is not None else None, s.bounds)
                          for i, s in enumerate(plan.statistics)), plan.one_row_per_person)
        out = apply_disclosure(grid, self.cells(statement), params, findings)
        n = len(plan.keys)
        safe = {row[:n]: dict(zip(out.columns, row, strict=False)) for row in out.safe}
        raw = {row[:n]: dict(zip([*out.columns, "contributors"], row, strict=False)) for row in out.raw}
        flags = {row[:n]: f for row, f in zip(out.safe, out.flags, strict=False)}
        return Released(plan, out.columns, safe, raw, flags, out.sdc)

    def contributors(self, sql: str, optouts: Iterable[str] = ()) -> dict[tuple, frozenset]:
        """Each populated cell's exact contributors (person ids): the per-(cell, person) step of the
        product's own statement, read by the harness for the ledger (never shown to a researcher)."""
        plan, statement = self.statement(sql, optouts)
        tree = parse_one(statement, read="duckdb")
        keys = [f"k{i}" for i in range(len(plan.keys))]
        select = exp.select(*(exp.column(k, quoted=True) for k in keys), exp.column("pid", quoted=True)).from_("pp")
        select.set("with_", tree.args["with_"])
        out: dict[tuple, set] = {}
        for row in self.con.execute(select.sql("duckdb")).fetchall():
            out.setdefault(tuple(row[:-1]), set()).add(row[-1])
        return {k: frozenset(v) for k, v in out.items()}


@dataclass
class Ledger:
    """DESIGN.md §6's differencing ledger over exact contributor sets, across projects.

    ``record(project, sql, signature)`` returns the findings of a new output against every cell
    released before (any project): cells whose contributors differ by 1 … threshold−1 persons from a
    released cell's, or equal them while the signature (the statistic's measure and filter) differs."""

    env: Environment
    released: list[tuple[str, str, frozenset, tuple]] = field(default_factory=list)  # project, signature, set, key

    def record(self, project: str, sql: str, signature: str | None = None,
               optouts: Iterable[str] = ()) -> list[dict]:
        signature = signature if signature is not None else _signature(sql)
        found = []
        new = self.env.contributors(sql, optouts)
        for key, persons in new.items():
            for other_project, other_signature, other, other_key in self.released:
                difference = len(persons ^ other)
                if 1 <= difference < THRESHOLD or (difference == 0 and signature != other_signature):
                    found.append({"key": key, "difference": difference, "against": (other_project, other_key),
                                  "project": project})
        for key, persons in new.items():
            self.released.append((project, signature, persons, key))
        return found


def _signature(sql: str) -> str:
    """The statistic's measure and filter: the query's text without its keys, normalised."""
    tree = parse_one(sql, read="postgres")
    where = tree.args.get("where")
    aggregates = [e.sql() for e in tree.expressions if e.find(exp.AggFunc)]
    return f"{'|'.join(aggregates)} WHERE {where.this.sql() if where else ''}"


_ENV: Environment | None = None


def environment() -> Environment:
    """The shared environment (built once per test session: about a second)."""
    global _ENV
    if _ENV is None:
        _ENV = Environment(make_population())
    return _ENV


def close() -> None:
    """Close the shared environment's connection (at the end of the session)."""
    global _ENV
    if _ENV is not None:
        _ENV.con.close()
        _ENV = None


def by_replica(released: Released, column: str, **fixed) -> dict[int, object]:
    """The released value of ``column`` per replica (the first key must be ``replica``; other keys are
    fixed by name)."""
    names = [k.name for k in released.plan.keys]
    out = {}
    for key, row in released.safe.items():
        labels = dict(zip(names, key, strict=False))
        if all(labels[k] == v for k, v in fixed.items()):
            out[labels["replica"]] = row[column]
    return out


def share(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def refused(sql: str, rule: str) -> list[str]:
    """Assert that ``validate`` refuses ``sql`` naming ``rule``; the rules named, for the message."""
    try:
        validate(sql, DICTIONARIES, max_cells=MAX_CELLS)
    except LanguageError as error:
        assert rule in error.rules, f"{sql!r} refused by {error.rules}, expected {rule!r}"
        return error.rules
    raise AssertionError(f"{sql!r} was accepted; expected refusal by {rule!r}")
