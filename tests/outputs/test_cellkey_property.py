"""The perturbation property of DESIGN.md §6, measured (figures in docs/sdc.md):

over at least 1,000 pairs of cells that differ by exactly one person (or one of a person's rows),
the sign of the released difference agrees with the sign of the true difference in at most 73% of
pairs, for frequencies and magnitudes; the released value is not the true value plus a constant;
and the averaging attack's cost at the default parameters.

Pairs are simulated with independent record keys and realistic contributions: cells of 10 … 300
persons, 1 … 4 rows a person, log-normal row values (median 55, a long right tail). Seeds are fixed,
so the figures below are exact for this code and only move if the method or its parameters do.
"""

import math
import random
import statistics

import pytest

from outputs import ptable
from outputs.cellkey import SUM, MagnitudeParams, multiplier, perturb_frequency, perturb_magnitude

TABLE = ptable.get()
M32 = 1 << 32
PAIRS = 4000
BOUND = 0.73                     # e / (1 + e): the distinguishing advantage of epsilon = 1


def frequency_pairs(rng, pairs, smallest=10, largest=300):
    """(released A, released B, true difference) for A = B + one person, independent keys."""
    out = []
    for _ in range(pairs):
        n, ckey, rkey = rng.randint(smallest, largest), rng.randrange(256), rng.randrange(256)
        released_a = perturb_frequency(n + 1, (ckey + rkey) % 256, TABLE)
        released_b = perturb_frequency(n, ckey, TABLE)
        out.append((released_a, released_b, 1, n))
    return out


def agreement(pairs):
    return sum((a - b > 0) == (true > 0) for a, b, true, *_ in pairs) / len(pairs)


def test_frequencies_one_person_apart_agree_in_direction_in_at_most_73_percent():
    pairs = frequency_pairs(random.Random(1), PAIRS)
    share = agreement(pairs)
    assert share <= BOUND
    assert 0.57 <= share <= 0.62        # measured: 60.0%; about 1/2 + P(v_A = v_B)/2 in theory


def test_frequencies_around_the_threshold_agree_even_less_once_withheld_cells_are_null():
    pairs = frequency_pairs(random.Random(2), PAIRS, smallest=1, largest=30)
    shown = [(a if a >= 10 else 0, b if b >= 10 else 0, true) for a, b, true, _ in pairs]
    assert agreement(shown) <= 0.55     # measured: 50.7%


def test_frequencies_have_no_fixed_offset():
    pairs = frequency_pairs(random.Random(3), PAIRS, smallest=13)
    offsets = [b - n for _, b, _, n in pairs]
    assert set(offsets) == {-3, -2, -1, 0, 1, 2, 3}
    assert abs(statistics.fmean(offsets)) < 0.1 and abs(statistics.pvariance(offsets) - 2) < 0.15
    paired = [(a - n - 1, b - n) for a, b, _, n in pairs]       # the two cells' noises: unrelated
    assert abs(statistics.correlation(*zip(*paired))) < 0.05


# Magnitudes --------------------------------------------------------------------------------------


def population(rng, n):
    """n persons: (row values, row keys). ckey2 is the sum of row keys (outputs/cellkey.py)."""
    persons = []
    for _ in range(n):
        rows = rng.randint(1, 4)
        persons.append(([rng.lognormvariate(4, 1) for _ in range(rows)],
                        [rng.randrange(M32) for _ in range(rows)]))
    return persons


def released_sum(persons, params=MagnitudeParams()):
    total = sum(sum(values) for values, _ in persons)
    top = max(sum(values) for values, _ in persons)
    ckey2 = sum(sum(keys) for _, keys in persons) % M32
    return perturb_magnitude(total, top, ckey2, SUM, params), total


def without(persons, who, row=None):
    if row is None or len(persons[who][0]) == 1:
        return persons[:who] + persons[who + 1:]
    values, keys = persons[who]
    return persons[:who] + [(values[:row] + values[row + 1:], keys[:row] + keys[row + 1:])] + persons[who + 1:]


def magnitude_pairs(rng, pairs, pick, params=MagnitudeParams()):
    out = []
    for _ in range(pairs):
        persons = population(rng, rng.randint(10, 200))
        released_a, true_a = released_sum(persons, params)
        released_b, true_b = released_sum(pick(rng, persons), params)
        out.append((released_a, released_b, true_a - true_b, true_b))
    return out


def random_person(rng, persons):
    return without(persons, rng.randrange(len(persons)))


def largest_person(rng, persons):
    return without(persons, max(range(len(persons)), key=lambda p: sum(persons[p][0])))


def random_row(rng, persons):
    who = rng.randrange(len(persons))
    return without(persons, who, rng.randrange(len(persons[who][0])))


