"""Disclosure control, version 2: a grid of exact cell statistics in, the released grid out.

Pure Python, no Django, no I/O (DESIGN.md §6; docs/sdc.md). The query engine computes, per
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
`columns` (keys, then statistic names); rows are tuples in grid order: `raw` (exact values, plus a
last `contributors` column: the exact n_persons, for checkers only), `safe` (as released; withheld
statistics None, no contributors column); `flags` (per row: statistic name → tuple of the rules fired; a statistic
on which nothing fired is absent) and
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
from math import sqrt
from operator import itemgetter

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
        if not self.statistics:
            raise ValueError("a grid releases at least one statistic")
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
    raw: list[tuple]                         # exact values + contributors (checkers only)
    safe: list[tuple]                        # as released
    flags: list[dict[str, tuple[str, ...]]]  # per row: statistic -> rules fired
    sdc: dict = field(default_factory=dict)  # {status, summary, settings}


def apply_disclosure(grid: Grid, cells: Iterable[Mapping], params: DisclosureParams = DisclosureParams(),
                     findings: Iterable[Sequence] = ()) -> Disclosure:
    """The released grid (module docstring). Works column by column over the populated cells."""
    lookup = params.table().lookup
    top_row = len(lookup) - 1
    a, spread = params.magnitude_a, params.magnitude_b - params.magnitude_a
    threshold, one, stats = params.threshold, grid.one_row_per_person, grid.statistics
    names = [s.name for s in stats]
    by_key: dict[tuple, Mapping] = {}
    for cell in cells:
        key = tuple(cell["key"])
        if key in by_key:
            raise ValueError(f"two cells with the key {key!r}")
        by_key[key] = cell
    keys = list(product(*grid.domains)) if grid.keys else [()]
    found = [by_key.get(key) for key in keys]
    pop = [cell for cell in found if cell is not None]
    if len(pop) != len(by_key):
        outside = [key for key in by_key if not _in_grid(key, grid)]
        raise ValueError(f"cells outside the grid: {outside[:5]!r}")

    if pop:
        persons, ckeys, ckey2s = map(list, zip(*map(itemgetter("n_persons", "ckey", "ckey2"), pop)))
    else:
        persons, ckeys, ckey2s = [], [], []

    def freq(values):
        return [v + lookup[v if v <= top_row else top_row][k] for v, k in zip(values, ckeys)]

    drawn: dict[object, list] = {}     # per part: multipliers; "mixes", "rows": shared columns

    def multipliers(part):             # cellkey.multiplier, a column at a time, once per part
        if part not in drawn:
            if "mixes" not in drawn:
                drawn["mixes"] = list(map(cellkey.mix, ckey2s))
            shift, scale = 21 * part, 2 * cellkey.U21
            us = [((z >> shift) & 0x1FFFFF) * scale for z in drawn["mixes"]]
            drawn[part] = [-(a + spread * u) if u < 1.0 else a + spread * (u - 1.0) for u in us]
        return drawn[part]

    def magnitude_rows(values):        # a row count over many rows per person
        if "rows" not in drawn:
            drawn["rows"] = [m * r for m, r in zip(multipliers(ROWS), map(itemgetter("rows_max"), pop))]
        return [r if r > 0 else 0 for r in [round(v + noise) for v, noise in zip(values, drawn["rows"])]]

    released_persons = freq(persons)
    ok = [r >= threshold for r in released_persons]
    all_ok = all(ok)
    measures = {i: _Measure(i, pop, one, freq, multipliers, magnitude_rows, threshold, params)
                for i in sorted({s.measure for s in stats if s.measure is not None})}
    raw_cols, safe_cols = [], []
    for stat in stats:
        if stat.kind == "count_persons":
            raw, safe = persons, released_persons
        elif stat.kind == "count_rows":
            raw = list(map(itemgetter("n_rows"), pop))
            safe = freq(raw) if one else magnitude_rows(raw)
        else:
            raw, safe = measures[stat.measure].columns(stat.kind)
        raw_cols.append(raw)
        safe_cols.append(safe if all_ok else [v if keep else None for v, keep in zip(safe, ok)])

    flagged: dict[int, dict] = {}          # populated cell j -> its flags, when any fired
    for stat in stats:
        if stat.measure is not None:
            fired = measures[stat.measure].flags
            for j in [j for j, rules in enumerate(fired) if rules and ok[j]]:
                flagged.setdefault(j, {})[stat.name] = fired[j]
    summary = dict.fromkeys(RULES, 0)
    for flags in flagged.values():
        for rule in {rule for rules in flags.values() for rule in rules}:
            summary[rule] += 1
    withheld = dict.fromkeys(names, THRESHOLD)
    empty_raw = tuple(0 if s.kind in ("count_persons", "count_rows") else None for s in stats) + (0,)
    empty_safe = (None,) * len(stats)
    raw_next, safe_next = zip(*raw_cols, persons).__next__, zip(*safe_cols).__next__
    raw_rows = [key + raw_next() if cell is not None else key + empty_raw for key, cell in zip(keys, found)]
    safe_rows = [key + safe_next() if cell is not None else key + empty_safe for key, cell in zip(keys, found)]
    flag_next = iter([flagged.get(j) or {} if keep else withheld.copy() for j, keep in enumerate(ok)]).__next__
    flag_rows = [flag_next() if cell is not None else withheld.copy() for cell in found]
    summary["threshold"] += len(keys) - len(pop) + ok.count(False)
    if findings := {tuple(key) for key in findings}:
        for row, key in enumerate(keys):
            if key in findings:
                flags = flag_rows[row]
                flag_rows[row] = {name: (*flags.get(name, ()), "differencing") for name in names}
                summary["differencing"] += 1
    status = ("review" if any(summary[rule] for rule in REVIEW_RULES)
              else "suppressed" if summary["threshold"] else "pass")
    return Disclosure([*grid.keys, *names], raw_rows, safe_rows, flag_rows,
                      {"status": status, "summary": summary,
                       "settings": params.settings() | {"one_row_per_person": one}})


THRESHOLD = ("threshold",)


class _Measure:
    """One measure's exact and perturbed parts over the populated cells, computed once however many
    statistics use them. `flags[j]`: the rules that fire on its statistics in cell j."""

    def __init__(self, i, pop, one, freq, multipliers, magnitude_rows, threshold, params):
        fields = [f"m{i}_{name}" for name in ("n", "sum", "sumsq", "top1", "top2", "sqtop1")]
        columns = list(zip(*map(itemgetter(*fields), pop))) if pop else [()] * 6
        self.n, self.sum, self.sumsq, top1, top2, self.sqtop1 = columns
        self.multipliers = multipliers
        if one:
            self.count = freq(self.n)
            counted = [r >= threshold for r in self.count]
        else:
            self.count = magnitude_rows(self.n)
            persons_field = f"m{i}_persons"
            contributors = [c.get(persons_field) for c in pop]
            if any(p is not None for p in contributors):
                released = freq([p or 0 for p in contributors])
                counted = [p is None or r >= threshold for p, r in zip(contributors, released)]
            else:
                counted = [True] * len(pop)
        self.counted, self.all_counted = counted, all(counted)
        self.released_sum = [(x - m * abs(t or 0.0) if x < 0 else x + m * abs(t or 0.0))
                             for x, m, t in zip([x or 0.0 for x in self.sum], multipliers(SUM), top1)]
        self.flags = _dominance(self.sum, top1, top2, params)
        if not self.all_counted:
            self.flags = [rules if keep else THRESHOLD for rules, keep in zip(self.flags, counted)]
        self._variance = None

    def variances(self):
        """(exact, released) sample variances: cellkey.variance, a column at a time."""
        if self._variance is None:
            sumsq = [(q or 0.0) + m * abs(t or 0.0)
                     for q, m, t in zip(self.sumsq, self.multipliers(SUMSQ), self.sqtop1)]
            # n > 1 implies a sum and a sum of squares: the engine gives None only where m_n is 0
            self._variance = tuple(
                [max(0.0, (q - x * x / n) / (n - 1)) if n > 1 else None for x, q, n in zip(xs, qs, ns)]
                for xs, qs, ns in ((self.sum, self.sumsq, self.n), (self.released_sum, sumsq, self.count)))
        return self._variance

    def columns(self, kind):
        """(exact, released) columns of one statistic of this measure (cellkey.avg, variance,
        stddev, a column at a time)."""
        if kind == "sum":
            raw, safe = self.sum, self.released_sum
        elif kind == "avg":
            raw, safe = ([x / n if n > 0 else None for x, n in zip(xs, ns)]
                         for xs, ns in ((self.sum, self.n), (self.released_sum, self.count)))
        elif kind == "variance":
            raw, safe = self.variances()
        else:
            raw, safe = ([None if v is None else sqrt(v) for v in vs] for vs in self.variances())
        if self.all_counted:
            return raw, safe
        return raw, [v if keep else None for v, keep in zip(safe, self.counted)]


_FIRED = ((), ("nk_dominance",), ("p_percent",), ("nk_dominance", "p_percent"))


def _dominance(sums, top1, top2, params) -> list[tuple[str, ...]]:
    """Per cell, the dominance rules that fire on exact values: (n,k) when the top n persons hold
    at least k of |sum|, p% when (|sum| − top1 − top2) / top1 < p. A cell without a value, or whose
    contributions are all zero, fires neither."""
    k, p, two = params.nk_k, params.p_percent, params.nk_n == 2
    totals = [abs(x) if x else 0.0 for x in sums]
    t1s = [abs(t) if t else 0.0 for t in top1]
    t2s = [abs(t) if t else 0.0 for t in top2]
    return [_FIRED[(total > 0 and (t1 + t2 if two else t1) / total >= k)      # as ACRO divides
                   + 2 * (total > 0 and t1 > 0 and (total - t1 - t2) / t1 < p)]
            for total, t1, t2 in zip(totals, t1s, t2s)]


def _in_grid(key, grid) -> bool:
    return len(key) == len(grid.domains) and all(v in d for v, d in zip(key, grid.domains))


def perturb_dataset_count(count: int, ckey: int, params: DisclosureParams = DisclosureParams()) -> int:
    """A dataset's row or person count as non-custodians see it (DESIGN.md §4 "Counts"): perturbed
    by the frequency method over the dataset's persons (ckey = their record keys' sum mod 256), then
    rounded half up to two significant figures."""
    return cellkey.round_significant(cellkey.perturb_frequency(count, ckey, params.table()), 2)
