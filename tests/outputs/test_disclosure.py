"""Disclosure control v2 (outputs/disclosure.py): the rules of DESIGN.md §6 on hand-built grids, and
their invariants under hypothesis."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outputs import ptable
from outputs.cellkey import ROWS, SUM, SUMSQ, multiplier, perturb_frequency, perturb_magnitude
from outputs.disclosure import (
    RULES,
    DisclosureParams,
    Grid,
    Statistic,
    apply_disclosure,
    perturb_dataset_count,
)

TABLE = ptable.get()
STATS = (Statistic("n", "count_persons"), Statistic("visits", "count_rows"), Statistic("cost", "sum", 0),
         Statistic("mean_cost", "avg", 0), Statistic("sd_cost", "stddev", 0), Statistic("var_cost", "variance", 0))


def make_cell(key, values, ckey=0, ckey2=0, rows_per_person=None):
    """A populated cell from per-person lists of row values (None: a null measure)."""
    rows_per_person = rows_per_person or [len(v) for v in values]
    sums = [sum(x for x in v if x is not None) for v in values]
    squares = [sum(x * x for x in v if x is not None) for v in values]
    tops = sorted((abs(s) for s in sums), reverse=True) + [0, 0]
    non_null = sum(1 for v in values for x in v if x is not None)
    return {"key": key, "n_persons": len(values), "ckey": ckey, "ckey2": ckey2,
            "n_rows": sum(rows_per_person), "rows_max": max(rows_per_person),
            "m0_n": non_null, "m0_sum": sum(sums) if non_null else None,
            "m0_sumsq": sum(squares) if non_null else None, "m0_top1": tops[0], "m0_top2": tops[1],
            "m0_sqtop1": max(squares)}


def one_row(values):
    return [[v] for v in values]


def ckey_for(value, released_at_least_threshold):
    """A cell key under which `value` is released (True) or withheld (False)."""
    for ckey in range(256):
        if (perturb_frequency(value, ckey, TABLE) >= 10) == released_at_least_threshold:
            return ckey
    raise AssertionError


REGION = Grid(("region",), (("E", "N", "S", "W"),), STATS)


def test_a_worked_grid_one_row_per_person():
    grid = Grid(("region",), (("E", "N", "S", "W"),), STATS, one_row_per_person=True)
    values = [10.0 * (i + 1) for i in range(20)]                    # 10, 20, …, 200: sum 2100
    cells = [make_cell(("N",), one_row(values), ckey=93, ckey2=7),
             make_cell(("S",), one_row(values[:9]), ckey=ckey_for(9, False), ckey2=8),
             make_cell(("W",), one_row(values[:9]), ckey=ckey_for(9, True), ckey2=9)]
    out = apply_disclosure(grid, cells)
    assert out.columns == ["region", "n", "visits", "cost", "mean_cost", "sd_cost", "var_cost"]
    assert [row[0] for row in out.safe] == ["E", "N", "S", "W"]   # the full grid, in domain order
    e, n, s, w = out.safe
    assert e == ("E",) + (None,) * 6                                  # empty: withheld
    assert s == ("S",) + (None,) * 6                                  # exact 9, perturbed to 0
    assert w[1] >= 10 and w[1] == w[2]                              # exact 9, released
    # N: 20 persons, ckey 93 -> perturbation 0 on the large row; magnitudes from ckey2 = 7
    count = perturb_frequency(20, 93, TABLE)
    total = 2100 + multiplier(7, SUM) * 200
    sumsq = sum(v * v for v in values) + multiplier(7, SUMSQ) * 200 ** 2
    assert n[1:3] == (count, count)
    assert n[3] == pytest.approx(total) and n[4] == pytest.approx(total / count)
    variance = max(0.0, (sumsq - total * total / count) / (count - 1))
    assert n[6] == pytest.approx(variance) and n[5] == pytest.approx(math.sqrt(variance))
    assert list(out.raw[1]) == ["N", 20, 20, 2100, 105, pytest.approx(59.16, abs=0.01),
                                pytest.approx(3500.0), 20]                   # exact, + contributors
    assert out.raw[0] == ("E", 0, 0, None, None, None, None, 0)
    assert out.flags[0] == out.flags[2] == dict.fromkeys(["n", "visits", "cost", "mean_cost", "sd_cost",
                                                          "var_cost"], ("threshold",))
    assert out.flags[1] == {} and out.flags[3] == {}
    assert out.sdc["status"] == "suppressed"
    assert out.sdc["summary"] == {"threshold": 2, "nk_dominance": 0, "p_percent": 0, "differencing": 0}


def test_many_rows_per_person_uses_the_magnitude_method_for_row_counts():
    values = [[5.0, 6.0, 7.0]] * 12 + [[1.0]] * 8                  # 20 persons, 44 rows
    cell = make_cell(("N",), values, ckey=93, ckey2=99)
    out = apply_disclosure(REGION, [cell])
    row = out.safe[1]
    rows = max(0, round(44 + multiplier(99, ROWS) * 3))
    assert row[2] == rows and row[2] != 44
    assert row[4] == pytest.approx(perturb_magnitude(cell["m0_sum"], cell["m0_top1"], 99, SUM) / rows)


def test_the_inline_magnitude_perturbation_is_the_cellkey_one():
    rng = random.Random(3)
    cells = []
    for k in range(50):
        values = one_row([rng.uniform(-50, 500) for _ in range(rng.randint(12, 40))])
        cells.append(make_cell((k,), values, ckey=rng.randrange(256), ckey2=rng.randrange(2**32)))
    out = apply_disclosure(Grid(("k",), (tuple(range(50)),), STATS[2:3]), cells)
    for cell, row in zip(cells, out.safe, strict=False):
        assert row[1] == perturb_magnitude(cell["m0_sum"], cell["m0_top1"], cell["ckey2"], SUM)


def test_the_noise_scale_has_a_data_independent_floor_from_the_measure_bounds():
    """A sum's noise is m × max(top1, magnitude_floor × max(|lo|, |hi|)): a cell whose contributions are
    all 0 is released with noise, never exactly 0 (docs/sdc.md, "Zeros"); a cell whose top is above the
    floor is perturbed exactly as without it; variance uses floor × bound² for the sum of squares."""
    rng = random.Random(8)
    stats = (Statistic("s", "sum", 0, (0, 12)), Statistic("v", "variance", 0, (0, 12)))
    zeros, small, large = [], [], []
    for k in range(300):
        ckey2 = rng.randrange(2**32)
        zeros.append(make_cell((k,), one_row([0.0] * 30), ckey=ckey_for(30, True), ckey2=ckey2))
        small.append(make_cell((k,), one_row([0.0] * 29 + [1.0]), ckey=ckey_for(30, True), ckey2=ckey2))
        large.append(make_cell((k,), one_row([0.0] * 29 + [5.0]), ckey=ckey_for(30, True), ckey2=ckey2))
    grid = Grid(("k",), (tuple(range(300)),), stats, one_row_per_person=True)
    released = {name: apply_disclosure(grid, cells).safe for name, cells in
                (("zeros", zeros), ("small", small), ("large", large))}
    for row, cell in zip(released["zeros"], zeros, strict=True):
        m = multiplier(cell["ckey2"], SUM)
        assert row[1] == pytest.approx(m * 1.2) and abs(row[1]) >= 0.5 * 1.2 - 1e-9
    for row, cell in zip(released["small"], small, strict=True):
        assert row[1] == pytest.approx(perturb_magnitude(1.0, 1.0, cell["ckey2"], SUM, floor=1.2))
    for row, cell in zip(released["large"], large, strict=True):
        assert row[1] == perturb_magnitude(5.0, 5.0, cell["ckey2"], SUM)          # top above the floor
    assert all(row[1] != 0 for row in released["zeros"])
    assert all(row[2] is not None for row in released["zeros"])
    # without bounds (the old behaviour) the all-zero cell would be exactly 0
    bare = Grid(("k",), (tuple(range(300)),), (Statistic("s", "sum", 0),), one_row_per_person=True)
    assert {row[1] for row in apply_disclosure(bare, zeros).safe} == {0.0}
    # and a floor of 0 is allowed only as an explicit parameter
    assert {row[1] for row in apply_disclosure(grid, zeros, DisclosureParams(magnitude_floor=0)).safe} == {0.0}


def test_with_the_floor_all_zero_and_one_small_value_agree_in_direction_in_at_most_73_percent():
    """The pair an attacker builds with persons known to contribute 0: B all zero, A = B + one person
    with x in 1…12 (children, bound 12, floor 1.2). Over 2,000 pairs, the released difference's sign
    agrees with the true one in at most 73% (measured 62.7%; 62.2% for x = 1: x ≤ floor reads as r = 1, x > floor as
    r = floor / x; both within the analysis of outputs/cellkey.py)."""
    rng = random.Random(9)
    stats = (Statistic("s", "sum", 0, (0, 12)),)
    agree = 0
    pairs = 2000
    a_cells, b_cells = [], []
    for k in range(pairs):
        x = rng.randint(1, 12)
        n = rng.randint(10, 40)
        a_cells.append(make_cell((k,), one_row([0.0] * n + [float(x)]), ckey=ckey_for(30, True),
                                 ckey2=rng.randrange(2**32)))
        b_cells.append(make_cell((k,), one_row([0.0] * n), ckey=ckey_for(30, True), ckey2=rng.randrange(2**32)))
    grid = Grid(("k",), (tuple(range(pairs)),), stats, one_row_per_person=True)
    a_out, b_out = apply_disclosure(grid, a_cells).safe, apply_disclosure(grid, b_cells).safe
    agree = sum(a[1] - b[1] > 0 for a, b in zip(a_out, b_out, strict=True))
    assert agree / pairs <= 0.73


def test_a_measure_with_too_few_non_null_persons_is_withheld_on_its_perturbed_count():
    grid = Grid(("region",), (("N",),), STATS, one_row_per_person=True)
    values = one_row([1.0] * 3 + [None] * 17)                       # 20 persons, 3 with a value
    withheld = next(k for k in range(256) if perturb_frequency(3, k, TABLE) == 0
                    and perturb_frequency(20, k, TABLE) >= 10)
    out = apply_disclosure(grid, [make_cell(("N",), values, ckey=withheld)])
    assert out.safe[0][1] is not None and out.safe[0][3:] == (None,) * 4
    assert out.flags[0] == {name: ("threshold",) for name in ("cost", "mean_cost", "sd_cost", "var_cost")}
    # with many rows per person it takes the engine's m0_persons
    cell = make_cell(("N",), values, ckey=withheld) | {"m0_persons": 3}
    out = apply_disclosure(Grid(("region",), (("N",),), STATS), [cell])
    assert out.safe[0][3:] == (None,) * 4 and out.safe[0][1] is not None


def test_dominance_flags_on_exact_values_but_withholds_nothing():
    values = one_row([1000.0] + [1.0] * 19)                         # (n,k) and p% both fire
    out = apply_disclosure(REGION, [make_cell(("N",), values, ckey=3, ckey2=4)])
    assert all(v is not None for v in out.safe[1][1:])
    assert out.flags[1] == {name: ("nk_dominance", "p_percent")
                            for name in ("cost", "mean_cost", "sd_cost", "var_cost")}
    assert out.sdc["status"] == "review"
    assert out.sdc["summary"]["nk_dominance"] == out.sdc["summary"]["p_percent"] == 1
    # the noise is scaled to the dominant contribution: at least half of it
    assert abs(out.safe[1][3] - out.raw[1][3]) >= 500


def test_differencing_findings_flag_every_statistic_of_their_cells():
    cells = [make_cell(("N",), one_row([5.0] * 30), ckey=1, ckey2=2)]
    out = apply_disclosure(REGION, cells, findings=[("N",), ("W",)])
    assert out.flags[1] == {name: ("differencing",) for name in
                            ("n", "visits", "cost", "mean_cost", "sd_cost", "var_cost")}
    assert out.flags[3]["n"] == ("threshold", "differencing")
    assert out.sdc["status"] == "review" and out.sdc["summary"]["differencing"] == 2


def test_status_pass_when_nothing_fires_and_settings_record_every_parameter():
    grid = Grid((), (), STATS[:1])
    out = apply_disclosure(grid, [make_cell((), one_row([1.0] * 40), ckey=5)])
    assert out.sdc["status"] == "pass" and out.safe == [(perturb_frequency(40, 5, TABLE),)]
    assert out.sdc["settings"] == {"threshold": 10, "ckm_d": 3, "ckm_v": 2, "magnitude_a": 0.5,
                                   "magnitude_b": 2.5, "magnitude_floor": 0.1, "nk_n": 2, "nk_k": 0.9, "p_percent": 0.1,
                                   "ptable": "ptable_D3_V2_T10.csv",
                                   "ptable_method": "maximum entropy (ptable R package), ONS lookup",
                                   "one_row_per_person": False}


def test_deterministic_and_independent_of_the_order_of_the_cells():
    rng = random.Random(5)
    cells = [make_cell((r,), one_row([rng.uniform(0, 100) for _ in range(rng.randint(1, 30))]),
                       ckey=rng.randrange(256), ckey2=rng.randrange(2**32)) for r in "ENSW"]
    first = apply_disclosure(REGION, cells)
    second = apply_disclosure(REGION, list(reversed(cells)))
    assert (first.raw, first.safe, first.flags, first.sdc) == (second.raw, second.safe, second.flags, second.sdc)


def test_cells_outside_the_grid_or_repeated_are_refused():
    with pytest.raises(ValueError, match="outside the grid"):
        apply_disclosure(REGION, [make_cell(("X",), one_row([1.0] * 12))])
    with pytest.raises(ValueError, match="two cells"):
        apply_disclosure(REGION, [make_cell(("N",), one_row([1.0] * 12))] * 2)
    with pytest.raises(ValueError):
        Statistic("cost", "sum")                                    # a sum needs its measure
    with pytest.raises(ValueError):
        Grid(("n",), ((1,),), STATS)                                # a key named like a statistic


def test_parameters_from_settings_and_only_ever_stricter():
    class Settings:
        TRE_SDC_THRESHOLD, TRE_CKM_D, TRE_CKM_V, TRE_SDC_NK_K = 10, 3, 2, 0.8
    params = DisclosureParams.from_settings(Settings)
    assert params == DisclosureParams(nk_k=0.8)
    stricter = params.stricter(threshold=5, nk_k=0.95, ckm_v=3, magnitude_b=None)
    assert (stricter.threshold, stricter.nk_k, stricter.ckm_v, stricter.magnitude_b) == (10, 0.8, 3, 2.5)
    with pytest.raises(TypeError):
        params.stricter(rounding_base=5)
    with pytest.raises(ValueError):
        DisclosureParams(magnitude_a=0)


def test_the_project_settings_give_the_documented_defaults(settings):
    assert DisclosureParams.from_settings(settings) == DisclosureParams()


def test_a_stricter_threshold_builds_its_own_table():
    params = DisclosureParams(threshold=20)
    out = apply_disclosure(Grid((), (), STATS[:1]), [make_cell((), one_row([1.0] * 15), ckey=255)], params)
    assert out.safe[0][0] is None or out.safe[0][0] >= 20
    assert out.sdc["settings"]["ptable"] == "ptable_D3_V2_T20.csv"


@pytest.mark.parametrize(("count", "ckey", "shown"), [
    (0, 17, 0), (1234, 93, 1200), (1234, 0, 1200), (1249, 255, 1300), (98_765, 50, 99_000), (5, 0, 0),
])
def test_dataset_counts_are_perturbed_then_rounded_to_two_significant_figures(count, ckey, shown):
    assert perturb_dataset_count(count, ckey) == shown


def test_a_dataset_count_near_a_rounding_boundary_moves_with_the_persons_not_the_opt_out():
    """1,250 → 1,249 after one opt-out: rounding alone would always show 1,300 → 1,200. With the
    perturbation first, what is shown depends on the (new) cell key as much as on the count."""
    before = {perturb_dataset_count(1250, k) for k in range(256)}
    after = {perturb_dataset_count(1249, k) for k in range(256)}
    assert before == after == {1200, 1300}


# Invariants ------------------------------------------------------------------------------------

cell_strategy = st.builds(
    lambda persons, rows, value, ckey, ckey2: (persons, rows, value, ckey, ckey2),
    st.integers(1, 40), st.integers(1, 4), st.floats(-1e6, 1e6), st.integers(0, 255),
    st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(st.lists(cell_strategy, min_size=1, max_size=12), st.booleans(), st.integers(1, 25))
def test_nothing_is_released_for_a_cell_whose_perturbed_count_is_under_the_threshold(specs, one, threshold):
    params = DisclosureParams(threshold=threshold)
    table = params.table()
    cells = [make_cell((k,), [[value] * (1 if one else rows)] * persons, ckey, ckey2)
             for k, (persons, rows, value, ckey, ckey2) in enumerate(specs)]
    grid = Grid(("k",), (tuple(range(len(specs) + 2)),), STATS, one_row_per_person=one)
    out = apply_disclosure(grid, cells, params)
    for row, flags in zip(out.safe, out.flags, strict=False):
        k, released = row[0], row[1]
        assert released is None or released >= threshold            # never 1 … threshold − 1
        perturbed = perturb_frequency(specs[k][0], specs[k][3], table) if k < len(specs) else 0
        if perturbed < threshold:
            assert row[1:] == (None,) * len(STATS)
            assert set(flags.values()) == {("threshold",)}
        else:
            assert released == perturbed
            assert row[2] is not None and row[3] is not None
    assert set(out.sdc["summary"]) == set(RULES)
