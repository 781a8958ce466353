"""A validated query's plan as stored on the ``Query`` (JSON), and the rows the engine answers.

Pure: no Django. ``plan_json(plan)`` keeps what the run and disclosure control need of a
``queries.language.Plan`` — the keys with their domains, the statistics, whether every dataset
has one row per person, the grid size — with every key label as JSON holds it (a date as its ISO
text, so a label compares equal whether it came from the plan or from the engine).
``cells_from_rows`` turns the contributions statement's rows into the cells ``outputs`` reads;
``exact_table`` is the dummy run's answer (exact statistics over the whole grid).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from decimal import Decimal

MEASURE_KINDS = frozenset({"sum", "avg", "stddev", "variance"})


def label(value):
    """A key label or statistic as JSON stores it: dates as ISO text, exact decimals as ints/floats."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_json(plan) -> dict:
    return {
        "datasets": list(plan.datasets),
        "keys": [{"name": k.name, "kind": k.kind, "domain": [label(v) for v in k.domain]} for k in plan.keys],
        "statistics": [{"name": s.name, "kind": s.kind, "measure": i if s.kind in MEASURE_KINDS else None}
                       for i, s in enumerate(plan.statistics)],
        "one_row_per_person": bool(plan.one_row_per_person),
        "grid_size": int(plan.grid_size),
    }


def columns(plan: dict) -> list[str]:
    """The result's column names: the keys, then the statistics."""
    return [k["name"] for k in plan["keys"]] + [s["name"] for s in plan["statistics"]]


def cells_from_rows(names: list[str], rows, n_keys: int) -> list[dict]:
    """Rows of ``contributions_sql`` (columns ``k0…`` then the named parts) as cells:
    ``{"key": [labels], part: value, …}`` with every value as JSON holds it."""
    out = []
    for row in rows:
        cell = {"key": [label(v) for v in row[:n_keys]]}
        for name, value in zip(names[n_keys:], row[n_keys:], strict=False):
            cell[name] = label(value)
        out.append(cell)
    return out


def _variance(n, total, sumsq):
    if not n or n <= 1:
        return None
    return max(0.0, (sumsq - total * total / n) / (n - 1))


def exact_table(plan: dict, cells: list[dict]) -> tuple[list[str], list[list]]:
    """Every grid cell (sorted by key) with its exact statistics: the dummy run's answer (the twin
    holds no real value). An empty cell counts 0 and has no measure statistic."""
    by_key = {tuple(c["key"]): c for c in cells}
    rows = []
    for key in itertools.product(*(k["domain"] for k in plan["keys"])):
        cell = by_key.get(tuple(key))
        row = list(key)
        for stat in plan["statistics"]:
            kind, i = stat["kind"], stat["measure"]
            if kind == "count_persons":
                row.append(cell["n_persons"] if cell else 0)
            elif kind == "count_rows":
                row.append(cell["n_rows"] if cell else 0)
            elif cell is None or not cell.get(f"m{i}_n"):
                row.append(0 if kind == "sum" else None)
            else:
                n, total, sumsq = cell[f"m{i}_n"], cell[f"m{i}_sum"], cell[f"m{i}_sumsq"]
                if kind == "sum":
                    row.append(total)
                elif kind == "avg":
                    row.append(total / n)
                else:
                    variance = _variance(n, total, sumsq)
                    row.append(variance if kind == "variance" or variance is None else math.sqrt(variance))
        rows.append(row)
    return columns(plan), rows
