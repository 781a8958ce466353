"""Statistical disclosure control of query results (DESIGN.md §6, docs/sdc.md).

Pure Python, no Django: `apply_sdc` turns a raw grouped result into a checker view (raw table,
safe table, per-cell flags) and a status; `find_differencing` compares the person sets of a new
result's groups with those of groups the project has already released.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter

from pyroaring import BitMap64

RULES = ("threshold", "nk_dominance", "p_percent", "secondary", "differencing")
KINDS = frozenset({"key", "count", "sum", "avg", "stat"})
N_PERSONS = "n_persons"

# How SdcParams.stricter merges each field: the stricter of the two values wins.
_STRICTER = {"threshold": max, "rounding_base": max, "nk_n": max, "nk_k": min,
             "p_percent": max, "zeros_disclosive": max}


@dataclass(frozen=True)
class SdcParams:
    threshold: int = 10          # n_persons < threshold -> suppress every statistic of the group
    rounding_base: int = 5       # counts rounded to the nearest multiple (half up)
    nk_n: int = 2                # (n, k) dominance over the top n persons; n is 1 or 2
    nk_k: float = 0.9
    p_percent: float = 0.1
    zeros_disclosive: bool = False   # True: an all-zero sum/avg fails p% (ACRO's default)

    def __post_init__(self):
        if self.threshold < 1 or self.rounding_base < 1:
            raise ValueError("threshold and rounding_base must be at least 1")
        if self.nk_n not in (1, 2):
            raise ValueError("nk_n must be 1 or 2: the rewriter provides the top two persons only")
        if not 0 < self.nk_k <= 1 or self.p_percent < 0:
            raise ValueError("nk_k must be in (0, 1] and p_percent at least 0")

    def stricter(self, **overrides) -> SdcParams:
        """These rules, made stricter (never looser) by `overrides`; None values are ignored."""
        unknown = overrides.keys() - _STRICTER.keys()
        if unknown:
            raise TypeError(f"unknown SDC parameters: {', '.join(sorted(unknown))}")
        return replace(self, **{name: _STRICTER[name](getattr(self, name), value)
                                for name, value in overrides.items() if value is not None})


@dataclass
class SdcResult:
    columns: list[str]                   # user columns + "n_persons"
    raw: list[list]                      # checker view: raw values
    safe: list[list]                     # suppressed cells None, counts rounded, n_persons raw
    flags: list[dict[str, list[str]]]    # per row: column -> rules that fired on the cell
    status: str                          # "pass" | "suppressed" | "review"
    summary: dict[str, int]              # rule -> number of cells it fired on

    def released_table(self) -> tuple[list[str], list[list]]:
        """The safe table without n_persons (always the last column): what leaves."""
        return self.columns[:-1], [row[:-1] for row in self.safe]


def apply_sdc(columns, result_columns: Sequence[str], rows: Sequence[Sequence],
              params: SdcParams = SdcParams(), differencing: Sequence[dict] = ()) -> SdcResult:
    """Apply the rules of DESIGN.md §6 to a grouped result.

    `columns` describe the user's output columns (objects with name, kind, top1, top2, total);
    `result_columns`/`rows` are the raw result: the user columns, n_persons and the helper
    columns named by top1/top2/total. `differencing` findings carry a "row" index or a "group"
    key tuple (as returned by `find_differencing`).
    """
    names = [column.name for column in columns]
    kinds = [column.kind for column in columns]
    if N_PERSONS in names:
        raise ValueError("n_persons is a reserved column name")
    if not set(kinds) <= KINDS:
        raise ValueError(f"unknown column kinds: {sorted(set(kinds) - KINDS)}")
    at = {name: i for i, name in enumerate(result_columns)}
    helpers = [h for c in columns if c.kind in ("sum", "avg") for h in (c.top1, c.top2, c.total)]
    if missing := [name for name in [*names, N_PERSONS, *helpers] if name not in at]:
        raise ValueError(f"the result lacks columns {missing}")
    n = len(names)                                   # position of n_persons in output rows
    pick = itemgetter(*[at[name] for name in names], at[N_PERSONS], at[N_PERSONS])
    raw = [list(pick(row)[:-1]) for row in rows]     # n_persons twice: pick always yields a tuple
    keys = [i for i, kind in enumerate(kinds) if kind == "key"]
    stats = [i for i, kind in enumerate(kinds) if kind != "key"]
    dominance = [(i, at[c.top1], at[c.top2], at[c.total])
                 for i, c in enumerate(columns) if c.kind in ("sum", "avg")]

    flags: list[dict[str, list[str]]] = [{} for _ in raw]
    suppressed = {i: bytearray(len(raw)) for i in stats}     # column -> 1 per suppressed row
    threshold = params.threshold
    for r, (out, src) in enumerate(zip(raw, rows, strict=False)):
        if out[n] < threshold:
            for i in stats:
                suppressed[i][r] = 1
                flags[r][names[i]] = ["threshold"]
            continue
        for i, top1, top2, total in dominance:
            if fired := _dominance(src[top1], src[top2], src[total], params):
                suppressed[i][r] = 1
                flags[r][names[i]] = fired
    slices = None
    for i in stats:
        if keys and 1 in suppressed[i]:
            slices = slices or _slices(raw, keys, n)
            for r in _secondary(slices, raw, i, suppressed[i]):
                flags[r][names[i]] = ["secondary"]

    safe = [row.copy() for row in raw]
    base = params.rounding_base
    for i, kind in enumerate(kinds):
        if kind == "count":
            for row in safe:
                if row[i] is not None:
                    row[i] = (2 * int(row[i]) + base) // (2 * base) * base
    for i, column in suppressed.items():
        r = column.find(1)
        while r != -1:
            safe[r][i] = None
            r = column.find(1, r + 1)

    review = _finding_rows(differencing, raw, keys)
    for r in review:
        for i in stats:
            flags[r].setdefault(names[i], []).append("differencing")

    summary = dict.fromkeys(RULES, 0)
    for cells in flags:
        for fired in cells.values():
            for rule in fired:
                summary[rule] += 1
    status = ("review" if review else
              "suppressed" if any(1 in column for column in suppressed.values()) else "pass")
    return SdcResult(names + [N_PERSONS], raw, safe, flags, status, summary)


def _dominance(top1, top2, total, params: SdcParams) -> list[str]:
    """The dominance rules that fire on a sum/avg cell, from absolute per-person totals."""
    if total is None:                     # no contributions at all: a NULL statistic
        return []
    top1, top2, total = abs(float(top1 or 0)), abs(float(top2 or 0)), abs(float(total))
    if total == 0:                        # every contribution is zero
        return ["p_percent"] if params.zeros_disclosive else []
    fired = []
    if (top1 + top2 if params.nk_n == 2 else top1) / total >= params.nk_k:
        fired.append("nk_dominance")
    if top1 and (total - top1 - top2) / top1 < params.p_percent:
        fired.append("p_percent")
    return fired


def _slices(raw: list[list], keys: list[int], n: int) -> tuple[list, list]:
    """Per grouping dimension: row -> slice id (in order of first appearance), and slice -> rows
    by ascending n_persons then row order. A slice of dimension d is the groups sharing every
    other key's value; with one key it is the whole table."""
    by_size = sorted(range(len(raw)), key=lambda r: raw[r][n])
    slice_of, members = [], []
    for d in keys:
        others = [k for k in keys if k != d]
        if others:
            ids: dict = {}
            of = [ids.setdefault(key, len(ids)) for key in map(itemgetter(*others), raw)]
        else:
            ids, of = {(): 0}, [0] * len(raw)
        rows = [[] for _ in ids]
        for r in by_size:
            rows[of[r]].append(r)
        slice_of.append(of)
        members.append(rows)
    return slice_of, members


