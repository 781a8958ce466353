"""Our threshold, (n, k) dominance, p% and rounding against ACRO's definitions (docs/sdc.md).

ACRO (the SACRO project's `acro` package, checked against release 1.0.2) is not a dependency:
it pulls in pandas, statsmodels, scipy and matplotlib. The functions below restate its
definitions (acro/sdcchecks.py, acro/sdc_agg_funcs.py, acro/table_utils.py) over the values
of one cell; the last test runs ACRO itself where it is installed.
"""

import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outputs.sdc import SdcParams

from .test_sdc import ONE_SUM, run

# ACRO 1.0.2, one cell: `values` are the contributions (ACRO: records; here: persons).


def acro_threshold(values, threshold):
    return len(values) < threshold                              # check_min_threshold


def acro_nk(values, n, k):
    total = sum(values)                                         # check_nk_dominance: NaN >= k
    return total != 0 and sum(sorted(values, reverse=True)[:n]) / total >= k   # is False


def acro_p_percent(values, p):
    top = sorted(values, reverse=True)                          # check_ppercent_dominance
    sub_total = sum(values) - sum(top[:2])
    p_val = sub_total if top[0] == 0 else sub_total / top[0]
    return p_val < p


def acro_round(value, base):
    return round(value / base) * base           # round_table; numpy and round() go half to even


def acro_rules(values, params):
    """ACRO also fails nk and p% on any cell holding a negative value, where we use absolute
    per-person totals (a deliberate difference, docs/sdc.md): values here are never negative."""
    if acro_threshold(values, params.threshold):
        return ["threshold"]
    return ([rule for rule, fired in (("nk_dominance", acro_nk(values, params.nk_n, params.nk_k)),
                                      ("p_percent", acro_p_percent(values, params.p_percent)))
             if fired])


def our_rules(values, params):
    top = sorted(values, reverse=True) + [0]
    rows = [("cell", len(values), sum(values), len(values), top[0], top[1], sum(values))]
    return run(ONE_SUM, rows, params).flags[0].get("cost", [])


ACRO_DEFAULTS = SdcParams(zeros_disclosive=True)               # ACRO: zeros_are_disclosive: True

SHARED_CASES = [                                               # (values, rules fired in both)
    ([10] * 10, []),
    ([10] * 9, ["threshold"]),
    ([1000] + [1] * 11, ["nk_dominance", "p_percent"]),
    ([50, 40] + [1] * 10, ["nk_dominance"]),                   # exactly k = 0.9
    ([50, 39] + [1] * 11, []),                                 # 0.89
    ([500, 450] + [5] * 10, ["nk_dominance"]),                 # p: 50 / 500 = 0.1, not below
    ([500, 450] + [5] * 9 + [4], ["nk_dominance", "p_percent"]),   # p: 49 / 500
    ([0] * 12, ["p_percent"]),                                 # zeros are disclosive
    ([0] * 11 + [7], ["nk_dominance", "p_percent"]),
]


@pytest.mark.parametrize(("values", "expected"), SHARED_CASES)
def test_shared_cases_agree_with_acro(values, expected):
    assert acro_rules(values, ACRO_DEFAULTS) == expected
    assert our_rules(values, ACRO_DEFAULTS) == expected


def test_by_default_an_all_zero_cell_is_released_where_acro_would_suppress_it():
    assert acro_rules([0] * 12, SdcParams()) == ["p_percent"]
    assert our_rules([0] * 12, SdcParams()) == []


@settings(max_examples=500, deadline=None)
@given(values=st.lists(st.integers(0, 1000), min_size=1, max_size=25),
       threshold=st.integers(1, 15), nk_n=st.sampled_from([1, 2]),
       nk_k=st.sampled_from([0.5, 0.75, 0.9, 1.0]), p=st.sampled_from([0.05, 0.1, 0.5]),
       zeros_disclosive=st.booleans())
def test_rules_agree_with_acro_on_generated_cells(values, threshold, nk_n, nk_k, p,
                                                  zeros_disclosive):
    params = SdcParams(threshold, 5, nk_n, nk_k, p, zeros_disclosive)
    expected = acro_rules(values, params)
    if not zeros_disclosive and not any(values) and expected != ["threshold"]:
        expected = []                                          # the one deliberate difference
    assert our_rules(values, params) == expected


@given(st.integers(0, 10**6), st.sampled_from([1, 3, 5, 7]))
def test_rounding_agrees_with_acro_for_odd_bases(count, base):
    rows = [("cell", count, 100)]
    assert run(ONE_SUM[:2], rows, SdcParams(rounding_base=base)).safe[0][1] == acro_round(count,
                                                                                          base)


def test_rounding_differs_from_acro_only_on_ties_of_even_bases():
    rounded = run(ONE_SUM[:2], [("a", 25, 100), ("b", 35, 100), ("c", 24, 100)],
                  SdcParams(rounding_base=10)).safe
    assert [row[1] for row in rounded] == [30, 40, 20]        # half up
    assert [acro_round(v, 10) for v in (25, 35, 24)] == [20, 40, 20]   # half to even


def test_acro_itself_agrees_on_random_tables(tmp_path, monkeypatch):
    """Against the real `acro` package (pinned in requirements-dev.txt): a missing install fails."""
    import acro
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    rng = random.Random(6)
    shapes = [lambda size: [rng.randint(1, 20) for _ in range(size)],
              lambda size: [rng.randint(500, 1000)] + [rng.randint(0, 5) for _ in range(size - 1)],
              lambda size: [rng.randint(300, 400), rng.randint(300, 400)]
              + [rng.randint(0, 10) for _ in range(size - 2)],
              lambda size: [0] * size]
    shared = {("shared", f"case{i}"): values for i, (values, _) in enumerate(SHARED_CASES)}
    tables = [shared] + [{(g, h): rng.choice(shapes)(rng.choice([5, 9, 10, 11, 15]))
                          for g in "AB" for h in "xyz"} for _ in range(25)]
    for cells in tables:
        records = pd.DataFrame([(g, h, v) for (g, h), values in cells.items() for v in values],
                               columns=["g", "h", "v"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = acro.ACRO(suppress=True)
            session.crosstab(records.g, records.h, values=records.v, aggfunc="sum")
        output = list(session.results.results.values())[-1]
        labels = output.outcome
        fired = {cell: set() for cell in cells}
        for check, rule in (("MinimumThresholdCheck", "threshold"), ("NKCheck", "nk_dominance"),
                            ("PPercentCheck", "p_percent")):
            for row, col in output.sdc["cells"][check]:
                fired[labels.index[row], labels.columns[col]].add(rule)
        for cell, values in cells.items():
            theirs = {"threshold"} if "threshold" in fired[cell] else fired[cell]
            assert set(our_rules(values, ACRO_DEFAULTS)) == theirs, (cell, values)
