"""Disclosure control, version 2: a grid of exact cell statistics in, the released grid out.

Pure Python, no Django, no I/O (DESIGN.md §6; docs/sdc-v2.md). The query engine computes, per
populated cell, the exact statistics below; `apply_disclosure` perturbs every statistic by the
cell key method (outputs/cellkey.py), withholds the cells whose *perturbed* contributor count is
under the threshold, and flags cells for checkers. No release decision is taken on an exact value:
exact values only feed the perturbation and the checkers' flags. Deterministic: the same inputs
give the same outputs.

Input
-----
`grid`: a `Grid` — the key names, each key's domain (in the order to release: the released rows
are the product of the domains in that order, so pass them sorted), the statistics to release and
whether every dataset of the query has one row per person.

`cells`: one mapping per **populated** cell (a cell of the grid that is absent has no contributor):

    key        tuple of key values (one per grid key)
    n_persons  distinct contributors                      ckey   cell key, 0…255
    n_rows     rows in the cell                           ckey2  second cell key, 0…2³²−1
    rows_max   largest row count of one person
    per measure i (0, 1, …), over the rows where the measure is not null:
    m{i}_n      non-null rows          m{i}_sum   their sum      m{i}_sumsq  sum of squares
    m{i}_top1   largest |per-person sum|     m{i}_top2   second largest
    m{i}_sqtop1 largest per-person sum of squares
    m{i}_persons (optional) distinct persons with a non-null value (see "threshold" below)

Statistics (`Statistic(name, kind, measure)`):

    count_persons  n_persons, frequency method (p-table, ckey)
    count_rows     n_rows: frequency method when one row per person, else magnitude method with
                   top = rows_max (a sum of per-person row counts), rounded, at least 0
    sum            m_sum + m × top1 (magnitude method, ckey2)
    avg            perturbed sum ÷ perturbed count of non-null rows (m_n, perturbed as count_rows)
    variance       sample variance from the perturbed sum, sum of squares (top = sqtop1) and
    stddev         count; a negative variance is released as 0; n ≤ 1 is withheld

Rules
-----
threshold     perturbed n_persons < threshold: every statistic of the cell is withheld (None), the
              key stays. A measure's contributors are the persons with a non-null value: with one
              row per person that is m{i}_n, otherwise m{i}_persons when the engine gives it; its
              perturbed value under the threshold withholds that measure's statistics (flag
              `threshold` on those statistics only). Empty cells are withheld the same way.
nk_dominance  (top1 + top2) / |sum| ≥ k (n = 2; top1 / |sum| for n = 1), on exact values:
              flags the measure's statistics for checkers, withholds nothing — the magnitude noise
              is scaled to the largest contribution and protects the dominant person.
p_percent     (|sum| − top1 − top2) / top1 < p, on exact values: flags, as nk_dominance.
differencing  cells the differencing ledger found (`findings`, key tuples): flags every statistic.

Output (`Disclosure`)
---------------------
`columns` (keys, then statistic names), `raw` (exact values per row, plus a last `contributors`
column: the exact n_persons, for checkers only), `safe` (as released; withheld statistics None, no
contributors column), `flags` (per row: statistic name → rules fired) and
`sdc = {status, summary, settings}`:

    status    "review"      a checker must look: nk_dominance, p_percent or differencing fired
              "suppressed"  only the threshold fired (cells withheld, nothing else to look at)
              "pass"        no rule fired
    summary   rule → number of grid cells (rows) on which it fired for any statistic
    settings  every parameter in force (threshold, p-table D, V and its file, the magnitude
              multipliers a and b, nk n and k, p) — recorded with the output and its release
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import product

from outputs import cellkey, ptable
from outputs.cellkey import ROWS, SUM, SUMSQ, MagnitudeParams

RULES = ("threshold", "nk_dominance", "p_percent", "differencing")
REVIEW_RULES = ("nk_dominance", "p_percent", "differencing")
KINDS = ("count_persons", "count_rows", "sum", "avg", "stddev", "variance")
MEASURE_KINDS = frozenset({"sum", "avg", "stddev", "variance"})
CONTRIBUTORS = "contributors"

# How DisclosureParams.stricter merges each field: the stricter of the two values wins.
_STRICTER = {"threshold": max, "ckm_d": max, "ckm_v": max, "magnitude_a": max, "magnitude_b": max,
             "nk_n": max, "nk_k": min, "p_percent": max}


@dataclass(frozen=True)
class DisclosureParams:
    threshold: int = 10         # TRE_SDC_THRESHOLD: perturbed contributors below -> withheld
    ckm_d: int = 3              # TRE_CKM_D: largest frequency perturbation (above the threshold)
    ckm_v: float = 2            # TRE_CKM_V: variance of the frequency perturbation
    magnitude_a: float = 0.5    # TRE_CKM_MAGNITUDE_A: smallest |multiplier| of the largest contribution
    magnitude_b: float = 2.5    # TRE_CKM_MAGNITUDE_B: largest |multiplier|
    nk_n: int = 2               # TRE_SDC_NK_N
    nk_k: float = 0.9           # TRE_SDC_NK_K
    p_percent: float = 0.1      # TRE_SDC_P_PERCENT

    def __post_init__(self):
        if self.threshold < 1 or self.ckm_d < 1 or self.ckm_v <= 0:
            raise ValueError("the threshold and D must be at least 1 and V positive")
        if self.nk_n not in (1, 2):
            raise ValueError("nk_n must be 1 or 2: the engine provides the top two persons only")
        if not 0 < self.nk_k <= 1 or self.p_percent < 0:
            raise ValueError("nk_k must be in (0, 1] and p_percent at least 0")
        MagnitudeParams(self.magnitude_a, self.magnitude_b)

    @classmethod
    def from_settings(cls, settings) -> DisclosureParams:
        """From an object with the TRE_* settings as attributes (django.conf.settings); missing
        ones keep their defaults."""
        names = {"threshold": "TRE_SDC_THRESHOLD", "ckm_d": "TRE_CKM_D", "ckm_v": "TRE_CKM_V",
                 "magnitude_a": "TRE_CKM_MAGNITUDE_A", "magnitude_b": "TRE_CKM_MAGNITUDE_B",
                 "nk_n": "TRE_SDC_NK_N", "nk_k": "TRE_SDC_NK_K", "p_percent": "TRE_SDC_P_PERCENT"}
        return cls(**{field_: getattr(settings, name) for field_, name in names.items()
                      if hasattr(settings, name)})

    def stricter(self, **overrides) -> DisclosureParams:
        """These parameters, made stricter (never looser) by `overrides`; None values are ignored."""
        unknown = overrides.keys() - _STRICTER.keys()
        if unknown:
            raise TypeError(f"unknown disclosure parameters: {', '.join(sorted(unknown))}")
        return replace(self, **{name: _STRICTER[name](getattr(self, name), value)
                                for name, value in overrides.items() if value is not None})

    @property
    def magnitude(self) -> MagnitudeParams:
        return MagnitudeParams(self.magnitude_a, self.magnitude_b)

    def table(self) -> ptable.PTable:
        return ptable.get(self.ckm_d, self.ckm_v, self.threshold)

    def settings(self) -> dict:
        return asdict(self) | {"ptable": ptable.filename(self.ckm_d, self.ckm_v, self.threshold),
                               "ptable_method": "maximum entropy (ptable R package), ONS lookup"}


@dataclass(frozen=True)
class Statistic:
    name: str
    kind: str
    measure: int | None = None     # index i of the m{i}_* fields; None for counts

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown statistic kind {self.kind!r}")
        if (self.kind in MEASURE_KINDS) != (self.measure is not None):
            raise ValueError(f"statistic {self.name!r}: a measure index goes with {sorted(MEASURE_KINDS)}")


@dataclass(frozen=True)
class Grid:
    keys: tuple[str, ...]
    domains: tuple[tuple, ...]
    statistics: tuple[Statistic, ...]
    one_row_per_person: bool = False

    def __post_init__(self):
        if len(self.keys) != len(self.domains):
            raise ValueError("one domain per key")
        names = [*self.keys, *(s.name for s in self.statistics)]
        if len(set(names)) != len(names) or CONTRIBUTORS in names:
            raise ValueError("key and statistic names must be distinct and not 'contributors'")

    @property
    def size(self) -> int:
        size = 1
        for domain in self.domains:
            size *= len(domain)
        return size


@dataclass
class Disclosure:
    columns: list[str]                       # keys + statistic names
    raw: list[list]                          # exact values + contributors (checkers only)
    safe: list[list]                         # as released
    flags: list[dict[str, list[str]]]        # per row: statistic -> rules fired
    sdc: dict = field(default_factory=dict)  # {status, summary, settings}


def apply_disclosure(grid: Grid, cells: Iterable[Mapping], params: DisclosureParams = DisclosureParams(),
                     findings: Iterable[Sequence] = ()) -> Disclosure:
    table = params.table().lookup
    top_row = len(table) - 1
    magnitude = params.magnitude
    a, spread = magnitude.a, magnitude.b - magnitude.a
    threshold, nk_n, nk_k, p = params.threshold, params.nk_n, params.nk_k, params.p_percent
    one = grid.one_row_per_person
    stats = grid.statistics
    names = [s.name for s in stats]
    measures = sorted({s.measure for s in stats if s.measure is not None})
    fields = {i: tuple(f"m{i}_{f}" for f in ("n", "sum", "sumsq", "top1", "top2", "sqtop1", "persons"))
              for i in measures}
    findings = {tuple(key) for key in findings}
    by_key = {}
    for cell in cells:
        key = tuple(cell["key"])
        if key in by_key:
            raise ValueError(f"two cells with the key {key!r}")
        by_key[key] = cell
    if len(grid.keys) == 0:
        keys_iter: Iterable[tuple] = [()]
    else:
        keys_iter = product(*grid.domains)

    def mult(ckey2: int, part: int) -> float:
        u = cellkey.uniform(ckey2, part) * 2.0
        return -(a + spread * u) if u < 1.0 else a + spread * (u - 1.0)

    def freq(value: int, ckey: int) -> int:
        return value + table[value if value <= top_row else top_row][ckey]

    raw_rows, safe_rows, flag_rows = [], [], []
    summary = dict.fromkeys(RULES, 0)
    empty_raw = [0 if s.kind in ("count_persons", "count_rows") else None for s in stats] + [0]
    empty_safe = [None] * len(stats)
    withheld = ["threshold"]
    seen = 0
    for key in keys_iter:
        cell = by_key.get(key)
        klist = list(key)
        if cell is None:
            raw_rows.append(klist + empty_raw)
            safe_rows.append(klist + empty_safe)
            flags = dict.fromkeys(names, withheld)
            summary["threshold"] += 1
            if findings and key in findings:
                flags = dict.fromkeys(names, ["threshold", "differencing"])
                summary["differencing"] += 1
            flag_rows.append(flags)
            continue
        seen += 1
        n_persons, ckey, ckey2 = cell["n_persons"], cell["ckey"], cell["ckey2"]
        released_persons = freq(n_persons, ckey)
        released_ok = released_persons >= threshold
        exact: dict = {}      # measure -> (n, sum, sumsq, top1, top2, sqtop1, persons)
        parts: dict = {}      # measure -> (count, sum, sumsq) perturbed, or None when withheld
        rules: dict = {}      # measure -> flags from dominance
        raw_row, safe_row, flags = list(key), list(key), {}
        for stat in stats:
            kind = stat.kind
            if kind == "count_persons":
                raw_row.append(n_persons)
                value = released_persons
            elif kind == "count_rows":
                n_rows = cell["n_rows"]
                raw_row.append(n_rows)
                if one:
                    value = freq(n_rows, ckey)
                else:
                    value = round(n_rows + mult(ckey2, ROWS) * cell["rows_max"])
                    value = value if value > 0 else 0
            else:
                i = stat.measure
                if i not in exact:
                    f = fields[i]
                    exact[i] = e = (cell[f[0]], cell[f[1]], cell[f[2]], cell[f[3]], cell[f[4]],
                                    cell[f[5]], cell.get(f[6]))
                    parts[i] = _parts(e, one, ckey, ckey2, cell, freq, mult, threshold) if released_ok else None
                    rules[i] = _dominance(e[1], e[3], e[4], nk_n, nk_k, p)
                n, total, sumsq = exact[i][0], exact[i][1], exact[i][2]
                raw_row.append(_statistic(kind, n, total, sumsq))
                part = parts[i]
                if part is None:
                    value = None
                    if released_ok:
                        flags[stat.name] = ["threshold"]
                else:
                    value = _statistic(kind, *part)
                    if rules[i]:
                        flags[stat.name] = list(rules[i])
            if not released_ok:
                value = None
            safe_row.append(value)
        raw_row.append(n_persons)
        if not released_ok:
            flags = dict.fromkeys(names, withheld)
        if findings and key in findings:
            for name in names:
                flags[name] = [*flags.get(name, ()), "differencing"]
        if flags:
            fired = {rule for fired in flags.values() for rule in fired}
            for rule in fired:
                summary[rule] += 1
        raw_rows.append(raw_row)
        safe_rows.append(safe_row)
        flag_rows.append(flags)
    if seen != len(by_key):
        outside = [key for key in by_key if not _in_grid(key, grid)]
        raise ValueError(f"cells outside the grid: {outside[:5]!r}")
    status = ("review" if any(summary[rule] for rule in REVIEW_RULES)
              else "suppressed" if summary["threshold"] else "pass")
    return Disclosure([*grid.keys, *names], raw_rows, safe_rows, flag_rows,
                      {"status": status, "summary": summary,
                       "settings": params.settings() | {"one_row_per_person": one}})


def _parts(e, one, ckey, ckey2, cell, freq, mult, threshold):
    """(count, sum, sumsq) of one measure, perturbed; None when its contributors are withheld."""
    n, total, sumsq, top1, _, sqtop1, persons = e
    if one:
        count = freq(n, ckey)
        if count < threshold:
            return None
    else:
        if persons is not None and freq(persons, ckey) < threshold:
            return None
        count = round(n + mult(ckey2, ROWS) * cell["rows_max"])
        count = count if count > 0 else 0
    total = total or 0.0
    noise = mult(ckey2, SUM) * abs(top1 or 0.0)
    released_sum = total - noise if total < 0 else total + noise
    released_sumsq = (sumsq or 0.0) + mult(ckey2, SUMSQ) * abs(sqtop1 or 0.0)
    return count, released_sum, released_sumsq


def _statistic(kind, n, total, sumsq):
    if kind == "sum":
        return total
    if kind == "avg":
        return cellkey.avg(total, n)
    if kind == "variance":
        return cellkey.variance(total, sumsq, n)
    return cellkey.stddev(total, sumsq, n)


def _dominance(total, top1, top2, nk_n, nk_k, p) -> tuple[str, ...]:
    if total is None:
        return ()
    total, top1, top2 = abs(float(total)), abs(float(top1 or 0)), abs(float(top2 or 0))
    if total == 0:
        return ()
    fired = ()
    if (top1 + top2 if nk_n == 2 else top1) / total >= nk_k:
        fired = ("nk_dominance",)
    if top1 and (total - top1 - top2) / top1 < p:
        fired = (*fired, "p_percent")
    return fired


def _in_grid(key, grid) -> bool:
    return len(key) == len(grid.domains) and all(v in d for v, d in zip(key, grid.domains))


def perturb_dataset_count(count: int, ckey: int, params: DisclosureParams = DisclosureParams()) -> int:
    """A dataset's row or person count as non-custodians see it (DESIGN.md §4 "Counts"): perturbed
    by the frequency method over the dataset's persons (ckey = their record keys' sum mod 256), then
    rounded half up to two significant figures."""
    return cellkey.round_significant(cellkey.perturb_frequency(count, ckey, params.table()), 2)