def row_of_largest(rng, persons):
    who = max(range(len(persons)), key=lambda p: sum(persons[p][0]))
    return without(persons, who, rng.randrange(len(persons[who][0])))


@pytest.mark.parametrize(("pick", "measured"), [
    (random_person, (0.52, 0.59)),       # measured: 54.8%
    (largest_person, (0.65, 0.71)),      # measured: 67.8%: the hardest pair
    (random_row, (0.49, 0.56)),          # measured: 51.5%
    (row_of_largest, (0.53, 0.60)),      # measured: 56.0%
])
def test_magnitudes_one_person_or_row_apart_agree_in_direction_in_at_most_73_percent(pick, measured):
    share = agreement(magnitude_pairs(random.Random(4), 1000, pick))
    assert share <= BOUND
    assert measured[0] <= share <= measured[1]


def test_the_worst_pair_for_the_default_multipliers_is_under_the_bound():
    """A = B + the largest person, r = top(B) / top(A): agreement is P(1 + m_A − r·m_B > 0),
    computed exactly over a fine grid of the two uniforms (the figures of cellkey's docstring)."""
    def worst(params, grid=200):
        us = [(k + 0.5) / grid for k in range(grid)]
        ms = [(-(params.a + (params.b - params.a) * 2 * u) if u < 0.5
               else params.a + (params.b - params.a) * (2 * u - 1)) for u in us]
        return max(sum(1 + ma - r * mb > 0 for ma in ms for mb in ms) / grid ** 2
                   for r in [k / 20 for k in range(21)])
    assert 0.69 <= worst(MagnitudeParams()) <= 0.70                     # 69.4%
    assert worst(MagnitudeParams(0.5, 1.5)) >= 0.74                      # b − a <= 1: 75%
    assert worst(MagnitudeParams(1.0, 2.0)) >= 0.74


def test_magnitudes_have_no_fixed_offset_and_a_bounded_noise():
    rng = random.Random(5)
    ratios = []
    for _ in range(2000):
        persons = population(rng, rng.randint(10, 100))
        released, total = released_sum(persons)
        top = max(sum(values) for values, _ in persons)
        ratios.append((released - total) / top)
    assert all(0.5 - 1e-9 <= abs(r) <= 2.5 + 1e-9 for r in ratios)    # a <= |m| <= b
    assert abs(statistics.fmean(ratios)) < 0.1                         # unbiased
    assert len({round(r, 4) for r in ratios}) > 0.95 * len(ratios)     # no constant to learn
    negative = sum(r < 0 for r in ratios) / len(ratios)
    assert 0.45 < negative < 0.55


def test_the_multiplier_is_uniform_in_its_two_bands():
    rng = random.Random(6)
    ms = [multiplier(rng.randrange(M32), SUM) for _ in range(20000)]
    for lo, hi in [(-2.5, -1.5), (-1.5, -0.5), (0.5, 1.5), (1.5, 2.5)]:
        assert abs(sum(lo <= m < hi for m in ms) / len(ms) - 0.25) < 0.015


# The averaging attack ----------------------------------------------------------------------------


def pairs_to_recover(rng, confidence=0.9, campaigns=2000):
    """The smallest number k of differently padded pairs (P_j + target, P_j), P_j of 20 … 200
    persons, for which the mean released difference is above 1/2 — the attacker concludes
    "the target is in the cell", the true difference being 1 — in `confidence` of campaigns."""
    def success(k):
        wins = 0
        for _ in range(campaigns):
            total = 0
            for _ in range(k):
                n, ckey, rkey = rng.randint(20, 200), rng.randrange(256), rng.randrange(256)
                total += perturb_frequency(n + 1, (ckey + rkey) % 256, TABLE) - perturb_frequency(n, ckey, TABLE)
            wins += total / k > 0.5
        return wins / campaigns
    lo, hi = 1, 64
    while lo < hi:
        mid = (lo + hi) // 2
        if success(mid) >= confidence:
            hi = mid
        else:
            lo = mid + 1
    return lo


def test_averaging_away_the_count_noise_takes_dozens_of_padded_pairs():
    """DESIGN.md §6 says 20–32 pairs at variance 2. Measured here (90% of 2,000 campaigns): 29
    (80%: 15, 95%: 49);
    theory: (1.2816 × sd(v_A − v_B) / 0.5)² = (1.2816 × 2 / 0.5)² ≈ 26. The differencing ledger
    shows each such pair to checkers; only the DP tier bounds this formally."""
    k = pairs_to_recover(random.Random(7))
    assert 22 <= k <= 32, k
    assert math.isclose(k, (1.2816 * 2 / 0.5) ** 2, rel_tol=0.2)
