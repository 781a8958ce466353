"""Shared fixtures of the version-2 language tests: dictionaries, data, DuckDB loading, and a plain-Python
reference computation of the contributions (independent of queries/language.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from environment.dictionary import Column, Dictionary, Granularity, Role, RowsPerPerson
from environment.dictionary import ColumnType as T

D = dt.date

PATIENTS = Dictionary("patients", (
    Column("nhs_number", T.TEXT, Role.IDENTIFIER),
    Column("region", T.TEXT, Role.CATEGORY, values=("north", "south", "east", "west", "other")),
    Column("sex", T.TEXT, Role.CATEGORY, values=("F", "M")),
    Column("smoker", T.BOOLEAN, Role.CATEGORY, values=(False, True)),
    Column("stage", T.INTEGER, Role.CATEGORY, values=(1, 2, 3)),
    Column("birth_date", T.DATE, Role.DATE, min=D(1930, 1, 1), max=D(2010, 12, 31), granularity=Granularity.MONTH),
    Column("weight", T.FLOAT, Role.MEASURE, min=30.0, max=200.0),
    Column("children", T.INTEGER, Role.MEASURE, min=0, max=12),
    Column("income", T.INTEGER, Role.MEASURE, min=0, max=5_000_000),
    Column("notes", T.TEXT, Role.DROP),
), rows_per_person=RowsPerPerson.ONE)

EVENTS = Dictionary("events", (
    Column("nhs_number", T.TEXT, Role.IDENTIFIER),
    Column("code", T.TEXT, Role.CATEGORY, values=("C10", "C11", "E11", "other")),
    Column("event_date", T.DATE, Role.DATE, min=D(2015, 1, 1), max=D(2024, 12, 31), granularity=Granularity.DAY),
    Column("visit_date", T.DATE, Role.DATE, min=D(2015, 1, 1), max=D(2024, 12, 31), granularity=Granularity.DAY),
    Column("value", T.FLOAT, Role.MEASURE, min=0.0, max=500.0),
    Column("cost", T.INTEGER, Role.MEASURE, min=0, max=100_000),
))

LABS = Dictionary("labs", (
    Column("nhs_number", T.TEXT, Role.IDENTIFIER),
    Column("test", T.TEXT, Role.CATEGORY, values=("hba1c", "ldl")),
    Column("result", T.FLOAT, Role.MEASURE, min=0.0, max=50.0),
    Column("lab_year", T.DATE, Role.DATE, min=D(2000, 1, 1), max=D(2024, 12, 31), granularity=Granularity.YEAR),
))

DICTIONARIES = {"patients": PATIENTS, "events": EVENTS, "labs": LABS}
TABLES = {name: name for name in DICTIONARIES}
SQL_TYPES = {T.TEXT: "VARCHAR", T.INTEGER: "BIGINT", T.FLOAT: "DOUBLE", T.DATE: "DATE", T.BOOLEAN: "BOOLEAN"}


# --- data ----------------------------------------------------------------------------------------

EDGE = {  # values at and beyond the edges of each domain (out-of-bound values are clamped / nulled)
    "weight": [30.0, 200.0, 29.9, 250.0, -1e15, 1e15, 71.5, None],
    "children": [0, 12, -5, 40, 2**62, -(2**62), 3, None],
    "income": [0, 5_000_000, 2**62, -(2**62), 123_456, None],
    "value": [0.0, 500.0, -3.0, 1e12, 99.5, None],
    "cost": [0, 100_000, 2**62, -(2**62), 51, 999, None],
    "result": [0.0, 50.0, 77.0, None],
    "birth_date": [D(1930, 1, 1), D(2010, 12, 31), D(1900, 5, 5), D(2030, 1, 1), D(1990, 1, 1), None],
    "event_date": [D(2015, 1, 1), D(2024, 12, 31), D(2014, 12, 31), D(2025, 1, 1), D(2020, 1, 1), None],
    "visit_date": [D(2015, 1, 1), D(2024, 12, 31), D(2010, 1, 1), None],
    "lab_year": [D(2000, 1, 1), D(2024, 12, 31), D(1999, 12, 31), None],
}


def random_value(rng: random.Random, column: Column, edge: float = 0.3):
    if rng.random() < 0.08:
        return None
    if column.name in EDGE and rng.random() < edge:
        return rng.choice(EDGE[column.name])
    if column.role == Role.CATEGORY:
        return rng.choice(column.values)
    if column.role == Role.DATE:
        span = (column.max - column.min).days
        return column.min + dt.timedelta(days=rng.randint(0, span))
    if column.type == T.INTEGER:
        return rng.randint(int(column.min), int(column.max))
    return round(rng.uniform(column.min, column.max), 2)


@dataclass
class Data:
    persons: dict  # person_id -> (rk, rk2)
    rows: dict  # dataset -> list of dict rows (raw, with person_id)


def make_data(seed: int = 1, persons: int = 80, edge: float = 0.3) -> Data:
    rng = random.Random(seed)
    ids = {f"p{n:04d}": (rng.randint(0, 255), rng.randint(0, 2**32 - 1)) for n in range(persons)}
    rows = {name: [] for name in DICTIONARIES}
    for pid in ids:
        if rng.random() < 0.9:
            rows["patients"].append(_row(rng, PATIENTS, pid, edge))
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
            rows["events"].append(_row(rng, EVENTS, pid, edge))
        for _ in range(rng.choice([0, 1, 2])):
            rows["labs"].append(_row(rng, LABS, pid, edge))
    return Data(ids, rows)


def _row(rng, dictionary, pid, edge):
    row = {"person_id": pid}
    for c in dictionary.stored_columns:
        row[c.name] = random_value(rng, c, edge)
    return row


def load(data: Data, con: duckdb.DuckDBPyConnection | None = None, optouts=()) -> duckdb.DuckDBPyConnection:
    con = con or duckdb.connect()
    for name, dictionary in DICTIONARIES.items():
        cols = ["person_id VARCHAR", "_rk SMALLINT", "_rk2 BIGINT"] + [
            f'"{c.name}" {SQL_TYPES[c.type]}' for c in dictionary.stored_columns]
        con.execute(f'CREATE OR REPLACE TABLE "{name}" ({", ".join(cols)})')
        names = [c.name for c in dictionary.stored_columns]
        values = [[r["person_id"], *data.persons[r["person_id"]]] + [r[n] for n in names] for r in data.rows[name]]
        if values:
            marks = ", ".join("?" for _ in range(3 + len(names)))
            con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', values)
    con.execute("CREATE OR REPLACE TABLE optouts (person_id VARCHAR)")
    if optouts:
        con.executemany("INSERT INTO optouts VALUES (?)", [[p] for p in optouts])
    return con


def run(con, sql: str) -> dict:
    """Rows of a contributions statement keyed by the key labels."""
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    out = {}
    for row in cursor.fetchall():
        record = dict(zip(names, row, strict=False))
        keys = tuple(record[n] for n in names if n.startswith("k") and n[1:].isdigit())
        assert keys not in out
        out[keys] = record
    return out


# --- the reference computation -----------------------------------------------------------------


def clean(dictionary: Dictionary, row: dict | None, alias: str) -> dict:
    """A row as the language reads it: measures clamped, dates outside their range None."""
    out = {}
    for c in dictionary.stored_columns:
        v = None if row is None else row[c.name]
        if v is not None and c.role == Role.MEASURE:
            v = min(max(v, c.min), c.max)
        if v is not None and c.role == Role.DATE and not (c.min <= v <= c.max):
            v = None
        out[f"{alias}.{c.name}"] = v
    out[f"#text.{alias}"] = [_text(None if row is None else row[c.name]) for c in dictionary.stored_columns]
    return out


def _text(value) -> str:
    """A stored value as the engine casts it to text (for the row key)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def row_key(rk2: int, row: dict, aliases: list[str]) -> int:
    """The row's magnitude key, as ``queries.language._row_key_sql`` computes it."""
    text = "|".join(part for alias in aliases for part in row[f"#text.{alias}"])
    return (rk2 + int(hashlib.md5(text.encode()).hexdigest()[:8], 16)) % 2**32


