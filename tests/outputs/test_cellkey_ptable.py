"""The p-table of the cell key method (outputs/ptable.py) and the frequency method against the ONS
`cell-key-perturbation` package (3.1.0, pinned in requirements-dev.txt) on the same record keys and
p-table."""

import contextlib
import io
import math
import random
import warnings

import pytest

from outputs import ptable
from outputs.cellkey import cell_key, perturb_frequency

DEFAULT = ptable.get()
PARAMS = [(3, 2, 10), (5, 3, 10), (3, 1, 5), (2, 1, 10), (4, 2, 20), (3, 2, 1)]


def moments(row):
    keys = [v for v, _, n in row for _ in range(n)]
    mean = sum(keys) / ptable.KEYS
    return mean, sum(v * v for v in keys) / ptable.KEYS


def test_the_stored_table_is_what_the_documented_method_produces():
    stored = (ptable.DATA / "ptable_D3_V2_T10.csv").read_text()
    assert ptable.build(3, 2, 10).to_csv() == stored
    assert DEFAULT.lookup == ptable.build().lookup
    assert (DEFAULT.D, DEFAULT.V, DEFAULT.threshold, DEFAULT.max_row) == (3, 2, 10, 13)


@pytest.mark.parametrize(("D", "V", "threshold"), PARAMS)
def test_rows_are_distributions_over_256_keys(D, V, threshold):
    table = ptable.build(D, V, threshold)
    for i, row in enumerate(table.rows):
        assert math.isclose(sum(p for _, p, _ in row), 1.0, abs_tol=1e-12), i
        assert sum(n for _, _, n in row) == ptable.KEYS, i
        assert all(p >= 0 and n >= 0 for _, p, n in row)
        assert len(table.lookup[i]) == ptable.KEYS
        assert list(table.lookup[i]) == sorted(table.lookup[i])      # keys in ascending order of v


@pytest.mark.parametrize(("D", "V", "threshold"), PARAMS)
def test_every_row_is_unbiased_exactly_on_the_256_keys(D, V, threshold):
    table = ptable.build(D, V, threshold)
    for i, row in enumerate(table.rows):
        assert moments(row)[0] == 0, i                                  # exact: integer counts
        assert abs(sum(p * v for v, p, _ in row)) < 1e-9, i


@pytest.mark.parametrize(("D", "V", "threshold"), PARAMS)
def test_no_released_value_between_1_and_threshold_minus_1(D, V, threshold):
    table = ptable.build(D, V, threshold)
    for value in range(0, 3 * (threshold + D)):
        for ckey in range(ptable.KEYS):
            released = value + table.perturbation(value, ckey)
            assert released == 0 or released >= threshold, (value, ckey)
            assert released >= 0


@pytest.mark.parametrize(("D", "V", "threshold"), PARAMS)
def test_perturbation_is_at_most_D_from_the_threshold_on_and_bounded_below_it(D, V, threshold):
    table = ptable.build(D, V, threshold)
    for i, row in enumerate(table.rows):
        worst = max(abs(v) for v, _, n in row if n)
        if i >= threshold:
            assert worst <= D, i
        else:   # small rows: withheld (0) or released at threshold … threshold + D − 1 (docstring)
            assert {i + v for v, _, n in row if n} <= {0, *range(threshold, threshold + D)}
            assert worst <= threshold + D - 2


@pytest.mark.parametrize(("D", "V", "threshold"), PARAMS)
def test_variance_is_V_where_feasible_and_never_above_it_from_the_threshold_on(D, V, threshold):
    table = ptable.build(D, V, threshold)
    for i, row in enumerate(table.rows):
        p_var = sum(p * v * v for v, p, _ in row)
        key_var = moments(row)[1]
        if i == 0 or (i == threshold and threshold > D):
            assert key_var == 0                                         # cannot move
        elif i >= threshold + 2:
            assert math.isclose(p_var, V, abs_tol=1e-9), i              # binding
            assert abs(key_var - V) <= 0.05, i                          # quantised to 1/256
        elif i >= threshold:
            assert p_var <= V + 1e-9 and key_var <= V + 0.05, i         # cut row: at most V
        else:
            assert key_var >= i * (threshold - i) - 1e-9, i             # small rows: infeasible


def test_the_default_rows_as_documented():
    assert DEFAULT.rows[10] == ((0, 1.0, 256),)                         # exactly 10: unperturbed
    assert round(sum(p * v * v for v, p, _ in DEFAULT.rows[11]), 2) == 1.37
    released = [sum(n for v, _, n in DEFAULT.rows[i] if i + v > 0) / 256 for i in range(1, 10)]
    assert released == sorted(released)                                 # rises with the count
    assert 0.05 < released[0] < 0.15 and 0.75 < released[-1] < 0.9
    large = DEFAULT.rows[13]
    assert [v for v, _, _ in large] == [-3, -2, -1, 0, 1, 2, 3]
    assert all(DEFAULT.perturbation(value, k) == DEFAULT.perturbation(13, k)
               for value in (14, 100, 10**9) for k in range(256))


