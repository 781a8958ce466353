"""The perturbation table (p-table) of the cell key method for frequencies (DESIGN.md §6).

Pure Python, no Django, no I/O beyond reading the reviewed table shipped beside this module.

**Construction** (`build`): the maximum-entropy method of the `ptable` R package (Enderle,
Giessing, Tent; sdcTools/ptable, `pt_create_pTable` with `optim = 1`). For each original cell
value i = 0, 1, …, `max_row` the released value j = i + v has a distribution over the
perturbations v in [−D, D] that

1. sums to 1,
2. has mean 0 (the released value is unbiased),
3. has variance at most V (as in the package: the bound binds — variance exactly V — wherever
   the mean-0 maximum-entropy distribution would be wider, which is every row from threshold + 2
   on for the defaults; row threshold + 1, whose perturbations are cut to −1 … D, keeps its
   unconstrained variance, 1.37 for D = 3. Asking for exactly V there gives a U-shaped row,
   p(+3) > p(+2): we keep the package's choice),
4. never releases a value in 1 … threshold−1 (the package's `js` = threshold − 1 "blocked"
   frequencies: a released count is 0 or at least the threshold),

and maximises the entropy among those distributions. The solution is an exponential family,
p(v) ∝ exp(a·v + b·v²); its two multipliers (a, b) are found by Newton's method on the convex dual
(log Z(a, b) − b·V).

Row 0 is never perturbed (an empty cell stays 0). Rows i ≥ threshold + D have every target of
[i−D, i+D] allowed, so all have the same distribution: `max_row = threshold + D` is the "large
value" row that covers every larger i (lookups use min(value, max_row)).

**Where the constraints cannot all hold** (the package would stop; we document what we do):

* *Small rows, 1 ≤ i ≤ threshold−1.* With D = 3 and threshold 10, no target in [i−D, i+D] is
  allowed for i = 4, 5, 6, and i = 1, 2, 3 could only go to 0 (always withheld) and i = 7, 8, 9
  only upwards (always released, biased): the release decision would be a fixed function of the
  exact count — exactly the boundary oracle DESIGN.md §6 forbids. So a small row's support is
  {0} ∪ {threshold, …, threshold+D−1} (withheld, or released at the threshold or just above it),
  whatever D is; it keeps the mean 0 (each small cell is released with probability about i ÷
  threshold, so nothing about the exact count is certain from release or withholding) and drops
  the variance constraint: the smallest unbiased variance on that support is i·(threshold − i)
  (≥ 9 for i = 1), above V. |v| ≤ D does not hold on these rows; |v| ≤ threshold + D − 2 does.
* *Row i = threshold.* Its allowed perturbations are 0 … D only, so mean 0 forces v = 0: a cell of
  exactly `threshold` contributors is released unperturbed (as in the package). Its released
  value is not telling: cells of threshold−1 … threshold−3 contributors are released as
  `threshold` too.
* *Rows threshold < i < threshold + D* have a one-sided cut support; mean 0 and variance V are both
  feasible there for the defaults (checked by the tests for any parameters we ship).

**Keys** (`lookup`): the ONS convention. Record keys are 0…255, a cell key is the sum of its
contributors' record keys mod 256, and the perturbation is looked up by (pcv, ckey) with
pcv = min(value, max_row). Each row's probabilities are turned into counts of the 256 cell keys
(largest remainders, then single-key moves that restore an exact mean of 0 and keep the variance
closest to V); cell keys are assigned to perturbations in ascending order of v, so row i's keys
[lo, hi] release v — the cumulative probability intervals of the package, quantised to 1/256. The
quantised table is what is applied; its properties are the ones tested.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KEYS = 256                        # cell keys 0 … 255 (ONS)
DATA = Path(__file__).resolve().parent / "data"
HEADER = ("i", "j", "v", "p", "p_int_lb", "p_int_ub", "n_keys", "ckey_lb", "ckey_ub")


@dataclass(frozen=True)
class PTable:
    D: int
    V: float
    threshold: int
    rows: tuple[tuple[tuple[int, float, int], ...], ...]   # row i: ((v, p, n_keys), …) ascending v
    lookup: tuple[tuple[int, ...], ...]                    # lookup[i][ckey] -> v

    @property
    def max_row(self) -> int:
        return len(self.rows) - 1

    def perturbation(self, value: int, ckey: int) -> int:
        return self.lookup[min(value, len(self.lookup) - 1)][ckey]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for i, row in enumerate(self.rows):
            cumulative, key = 0.0, 0
            for v, p, n in row:
                writer.writerow((i, i + v, v, f"{p:.10f}", f"{cumulative:.10f}",
                                 f"{min(cumulative + p, 1.0):.10f}", n, key, key + n - 1))
                cumulative, key = cumulative + p, key + n
        return out.getvalue()

    def to_ons(self, max_pcv: int = 750) -> list[tuple[int, int, int]]:
        """(pcv, ckey, pvalue) rows in the format of the ONS `cell-key-perturbation` package:
        pcv 1 … max_pcv (it reuses rows 501–750 for larger values), rows past max_row repeated."""
        return [(pcv, ckey, self.perturbation(pcv, ckey))
                for pcv in range(1, max_pcv + 1) for ckey in range(KEYS)]


def filename(D: int, V: float, threshold: int) -> str:
    return f"ptable_D{D}_V{V:g}_T{threshold}.csv"


def from_csv(text: str, D: int, V: float, threshold: int) -> PTable:
    rows: dict[int, list[tuple[int, float, int]]] = {}
    for record in csv.DictReader(io.StringIO(text)):
        rows.setdefault(int(record["i"]), []).append(
            (int(record["v"]), float(record["p"]), int(record["n_keys"])))
    if sorted(rows) != list(range(len(rows))):
        raise ValueError("p-table rows must be 0 … max_row without gaps")
    ordered = tuple(tuple(sorted(rows[i])) for i in range(len(rows)))
    return PTable(D, V, threshold, ordered, _lookup(ordered))


@lru_cache(maxsize=16)
def get(D: int = 3, V: float = 2, threshold: int = 10) -> PTable:
    """The p-table for these parameters: the reviewed file in outputs/data when it exists,
    otherwise built (deterministically) by the same method."""
    path = DATA / filename(D, V, threshold)
    if path.exists():
        return from_csv(path.read_text(), D, V, threshold)
    return build(D, V, threshold)


# Construction ----------------------------------------------------------------------------------


def build(D: int = 3, V: float = 2, threshold: int = 10) -> PTable:
    if D < 1 or V <= 0 or threshold < 1:
        raise ValueError("D must be at least 1, V positive and the threshold at least 1")
    if V > D * D:
        raise ValueError(f"a variance of {V} is impossible with perturbations of at most {D}")
    max_row = threshold + D
    rows = [((0, 1.0, KEYS),)]
    for i in range(1, max_row + 1):
        support = _support(i, D, threshold)
        variance = None if i < threshold else V      # small rows: mean 0 only (see the docstring)
        p = maximum_entropy(support, variance)
        keys = _quantise(support, p, V if variance else None)
        rows.append(tuple(e for e in zip(support, p, keys, strict=False) if e[1] > 0 or e[2] > 0))
    rows_t = tuple(rows)
    return PTable(D, V, threshold, rows_t, _lookup(rows_t))


def _support(i: int, D: int, threshold: int) -> list[int]:
    if i < threshold:
        targets = [0] + list(range(threshold, threshold + D))
    else:
        targets = [j for j in range(i - D, i + D + 1) if j == 0 or j >= threshold]
    return [j - i for j in targets]


def maximum_entropy(v: list[int], variance: float | None) -> list[float]:
    """The maximum-entropy distribution over perturbations `v` with mean 0 and variance at most
    `variance` (None: no variance constraint). p(v) ∝ exp(a·v + b·v²), b ≤ 0."""
    if len(v) == 1:
        if v[0] != 0:
            raise ValueError("a single perturbation other than 0 cannot have mean 0")
        return [1.0]
    if min(v) >= 0 or max(v) <= 0:      # mean 0 only by staying put
        return [1.0 if x == 0 else 0.0 for x in v]
    p = _family(v, _newton_mean(v, 0.0), 0.0)
    if variance is None or sum(pi * x * x for pi, x in zip(p, v, strict=False)) <= variance:
        return p
    a, b = 0.0, 0.0
    for _ in range(200):
        p = _family(v, a, b)
        m1 = sum(pi * x for pi, x in zip(p, v, strict=False))
        m2 = sum(pi * x * x for pi, x in zip(p, v, strict=False))
        m3 = sum(pi * x ** 3 for pi, x in zip(p, v, strict=False))
        m4 = sum(pi * x ** 4 for pi, x in zip(p, v, strict=False))
        g1, g2 = m1, m2 - variance                           # gradient of the dual
        h11, h12, h22 = m2 - m1 * m1, m3 - m1 * m2, m4 - m2 * m2   # its Hessian (a covariance)
        if abs(g1) < 1e-14 and abs(g2) < 1e-13:
            break
        det = h11 * h22 - h12 * h12
        da, db = -(h22 * g1 - h12 * g2) / det, -(h11 * g2 - h12 * g1) / det
        step, dual = 1.0, _dual(v, a, b, variance)
        while _dual(v, a + step * da, b + step * db, variance) > dual + 1e-4 * step * (g1 * da + g2 * db):
            step /= 2
            if step < 1e-12:
                break
        a, b = a + step * da, b + step * db
    else:
        raise ArithmeticError(f"maximum entropy did not converge for v = {v}")
    if abs(m1) > 1e-9 or abs(m2 - variance) > 1e-9:
        raise ArithmeticError(f"variance {variance} is infeasible for v = {v}")
    return _family(v, a, b)


def _family(v, a, b):
    exponents = [a * x + b * x * x for x in v]
    top = max(exponents)
    weights = [math.exp(e - top) for e in exponents]
    total = sum(weights)
    return [w / total for w in weights]


def _dual(v, a, b, variance):
    exponents = [a * x + b * x * x for x in v]
    top = max(exponents)
    return top + math.log(sum(math.exp(e - top) for e in exponents)) - b * variance


def _newton_mean(v, target):
    a = 0.0
    for _ in range(200):
        p = _family(v, a, 0.0)
        m1 = sum(pi * x for pi, x in zip(p, v, strict=False))
        m2 = sum(pi * x * x for pi, x in zip(p, v, strict=False))
        if abs(m1 - target) < 1e-14:
            return a
        step = (m1 - target) / (m2 - m1 * m1)
        a -= max(-2.0, min(2.0, step))                        # damped: the family is steep
    raise ArithmeticError(f"mean constraint did not converge for v = {v}")


def _quantise(v: list[int], p: list[float], variance: float | None) -> list[int]:
    """Counts of the 256 cell keys per perturbation: exact mean 0, variance nearest `variance`
    (when given), then nearest to 256·p; a perturbation with p > 0 keeps at least one key."""
    target = [KEYS * pi for pi in p]
    n = [math.floor(t) for t in target]
    for k in sorted(range(len(v)), key=lambda k: n[k] - target[k])[:KEYS - sum(n)]:
        n[k] += 1

    def cost(n):
        mean = sum(c * x for c, x in zip(n, v, strict=False))
        spread = abs(sum(c * x * x for c, x in zip(n, v, strict=False)) - KEYS * variance) if variance else 0.0
        return (abs(mean), spread, sum((c - t) ** 2 for c, t in zip(n, target, strict=False)))

    best = cost(n)
    while True:
        moves = [(cost(m), m) for a in range(len(v)) for b in range(len(v))
                 if a != b and n[a] > (1 if p[a] > 1e-6 else 0)
                 for m in [[c - (k == a) + (k == b) for k, c in enumerate(n)]]]
        if not moves:
            return n
        candidate, m = min(moves)
        if candidate >= best:
            if best[0] != 0:
                raise ArithmeticError(f"no key allocation with mean 0 for v = {v}")
            return n
        best, n = candidate, m


def _lookup(rows) -> tuple[tuple[int, ...], ...]:
    table = []
    for row in rows:
        keys = [v for v, _, n in row for _ in range(n)]
        if len(keys) != KEYS:
            raise ValueError(f"a p-table row must allocate {KEYS} cell keys, not {len(keys)}")
        table.append(tuple(keys))
    return tuple(table)