def joined_rows(data: Data, sources: list[tuple[str, str, str]], optouts=()) -> list[tuple[str, dict]]:
    """(person_id, row) of FROM sources[0] [LEFT] JOIN … on person_id; sources are (dataset, alias, join)."""
    first_ds, first_alias, _ = sources[0]
    result = [(r["person_id"], clean(DICTIONARIES[first_ds], r, first_alias)) for r in data.rows[first_ds]
              if r["person_id"] not in optouts]
    for dataset, alias, join in sources[1:]:
        by_person = defaultdict(list)
        for r in data.rows[dataset]:
            by_person[r["person_id"]].append(r)
        nxt = []
        for pid, row in result:
            matches = by_person.get(pid, [])
            if not matches and join == "left":
                nxt.append((pid, {**row, **clean(DICTIONARIES[dataset], None, alias)}))
            for m in matches:
                nxt.append((pid, {**row, **clean(DICTIONARIES[dataset], m, alias)}))
        result = nxt
    return result


def reference(data: Data, sources, keys: list[Callable], measures: list[Callable | None],
              where: Callable | None, optouts=()) -> dict:
    """The expected contributions: per (cell, person) then per cell, in plain Python."""
    per = defaultdict(lambda: {"r": 0, "k2": 0, "m": defaultdict(lambda: [0, None, None, 0])})
    aliases = [alias for _, alias, _ in sources]
    for pid, row in joined_rows(data, sources, optouts):
        if where is not None and where(row) is not True:
            continue
        labels = tuple(k(row) for k in keys)
        if any(label is None for label in labels):
            continue
        entry = per[(labels, pid)]
        entry["r"] += 1
        k2 = row_key(data.persons[pid][1], row, aliases)
        entry["k2"] += k2
        for i, m in enumerate(measures):
            if m is None:
                continue
            v = m(row)
            if v is None:
                continue
            acc = entry["m"][i]
            acc[0] += 1
            acc[3] += k2
            acc[1] = v if acc[1] is None else acc[1] + v
            acc[2] = v * v if acc[2] is None else acc[2] + v * v
    cells = defaultdict(list)
    for (labels, pid), entry in per.items():
        cells[labels].append((pid, entry))
    out = {}
    for labels, people in cells.items():
        rec = {"n_persons": len(people), "ckey": sum(data.persons[p][0] for p, _ in people) % 256,
               "ckey2": sum(e["k2"] for _, e in people) % 2**32,
               "n_rows": sum(e["r"] for _, e in people), "rows_max": max(e["r"] for _, e in people)}
        for i, m in enumerate(measures):
            if m is None:
                continue
            accs = [e["m"][i] for _, e in people if i in e["m"]]
            sums = sorted((abs(a[1]) for a in accs if a[1] is not None), reverse=True)
            rec[f"m{i}_n"] = sum(a[0] for a in accs)
            measured = [p for p, e in people if i in e["m"] and e["m"][i][0] > 0]
            rec[f"m{i}_persons"] = len(measured)
            rec[f"m{i}_ckey"] = sum(data.persons[p][0] for p in measured) % 256
            rec[f"m{i}_ckey2"] = sum(e["m"][i][3] for p, e in people if i in e["m"] and e["m"][i][0] > 0) % 2**32
            rec[f"m{i}_sum"] = sum(a[1] for a in accs if a[1] is not None)
            rec[f"m{i}_sumsq"] = sum(a[2] for a in accs if a[2] is not None)
            rec[f"m{i}_top1"] = sums[0] if sums else 0
            rec[f"m{i}_top2"] = sums[1] if len(sums) > 1 else 0
            rec[f"m{i}_sqtop1"] = max((a[2] for a in accs if a[2] is not None), default=0)
        out[labels] = rec
    return out