def test_maximum_entropy_matches_an_independent_solver():
    scipy_optimize = pytest.importorskip("scipy.optimize")   # scipy comes with acro (pinned)
    for row in DEFAULT.rows[11:]:
        v = [x for x, _, _ in row]
        cons = [{"type": "eq", "fun": lambda p: sum(p) - 1},
                {"type": "eq", "fun": lambda p, v=v: sum(pi * x for pi, x in zip(p, v, strict=False))},
                {"type": "ineq", "fun": lambda p, v=v: 2 - sum(pi * x * x for pi, x in zip(p, v, strict=False))}]
        result = scipy_optimize.minimize(lambda p: sum(pi * math.log(pi) for pi in p),
                                         [1 / len(v)] * len(v), constraints=cons,
                                         bounds=[(1e-12, 1)] * len(v), method="SLSQP",
                                         options={"ftol": 1e-13, "maxiter": 500})
        assert result.success
        assert all(abs(a - p) < 1e-4 for a, (_, p, _) in zip(result.x, row, strict=False)), (v, result.x)


def test_infeasible_parameters_are_refused():
    with pytest.raises(ValueError):
        ptable.build(2, 5, 10)           # a variance of 5 with |v| <= 2
    with pytest.raises(ValueError):
        ptable.build(0, 1, 10)


# Against the ONS package ------------------------------------------------------------------------


def microdata(rng, persons, small_cells=True):
    """Persons with ONS-style record keys 0…255, cross-classified by two variables; some cells
    small (1 … 12 persons), some large, some empty."""
    rows = []
    sizes = {}
    for a in "ABCDEFGH":
        for b in range(12):
            roll = rng.random()
            sizes[a, b] = (0 if roll < 0.1 else rng.randint(1, 14) if roll < 0.6 and small_cells
                           else rng.randint(15, persons))
    for (a, b), size in sizes.items():
        rows += [(a, b, rng.randrange(256)) for _ in range(size)]
    return rows


def ons_table(rows, table, threshold):
    import cell_key_perturbation
    import pandas as pd
    from cell_key_perturbation.create_perturbed_table import create_perturbed_table

    assert cell_key_perturbation.__version__ == "3.1.0"
    data = pd.DataFrame(rows, columns=["var_a", "var_b", "record_key"])
    ptable_df = pd.DataFrame(table.to_ons(), columns=["pcv", "ckey", "pvalue"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        out = create_perturbed_table(data=data, ptable=ptable_df, geog=[], tab_vars=["var_a", "var_b"],
                                     record_key="record_key", threshold=threshold)
    return {(r.var_a, int(r.var_b)): (None if pd.isna(r.count) else int(r.count), int(r.ckey))
            for r in out.itertuples()}


def ours(rows, table, threshold):
    cells = {}
    for a, b, rkey in rows:
        cells.setdefault((a, b), []).append(rkey)
    out = {}
    for key, keys in cells.items():
        ckey = cell_key(keys)
        released = perturb_frequency(len(keys), ckey, table)
        out[key] = (released if released >= threshold else None, ckey)
    return out


@pytest.mark.parametrize(("seed", "largest"), [(1, 60), (2, 400), (3, 2000)])
def test_frequencies_agree_cell_for_cell_with_the_ons_package(seed, largest):
    rng = random.Random(seed)
    rows = microdata(rng, largest)
    theirs = ons_table(rows, DEFAULT, 10)
    mine = ours(rows, DEFAULT, 10)
    populated = {key: value for key, value in theirs.items() if key in mine}
    assert populated == mine                     # same cell keys, same released counts or NA
    assert all(value == (None, 0) for key, value in theirs.items() if key not in mine)  # empty: NA
    released = [count for count, _ in mine.values() if count is not None]
    assert len(released) > 20
    perturbed = sum(1 for key, (count, _) in mine.items()
                    if count is not None and count != sum(1 for r in rows if (r[0], r[1]) == key))
    assert perturbed > len(released) // 3


def test_ons_package_values_above_750_reuse_rows_that_equal_our_large_row():
    """The ONS package maps a value above 750 to ((value − 1) mod 250) + 501; ours uses
    min(value, max_row). Every row from max_row on is the same, so the two agree."""
    rng = random.Random(9)
    rows = [("A", b, rng.randrange(256)) for b in range(3) for _ in range(rng.randint(751, 1300))]
    assert ons_table(rows, DEFAULT, 10) == ours(rows, DEFAULT, 10)
