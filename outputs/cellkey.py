"""The cell key method: perturbation of frequencies and magnitudes (DESIGN.md §6, docs/sdc.md).

Pure Python, no Django, no I/O. Every function here is deterministic in its arguments: the same
cell (the same contributors, hence the same cell keys) always gets the same perturbation.

**Keys.** Each person has a secret record key `rkey` in 0…255 (the ONS convention), derived from
their `person_id` with a keyed hash (`record_keys`); a cell key `ckey` is the sum of its
contributors' record keys mod 256 and drives the frequency method. The magnitude method is driven
by `ckey2` in 0…2³²−1, the sum mod 2³² of 32-bit keys of the cell's **rows** (`row_key`: a keyed
hash of the person and the row, stable across queries and versions of an unchanged row). Row keys
and not person keys, because two cells with the same persons but one row more or less (a filter
on a visit date) must get unrelated magnitude noise: with person keys they would share the
multiplier, and when the row is not the largest person's, the released difference of the two sums
would be the row's exact value. With one row per person a row key is a person key.

**Frequencies** (`perturb_frequency`): the ONS method — the perturbation is looked up in the p-table
(outputs/ptable.py) by (min(value, max_row), ckey).

**Magnitudes** (`perturb_magnitude`; Giessing and Tent, 2019): released = total + m × top, where
`top` is the cell's largest per-person |contribution| and m a multiplier drawn deterministically
from ckey2 (`multiplier`): ckey2 is mixed once (splitmix64) and each part being perturbed (rows,
sum, sum of squares) reads its own 21 bits of the mix as a uniform u in [0, 1) (independent draws),
then a random sign and |m| uniform in [a, b]. For a sum the noise takes the sign of the total (m × top × sign(total)):
m is symmetric, so this changes nothing about its distribution, but `sum(x)` and `sum(0 - x)`
of the same cell are released as exact opposites instead of two draws whose difference is 2 × the
exact sum.

Why m is drawn per cell and part and not per measure: a draw that changed with the measure's
position or text would let a researcher ask `sum(x)` ten times in one query and average ten
independent noises away. The same contributors and the same part always give the same m.

**Parameters** (`MagnitudeParams`, defaults a = 0.5, b = 2.5), chosen for the property of DESIGN.md
§6 — the sign of the released difference of two cells that differ by one person (or by one of a
person's rows) agrees with the sign of the true difference in at most 73% of pairs (ε = 1):

* The released difference of A = B + {person x} is x + m_A·t_A − m_B·t_B with t_B ≤ t_A and
  x ≤ t_A. The hardest pair is the one where the person is the cell's largest contributor; with
  r = t_B / t_A, agreement is P(1 + m_A − r·m_B > 0), largest over r ∈ [0, 1] at r ≈ 1.
  For |m| uniform in [a, b] and b − a ≤ 1 this is 75% whatever a is (opposite signs decide and
  same signs never flip the difference): the spread b − a must exceed 1. With a = 0.5, b = 2.5
  the worst case over r is 69.4% (computed in tests/outputs/test_cellkey_property.py). Simulated
  over cells of 10–200 persons with 1–4 log-normal rows each: 54.8% when a random person is
  removed, 67.8% when the largest is, 51.5% for a random row (docs/sdc.md).
* The lower bound a keeps the noise from ever being negligible: a dominant person (r → 0, the
  (n,k) case) shows through only when m_A > −1, i.e. with probability 0.5 + 0.5·P(|m| < 1) =
  62.5%. With a = 0 (|m| uniform in [0, 2.5]) it would be 70%, and a multiplier near 0 would
  leave the dominant contribution nearly unmasked.
* The price: the noise is on average 1.5 × the largest contribution (at most 2.5 ×). For a cell of
  100 similar persons that is a few percent of the total; for a dominated cell it is the size of
  the dominant contribution, which is the point.

`avg`, `variance` and `stddev` are computed from perturbed parts only (`avg`, `variance`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from outputs.ptable import PTable

KEY_MOD = 256
KEY2_MOD = 1 << 32

# Parts perturbed by the magnitude method, each with its own 21 bits of the mixed ckey2.
ROWS, SUM, SUMSQ = 0, 1, 2
M64 = (1 << 64) - 1
U21 = 1.0 / (1 << 21)


@dataclass(frozen=True)
class MagnitudeParams:
    a: float = 0.5      # smallest |multiplier|
    b: float = 2.5      # largest |multiplier|

    def __post_init__(self):
        if not 0 < self.a <= self.b:
            raise ValueError("magnitude multipliers need 0 < a <= b")


def record_keys(person_id: str, secret: bytes) -> tuple[int, int]:
    """A person's record keys (rkey 0…255, rkey2 0…2³²−1): the first five bytes of
    HMAC-SHA256(secret, person_id). The same person has the same keys in every dataset."""
    digest = hmac.new(secret, person_id.encode(), hashlib.sha256).digest()
    return digest[0], int.from_bytes(digest[1:5], "big")


def row_key(person_id: str, row: bytes, secret: bytes) -> int:
    """A row's 32-bit key for ckey2: HMAC-SHA256(secret, person_id NUL row) where `row` is a
    canonical encoding of the row's stored values (the engine's choice; stable for an unchanged row).
    With one row per person, use the person's rkey2 instead."""
    digest = hmac.new(secret, person_id.encode() + b"\0" + row, hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


def cell_key(rkeys) -> int:
    """ckey: the sum of the cell's contributors' record keys (one per person) mod 256."""
    return sum(rkeys) % KEY_MOD


def cell_key2(row_keys) -> int:
    """ckey2: the sum of the cell's row keys mod 2³²."""
    return sum(row_keys) % KEY2_MOD


def perturb_frequency(value: int, ckey: int, table: PTable) -> int:
    """The ONS cell key method: value + the p-table's perturbation at (min(value, max_row), ckey)."""
    if value < 0 or not 0 <= ckey < KEY_MOD:
        raise ValueError("a frequency is at least 0 and a cell key in 0…255")
    lookup = table.lookup
    return value + lookup[value if value < len(lookup) else -1][ckey]


def mix(ckey2: int) -> int:
    """splitmix64's finaliser of ckey2: 64 well-mixed bits."""
    z = (ckey2 + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(ckey2: int, part: int) -> float:
    """A uniform in [0, 1) (steps of 2⁻²¹) from ckey2: bits 21·part … 21·part + 20 of mix(ckey2)."""
    return ((mix(ckey2) >> (21 * part)) & 0x1FFFFF) * U21


def multiplier(ckey2: int, part: int, params: MagnitudeParams = MagnitudeParams()) -> float:
    """m: a random sign, |m| uniform in [a, b], both from one uniform of (ckey2, part)."""
    u = uniform(ckey2, part) * 2.0
    if u < 1.0:
        return -(params.a + (params.b - params.a) * u)
    return params.a + (params.b - params.a) * (u - 1.0)


def perturb_magnitude(total: float, top: float, ckey2: int, part: int = SUM,
                      params: MagnitudeParams = MagnitudeParams()) -> float:
    """total + m × |top|, the noise oriented by the sign of the total (see the module docstring)."""
    noise = multiplier(ckey2, part, params) * abs(top)
    return total - noise if total < 0 else total + noise


def perturb_rows(n_rows: int, rows_max: int, ckey2: int,
                 params: MagnitudeParams = MagnitudeParams()) -> int:
    """A row count over many rows per person (a sum of per-person row counts), rounded, at least 0."""
    return max(0, round(n_rows + multiplier(ckey2, ROWS, params) * rows_max))


def avg(total: float | None, count: float | None) -> float | None:
    """Perturbed sum ÷ perturbed count; withheld (None) when a part is withheld or count ≤ 0."""
    if total is None or count is None or count <= 0:
        return None
    return total / count


def variance(total: float | None, sumsq: float | None, count: float | None) -> float | None:
    """The sample variance from perturbed parts: (Σx² − (Σx)²/n) / (n − 1), at least 0; withheld
    when a part is withheld or n ≤ 1."""
    if total is None or sumsq is None or count is None or count <= 1:
        return None
    return max(0.0, (sumsq - total * total / count) / (count - 1))


def stddev(total: float | None, sumsq: float | None, count: float | None) -> float | None:
    value = variance(total, sumsq, count)
    return None if value is None else math.sqrt(value)


def round_significant(value: int, figures: int = 2) -> int:
    """An integer rounded half up to `figures` significant figures (0 stays 0)."""
    if value <= 0:
        return 0
    step = 10 ** max(0, len(str(value)) - figures)
    return (value + step // 2) // step * step