def _secondary(slices, raw: list[list], i: int, suppressed: bytearray) -> list[int]:
    """Rows whose column `i` secondary suppression adds (marking them in `suppressed`).

    A slice of more than one group holding exactly one suppressed cell is unbalanced: it gets a
    second one, in its unsuppressed group with the smallest n_persons (one holding a value before
    one holding NULL, then row order). Work goes in rounds: a round visits the slices unbalanced
    when it began, dimension by dimension and within one in order of first appearance, skipping
    any balanced meanwhile; slices its suppressions unbalance wait for the next round.
    """
    slice_of, members = slices
    count = [[0] * len(m) for m in members]
    r = suppressed.find(1)
    while r != -1:
        for d, of in enumerate(slice_of):
            count[d][of[r]] += 1
        r = suppressed.find(1, r + 1)
    todo = [(0, d, s) for d, cs in enumerate(count) for s, c in enumerate(cs)
            if c == 1 and len(members[d][s]) > 1]
    added = []
    while todo:
        round_, d, s = heapq.heappop(todo)
        if count[d][s] != 1:
            continue
        free = [r for r in members[d][s] if not suppressed[r]]
        r = next((r for r in free if raw[r][i] is not None), free[0])
        suppressed[r] = 1
        added.append(r)
        for d2, of in enumerate(slice_of):
            s2 = of[r]
            count[d2][s2] += 1
            if count[d2][s2] == 1 and len(members[d2][s2]) > 1:
                heapq.heappush(todo, (round_ + 1, d2, s2))
    return added


def _finding_rows(findings: Sequence[dict], raw: list[list], keys: list[int]) -> list[int]:
    rows, row_of = set(), None
    for finding in findings:
        if "row" in finding:
            rows.add(finding["row"])
            continue
        if row_of is None:
            row_of = {tuple(row[k] for k in keys): r for r, row in enumerate(raw)}
        group = tuple(finding["group"])
        if group not in row_of:
            raise ValueError(f"differencing finding for an unknown group: {group!r}")
        rows.add(row_of[group])
    return sorted(rows)


# Differencing ----------------------------------------------------------------------------------

def find_differencing(new_sets: dict[tuple, BitMap64],
                      released: Iterable[tuple[int, dict[tuple, BitMap64]]],
                      threshold: int) -> list[dict]:
    """Pairs (new group, released group) whose person sets differ by 1 … threshold-1 persons.

    Only groups of at least `threshold` persons are compared: a smaller group is suppressed
    whole, so nothing of it is (or was) released to difference against. Two sets within
    threshold-1 of each other share at least one of any `threshold` persons of either, so each
    new group is only compared with released groups holding one of its first `threshold`
    persons and of a size within threshold-1 of its own.
    """
    new = [(key, bm) for key, bm in new_sets.items() if len(bm) >= threshold]
    old = [(output_id, key, bm) for output_id, sets in released
           for key, bm in sets.items() if len(bm) >= threshold]
    if threshold < 2 or not new or not old:
        return []
    sampled: dict[int, list[int]] = {}
    for a, (_, bm) in enumerate(new):
        for person in bm[:threshold]:
            sampled.setdefault(person, []).append(a)
    probe = BitMap64(sampled)
    findings = []
    candidates = sorted({(a, j) for j, (_, _, bm) in enumerate(old) for person in bm & probe
                         for a in sampled[person] if abs(len(new[a][1]) - len(bm)) < threshold})
    for a, j in candidates:
        (key, bm), (output_id, old_key, old_bm) = new[a], old[j]
        difference = bm.symmetric_difference_cardinality(old_bm)
        if 0 < difference < threshold:
            findings.append({"group": key, "released_output": output_id,
                             "released_group": old_key, "difference": difference})
    return findings