def assert_same(actual: dict, expected: dict):
    assert set(actual) == set(expected), (sorted(map(str, set(actual) ^ set(expected)))[:10])
    for labels, rec in expected.items():
        got = actual[labels]
        for name, value in rec.items():
            assert math.isclose(float(got[name]), float(value), rel_tol=1e-9, abs_tol=1e-6), (labels, name, got[name],
                                                                                            value)


# --- three-valued logic helpers for the reference predicates ------------------------------------


def cmp(a, op, b):
    if a is None or b is None:
        return None
    return {"=": a == b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def and3(*xs):
    if any(x is False for x in xs):
        return False
    return None if any(x is None for x in xs) else True


def or3(*xs):
    if any(x is True for x in xs):
        return True
    return None if any(x is None for x in xs) else False


def not3(x):
    return None if x is None else not x


def isin(a, values):
    return None if a is None else a in values


def months(d):
    return d.year * 12 + d.month


def trunc(unit, d):
    if d is None:
        return None
    if unit == "year":
        return D(d.year, 1, 1)
    if unit == "quarter":
        return D(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    if unit == "month":
        return D(d.year, d.month, 1)
    if unit == "week":
        return d - dt.timedelta(days=d.weekday())
    return d


def sub(a, b):
    return None if a is None or b is None else a - b


# --- building blocks of valid queries: (SQL, reference function of a clean row, aliases used) ----

def _band_weight(r):
    w = r["p.weight"]
    if w is not None and w < 60:
        return "light"
    if w is not None and w < 90:
        return "mid"
    return "heavy"


KEYS = {
    "region": ("p.region", lambda r: r["p.region"], {"p"}),
    "sex": ("p.sex", lambda r: r["p.sex"], {"p"}),
    "smoker": ("p.smoker", lambda r: r["p.smoker"], {"p"}),
    "stage": ("p.stage", lambda r: r["p.stage"], {"p"}),
    "birth_year": ("date_trunc('year', p.birth_date)", lambda r: trunc("year", r["p.birth_date"]), {"p"}),
    "birth_month": ("date_trunc('month', p.birth_date)", lambda r: trunc("month", r["p.birth_date"]), {"p"}),
    "birth_x_year": ("extract(year FROM p.birth_date)",
                     lambda r: None if r["p.birth_date"] is None else r["p.birth_date"].year, {"p"}),
    "birth_x_month": ("EXTRACT(MONTH FROM p.birth_date)",
                      lambda r: None if r["p.birth_date"] is None else r["p.birth_date"].month, {"p"}),
    "children": ("p.children", lambda r: r["p.children"], {"p"}),
    "weight_band": ("CASE WHEN p.weight < 60 THEN 'light' WHEN p.weight < 90 THEN 'mid' ELSE 'heavy' END",
                    _band_weight, {"p"}),
    "code": ("e.code", lambda r: r["e.code"], {"e"}),
    "event_quarter": ("date_trunc('quarter', e.event_date)", lambda r: trunc("quarter", r["e.event_date"]), {"e"}),
    "event_week": ("date_trunc('week', e.event_date)", lambda r: trunc("week", r["e.event_date"]), {"e"}),
    "event_x_day": ("extract(day FROM e.event_date)",
                    lambda r: None if r["e.event_date"] is None else r["e.event_date"].day, {"e"}),
    "cardio": ("CASE WHEN e.code IN ('C10', 'C11') THEN 'cardio' END",
               lambda r: "cardio" if r["e.code"] in ("C10", "C11") else None, {"e"}),
    "costly": ("CASE WHEN e.value >= 100 AND e.cost > 50 THEN 'high' ELSE 'low' END",
               lambda r: "high" if and3(cmp(r["e.value"], ">=", 100), cmp(r["e.cost"], ">", 50)) else "low", {"e"}),
    "test": ("l.test", lambda r: r["l.test"], {"l"}),
    "lab_year": ("extract(year FROM l.lab_year)",
                 lambda r: None if r["l.lab_year"] is None else r["l.lab_year"].year, {"l"}),
}


def _ddays(r):
    a, b = r["e.event_date"], r["e.visit_date"]
    return None if a is None or b is None else (b - a).days


def _dmonths(r):
    a, b = r["p.birth_date"], r["e.event_date"]
    return None if a is None or b is None else months(b) - months(a)


def _times(a, k):
    return None if a is None else a * k


AGGREGATES = {  # name -> (SQL, statistic kind, measure function or None)
    "rows": ("count(*)", "count_rows", None, set()),
    "persons": ("count(DISTINCT person_id)", "count_persons", None, set()),
    "sum_weight": ("sum(p.weight)", "sum", lambda r: r["p.weight"], {"p"}),
    "avg_weight": ("avg(p.weight)", "avg", lambda r: r["p.weight"], {"p"}),
    "sum_children": ("sum(p.children - p.income)", "sum", lambda r: sub(r["p.children"], r["p.income"]), {"p"}),
    "var_income2": ("variance(p.income * p.income)", "variance",
                    lambda r: None if r["p.income"] is None else float(r["p.income"]) ** 2, {"p"}),
    "sd_value": ("stddev(e.value)", "stddev", lambda r: r["e.value"], {"e"}),
    "var_cost": ("variance(e.cost)", "variance", lambda r: r["e.cost"], {"e"}),
    "sum_cost2": ("sum(e.cost * 2)", "sum", lambda r: _times(r["e.cost"], 2), {"e"}),
    "sum_value4": ("sum(e.value / 4)", "sum", lambda r: None if r["e.value"] is None else r["e.value"] / 4, {"e"}),
    "neg_cost": ("sum(-e.cost * 10)", "sum", lambda r: None if r["e.cost"] is None else -r["e.cost"] * 10, {"e"}),
    "days": ("avg(date_diff('day', e.event_date, e.visit_date))", "avg", _ddays, {"e"}),
    "months": ("sum(date_diff('month', p.birth_date, e.event_date))", "sum", _dmonths, {"p", "e"}),
    "years": ("sum(date_diff('year', p.birth_date, e.visit_date))", "sum",
              lambda r: None if r["p.birth_date"] is None or r["e.visit_date"] is None
              else r["e.visit_date"].year - r["p.birth_date"].year, {"p", "e"}),
    "sum_result": ("sum(l.result)", "sum", lambda r: r["l.result"], {"l"}),
    "mixed": ("avg((p.weight + e.value) * 0.5)", "avg",
              lambda r: None if r["p.weight"] is None or r["e.value"] is None else (r["p.weight"] + r["e.value"]) * 0.5,
              {"p", "e"}),
}

WHERES = {
    "north": ("p.region = 'north'", lambda r: cmp(r["p.region"], "=", "north"), {"p"}),
    "north_south": ("p.region IN ('north', 'south')", lambda r: isin(r["p.region"], ("north", "south")), {"p"}),
    "not_f": ("p.sex <> 'F'", lambda r: cmp(r["p.sex"], "<>", "F"), {"p"}),
    "heavy": ("p.weight > 100", lambda r: cmp(r["p.weight"], ">", 100), {"p"}),
    "weight_between": ("p.weight BETWEEN 50 AND 80",
                       lambda r: and3(cmp(r["p.weight"], ">=", 50), cmp(r["p.weight"], "<=", 80)), {"p"}),
    "recent": ("e.event_date >= '2020-01-01'", lambda r: cmp(r["e.event_date"], ">=", D(2020, 1, 1)), {"e"}),
    "early": ("e.event_date < DATE '2016-06-15'", lambda r: cmp(r["e.event_date"], "<", D(2016, 6, 15)), {"e"}),
    "born": ("p.birth_date >= '1990-01-01'", lambda r: cmp(r["p.birth_date"], ">=", D(1990, 1, 1)), {"p"}),
    "code_c": ("e.code LIKE 'C%'", lambda r: None if r["e.code"] is None else r["e.code"].startswith("C"), {"e"}),
    "value_null": ("e.value IS NULL", lambda r: r["e.value"] is None, {"e"}),
    "weight_known": ("p.weight IS NOT NULL", lambda r: r["p.weight"] is not None, {"p"}),
    "non_smoker": ("NOT p.smoker", lambda r: not3(r["p.smoker"]), {"p"}),
    "smoker": ("p.smoker", lambda r: r["p.smoker"], {"p"}),
    "logic": ("(p.sex = 'M' OR p.children >= 2) AND NOT (p.region = 'east')",
              lambda r: and3(or3(cmp(r["p.sex"], "=", "M"), cmp(r["p.children"], ">=", 2)),
                             not3(cmp(r["p.region"], "=", "east"))), {"p"}),
    "cost_expr": ("e.cost * 2 > 1000", lambda r: cmp(_times(r["e.cost"], 2), ">", 1000), {"e"}),
    "year_2020": ("extract(year FROM e.event_date) = 2020",
                  lambda r: None if r["e.event_date"] is None else r["e.event_date"].year == 2020, {"e"}),
    "month_1990": ("date_trunc('month', p.birth_date) = '1990-01-01'",
                   lambda r: cmp(trunc("month", r["p.birth_date"]), "=", D(1990, 1, 1)), {"p"}),
    "stage13": ("p.stage IN (1, 3)", lambda r: isin(r["p.stage"], (1, 3)), {"p"}),
    "lab_recent": ("l.lab_year >= '2010-01-01'", lambda r: cmp(r["l.lab_year"], ">=", D(2010, 1, 1)), {"l"}),
    "not_in": ("NOT e.code IN ('E11')", lambda r: not3(isin(r["e.code"], ("E11",))), {"e"}),
    "neg_lit": ("p.children > -1", lambda r: cmp(r["p.children"], ">", -1), {"p"}),
}

FROMS = {  # aliases available -> (FROM clause, sources for the reference)
    "p": ("patients p", [("patients", "p", "from")]),
    "e": ("events AS e", [("events", "e", "from")]),
    "pe": ("patients p JOIN events e ON p.person_id = e.person_id",
           [("patients", "p", "from"), ("events", "e", "inner")]),
    "pe_left": ("patients AS p LEFT JOIN events AS e USING (person_id)",
                [("patients", "p", "from"), ("events", "e", "left")]),
    "pel": ("patients p LEFT JOIN events e ON p.person_id = e.person_id JOIN labs l ON l.person_id = p.person_id",
            [("patients", "p", "from"), ("events", "e", "left"), ("labs", "l", "inner")]),
}


def build(from_: str, keys: list[str], aggregates: list[str], where: list[str] | None = None, positions=False):
    """(sql, reference arguments) of a query assembled from the building blocks."""
    clause, sources = FROMS[from_]
    select = [KEYS[k][0] + f" AS {k}" for k in keys] + [AGGREGATES[a][0] for a in aggregates]
    sql = f"SELECT {', '.join(select)} FROM {clause}"
    preds = [WHERES[w] for w in where or []]
    if preds:
        sql += " WHERE " + " AND ".join(f"({p[0]})" for p in preds)
    if keys:
        group = [str(i + 1) for i in range(len(keys))] if positions else [KEYS[k][0] for k in keys]
        sql += " GROUP BY " + ", ".join(group)
    where_fn = (lambda r: and3(*(p[1](r) for p in preds))) if preds else None
    return sql, dict(sources=sources, keys=[KEYS[k][1] for k in keys],
                     measures=[AGGREGATES[a][2] for a in aggregates], where=where_fn)


def usable(from_: str) -> tuple[list[str], list[str], list[str]]:
    """The building blocks whose aliases the FROM clause provides."""
    have = {a for _, a, _ in FROMS[from_][1]}
    return ([k for k, v in KEYS.items() if v[2] <= have], [a for a, v in AGGREGATES.items() if v[3] <= have],
            [w for w, v in WHERES.items() if v[2] <= have])
