"""The SDC rules of DESIGN.md §6 on hand-computed tables, and their invariants under hypothesis.

Rows are written as the query rewriter returns them: the user columns, n_persons, then the
top1/top2/total helper columns of each sum/avg column (see `result_columns`).
"""

from dataclasses import dataclass
from decimal import Decimal
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outputs.sdc import RULES, SdcParams, apply_sdc

# Helpers (also used by the other test_sdc_* modules) ----------------------------------------

DEFAULT_PARAMS = SdcParams()


@dataclass(frozen=True)
class Col:
    """Stands in for queries.sql.OutputColumn: apply_sdc only reads these attributes."""

    name: str
    kind: str
    top1: str | None = None
    top2: str | None = None
    total: str | None = None


def key(name):
    return Col(name, "key")


def count(name):
    return Col(name, "count")


def summed(name, kind="sum"):
    return Col(name, kind, f"{name}_top1", f"{name}_top2", f"{name}_total")


def result_columns(columns):
    helpers = [h for c in columns if c.kind in ("sum", "avg") for h in (c.top1, c.top2, c.total)]
    return [c.name for c in columns] + ["n_persons"] + helpers


def run(columns, rows, params=DEFAULT_PARAMS, differencing=()):
    return apply_sdc(columns, result_columns(columns), rows, params, differencing)


SUPPRESSING = {"threshold", "nk_dominance", "p_percent", "secondary"}


def suppressed_cells(result):
    return {(r, column) for r, cells in enumerate(result.flags)
            for column, rules in cells.items() if SUPPRESSING & set(rules)}


def no_rules(**fired):
    return dict.fromkeys(RULES, 0) | fired


# Threshold ------------------------------------------------------------------------------------

COST = [key("region"), count("n"), summed("cost"), Col("sd_age", "stat")]


def test_a_group_of_exactly_threshold_persons_is_released():
    result = run(COST, [("N", 10, 500.0, 2.5, 10, 60.0, 50.0, 500.0)])
    assert result.safe == [["N", 10, 500.0, 2.5, 10]]
    assert result.flags == [{}]
    assert (result.status, result.summary) == ("pass", no_rules())


def test_a_group_of_threshold_minus_one_persons_loses_every_statistic_but_keeps_its_keys():
    result = run(COST, [("S", 9, 450.0, 2.5, 9, 60.0, 50.0, 450.0)])
    assert result.raw == [["S", 9, 450.0, 2.5, 9]]
    assert result.safe == [["S", None, None, None, 9]]         # n_persons stays for checkers
    assert result.flags == [{"n": ["threshold"], "cost": ["threshold"], "sd_age": ["threshold"]}]
    assert (result.status, result.summary) == ("suppressed", no_rules(threshold=3))
    assert result.released_table() == (["region", "n", "cost", "sd_age"],
                                       [["S", None, None, None]])


@pytest.mark.parametrize(("persons", "released"), [(4, False), (5, True)])
def test_the_threshold_comes_from_the_parameters(persons, released):
    result = run([key("k"), count("n")], [("a", persons, persons)], SdcParams(threshold=5))
    assert (result.safe[0][1] is not None) == released


def test_without_grouping_columns_the_single_group_still_meets_the_threshold():
    columns = [count("n"), summed("cost")]
    assert run(columns, [(3, 30.0, 3, 10.0, 10.0, 30.0)]).safe == [[None, None, 3]]
    assert run(columns, [(30, 300.0, 30, 10.0, 10.0, 300.0)]).safe == [[30, 300.0, 30]]


# Rounding -------------------------------------------------------------------------------------


def test_every_count_including_count_distinct_is_rounded_to_the_nearest_five():
    columns = [key("age"), count("n"), count("n_drugs"), summed("cost"), summed("mean", "avg"),
               Col("median_age", "stat")]
    rows = [("0-9", 12, 2, 12.0, 1.2, 3.0, 12, 1.0, 1.0, 12.0, 1.0, 1.0, 12.0),
            ("10-19", 13, 7, 13.0, 1.3, 4.0, 13, 1.0, 1.0, 13.0, 1.0, 1.0, 13.0),
            ("20-29", 10, 0, 0.0, 0.0, 5.0, 10, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            ("30-39", 1003, 12, 1003.0, 1.0, 6.0, 1003, 1.0, 1.0, 1003.0, 1.0, 1.0, 1003.0)]
    result = run(columns, rows)
    assert result.safe == [["0-9", 10, 0, 12.0, 1.2, 3.0, 12],
                           ["10-19", 15, 5, 13.0, 1.3, 4.0, 13],
                           ["20-29", 10, 0, 0.0, 0.0, 5.0, 10],
                           ["30-39", 1005, 10, 1003.0, 1.0, 6.0, 1003]]
    assert (result.status, result.summary) == ("pass", no_rules())   # rounding is not a flag


def test_rounding_goes_half_up_with_an_even_base():
    rows = [(str(v), v, 50) for v in (5, 14, 15, 25)]
    result = run([key("k"), count("n_drugs")], rows, SdcParams(rounding_base=10))
    assert [row[1] for row in result.safe] == [10, 10, 20, 30]


# (n, k) dominance and p% ------------------------------------------------------------------------

ONE_SUM = [key("k"), count("n"), summed("cost")]


def dominance(top1, top2, total, params=DEFAULT_PARAMS, value=None):
    """Rules fired on the cost cell of a one-group table of 20 persons."""
    value = total if value is None else value
    result = run(ONE_SUM, [("a", 20, value, 20, top1, top2, total)], params)
    fired = result.flags[0].get("cost", [])
    assert (result.safe[0][2] is None) == bool(fired)
    assert result.safe[0][1] == 20                          # the count is left alone
    return fired


def test_a_single_dominant_contributor_fails_both_dominance_rules():
    # (950 + 5) / 1000 = 0.955 >= 0.9; (1000 - 950 - 5) / 950 = 0.047 < 0.1
    assert dominance(950, 5, 1000) == ["nk_dominance", "p_percent"]


def test_two_contributors_holding_exactly_k_of_the_total_fail_nk():
    assert dominance(50, 40, 100) == ["nk_dominance"]       # 0.9 >= 0.9; p: 10 / 50 = 0.2
    assert dominance(50, 39, 100) == []                     # 0.89


def test_nk_n_of_one_counts_only_the_largest_contributor():
    no_p = SdcParams(p_percent=0)                           # isolate nk
    assert dominance(85, 10, 100, no_p) == ["nk_dominance"]                 # n = 2: 0.95
    assert dominance(85, 10, 100, SdcParams(nk_n=1, p_percent=0)) == []     # n = 1: 0.85


def test_p_percent_boundary():
    lenient_nk = SdcParams(nk_k=1.0)                        # isolate p%
    assert dominance(1000, 0, 1100, lenient_nk) == []       # 100 / 1000 = 0.1, not < 0.1
    assert dominance(1000, 0, 1099, lenient_nk) == ["p_percent"]      # 0.099
    assert dominance(1000, 100, 1200, lenient_nk) == []     # (1200 - 1100) / 1000 = 0.1
    assert dominance(1000, 100, 1199, lenient_nk) == ["p_percent"]


def test_an_all_zero_cell_discloses_nothing_unless_the_dataset_says_zeros_are_disclosive():
    assert dominance(0, 0, 0) == []
    assert dominance(0, 0, 0, SdcParams(zeros_disclosive=True)) == ["p_percent"]


def test_a_null_sum_is_left_alone():
    rows = [("a", 20, None, 20, None, None, None)]
    result = run(ONE_SUM, rows, SdcParams(zeros_disclosive=True))
    assert result.safe == [["a", 20, None, 20]]
    assert (result.flags, result.status) == ([{}], "pass")


def test_dominance_works_on_absolute_per_person_totals():
    # A net -1000 made of one person's -950: dominated as much as +1000 would be.
    assert dominance(950, 5, 1000, value=-1000.0) == ["nk_dominance", "p_percent"]
    assert dominance(-950, -5, -1000, value=-1000.0) == ["nk_dominance", "p_percent"]
    # +50 and -45 net to 5; against the absolute total 160 neither rule fires
    # (against the net sum 5 they would: 95 / 5 is far above k).
    assert dominance(50, 45, 160, value=5.0) == []


def test_dominance_accepts_decimals_and_applies_to_means():
    assert dominance(Decimal("950.5"), Decimal("4.5"), Decimal("1000.0")) == ["nk_dominance",
                                                                               "p_percent"]
    columns = [key("k"), summed("mean_cost", "avg")]
    result = run(columns, [("a", 95.0, 20, 1900.0, 10.0, 2000.0)])
    assert result.flags == [{"mean_cost": ["nk_dominance", "p_percent"]}]


def test_only_sums_and_means_are_tested_for_dominance():
    columns = [key("k"), count("n"), Col("sd", "stat")]
    result = run(columns, [("a", 20, 3.0, 20)])
    assert (result.safe, result.status) == ([["a", 20, 3.0, 20]], "pass")


# Secondary suppression ------------------------------------------------------------------------


def test_one_dimension_the_smallest_other_group_covers_a_threshold_failure():
    rows = [("A", 40, 40), ("B", 8, 8), ("C", 15, 15), ("D", 12, 12)]
    result = run([key("region"), count("n")], rows)
    assert [row[1] for row in result.safe] == [40, None, 15, None]
    assert result.flags == [{}, {"n": ["threshold"]}, {}, {"n": ["secondary"]}]
    assert (result.status, result.summary) == ("suppressed", no_rules(threshold=1, secondary=1))


def test_secondary_suppression_is_per_statistic_column():
    rows = [("A", 40, 400.0, 40, 20.0, 15.0, 400.0),
            ("B", 12, 120.0, 12, 20.0, 15.0, 120.0),
            ("C", 25, 1000.0, 25, 900.0, 20.0, 1000.0),     # nk 0.92, p 80 / 900 = 0.089
            ("D", 30, 300.0, 30, 20.0, 15.0, 300.0)]
    result = run(ONE_SUM, rows)
    assert [row[1:3] for row in result.safe] == [[40, 400.0], [10, None], [25, None], [30, 300.0]]
    assert result.flags == [{}, {"cost": ["secondary"]},
                            {"cost": ["nk_dominance", "p_percent"]}, {}]
    assert result.summary == no_rules(nk_dominance=1, p_percent=1, secondary=1)


def test_secondary_suppression_prefers_a_group_holding_a_value_to_one_holding_null():
    rows = [("A", 40, 1000.0, 40, 950.0, 5.0, 1000.0),
            ("E", 11, None, 11, None, None, None),          # smallest, but NULL: hides nothing
            ("F", 20, 200.0, 20, 10.0, 10.0, 200.0)]
    result = run(ONE_SUM, rows)
    assert [row[2] for row in result.safe] == [None, None, None]
    assert result.flags[1:] == [{}, {"cost": ["secondary"]}]


def test_a_table_with_two_suppressed_cells_per_slice_needs_nothing_more():
    rows = [("A", 40, 40), ("B", 8, 8), ("C", 5, 5), ("D", 12, 12)]
    result = run([key("region"), count("n")], rows)
    assert result.summary == no_rules(threshold=2)


def test_two_dimensions_a_primary_cell_is_covered_in_its_row_and_its_column():
    # n_persons:   1   2   3           suppressed:  1   2   3
    #        A     3  11  50                  A   T   S   .
    #        B    12  13  60                  B   S   S   .
    #        C    70  80  90                  C   .   .   .
    # Column 1 slice {A1, B1, C1} takes B1 (12); row A takes A2 (11); row B, now holding only
    # B1, takes B2 (13); column 2 then holds A2 and B2: stable.
    n = {"A1": 3, "A2": 11, "A3": 50, "B1": 12, "B2": 13, "B3": 60, "C1": 70, "C2": 80, "C3": 90}
    rows = [(cell[0], cell[1], persons, persons) for cell, persons in n.items()]
    result = run([key("row"), key("col"), count("n")], rows)
    flags = {row[0] + row[1]: result.flags[r].get("n") for r, row in enumerate(result.raw)}
    assert flags == {"A1": ["threshold"], "A2": ["secondary"], "A3": None,
                     "B1": ["secondary"], "B2": ["secondary"], "B3": None,
                     "C1": None, "C2": None, "C3": None}
    assert result.safe[2] == ["A", "3", 50, 50]


def test_two_dimensions_suppression_repeats_until_stable():
    # n_persons:  N   S   E      Round 1 visits what FN unbalances: column N takes MN, row F
    #        F    5  20  30      takes FS (20 < 30). Round 2 visits what those unbalanced: column
    #        M   40  50  15      S (holding FS) takes MS; row M now holds MN and MS: balanced.
    n = {("F", "N"): 5, ("F", "S"): 20, ("F", "E"): 30,
         ("M", "N"): 40, ("M", "S"): 50, ("M", "E"): 15}
    rows = [(sex, region, persons, persons) for (sex, region), persons in n.items()]
    result = run([key("sex"), key("region"), count("n")], rows)
    assert [row[2] for row in result.safe] == [None, None, 30, None, None, 15]
    assert [f.get("n") for f in result.flags] == [["threshold"], ["secondary"], None,
                                                  ["secondary"], ["secondary"], None]
    assert result.summary == no_rules(threshold=1, secondary=3)


def test_worked_example_of_docs_sdc_md():
    rows = [("F", "N", 25, 5000.0, 25, 300.0, 250.0, 5000.0),
            ("F", "S", 7, 900.0, 7, 200.0, 150.0, 900.0),
            ("F", "E", 40, 2000.0, 40, 100.0, 90.0, 2000.0),
            ("M", "N", 31, 8000.0, 31, 7000.0, 200.0, 8000.0),
            ("M", "S", 18, 1500.0, 18, 300.0, 200.0, 1500.0),
            ("M", "E", 12, 1300.0, 12, 400.0, 300.0, 1300.0)]
    result = run([key("sex"), key("region"), count("n"), summed("cost")], rows)
    assert result.released_table() == (["sex", "region", "n", "cost"],
                                       [["F", "N", None, None], ["F", "S", None, None],
                                        ["F", "E", 40, 2000.0], ["M", "N", None, None],
                                        ["M", "S", None, None], ["M", "E", 10, 1300.0]])
    assert result.flags == [{"n": ["secondary"], "cost": ["secondary"]},
                            {"n": ["threshold"], "cost": ["threshold"]}, {},
                            {"n": ["secondary"], "cost": ["nk_dominance"]},
                            {"n": ["secondary"], "cost": ["secondary"]}, {}]
    assert (result.status, result.summary) == ("suppressed", no_rules(threshold=2, nk_dominance=1,
                                                                      secondary=5))


def test_a_slice_of_one_group_needs_no_partner():
    rows = [("F", "N", 5, 5), ("M", "S", 40, 40)]           # every slice holds a single group
    result = run([key("sex"), key("region"), count("n")], rows)
    assert result.summary == no_rules(threshold=1)


# Differencing, status, shape ------------------------------------------------------------------


def test_differencing_findings_send_the_output_to_review_and_flag_the_row_without_suppressing():
    rows = [("A", 40, 400.0, 40, 20.0, 15.0, 400.0), ("B", 30, 300.0, 30, 20.0, 15.0, 300.0)]
    finding = {"row": 1, "released_output": 7, "difference": 2}
    result = run(ONE_SUM, rows, differencing=[finding, dict(finding, released_output=8)])
    assert result.safe == [["A", 40, 400.0, 40], ["B", 30, 300.0, 30]]
    assert result.flags == [{}, {"n": ["differencing"], "cost": ["differencing"]}]
    assert (result.status, result.summary) == ("review", no_rules(differencing=2))


def test_differencing_findings_may_name_the_group_and_take_precedence_over_suppression():
    rows = [("A", 40, 40), ("B", 8, 8)]
    finding = {"group": ("A",), "released_output": 7, "released_group": ("A",), "difference": 3}
    result = run([key("region"), count("n")], rows, differencing=[finding])
    assert result.flags == [{"n": ["secondary", "differencing"]}, {"n": ["threshold"]}]
    assert (result.status, result.summary) == ("review", no_rules(threshold=1, secondary=1,
                                                                  differencing=1))
    with pytest.raises(ValueError, match="unknown group"):
        run([key("region"), count("n")], rows, differencing=[dict(finding, group=("Z",))])


def test_released_table_drops_n_persons():
    result = run([key("region"), count("n")], [("A", 42, 42)])
    assert result.columns == ["region", "n", "n_persons"]
    assert result.released_table() == (["region", "n"], [["A", 40]])


def test_result_columns_may_come_in_any_order():
    columns = [key("k"), summed("cost")]
    names = ["cost_total", "n_persons", "cost", "cost_top2", "k", "cost_top1"]
    result = apply_sdc(columns, names, [(1000.0, 20, 1000.0, 5.0, "a", 950.0)])
    assert result.raw == [["a", 1000.0, 20]]
    assert result.flags == [{"cost": ["nk_dominance", "p_percent"]}]


def test_bad_column_descriptions_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        run([key("k"), count("n_persons")], [("a", 20, 20)])
    with pytest.raises(ValueError, match="kinds"):
        run([key("k"), Col("m", "max")], [("a", 20, 20)])
    with pytest.raises(ValueError, match="lacks columns"):
        apply_sdc([key("k"), summed("cost")], ["k", "cost", "n_persons", "cost_top1"], [])


# Parameters -----------------------------------------------------------------------------------


def test_a_dataset_may_only_make_the_rules_stricter():
    base = SdcParams()
    assert base.stricter(threshold=5, rounding_base=3, nk_n=1, nk_k=0.95, p_percent=0.05,
                         zeros_disclosive=False) == base
    assert base.stricter(threshold=20, rounding_base=10, nk_k=0.8, p_percent=0.2,
                         zeros_disclosive=True) == SdcParams(20, 10, 2, 0.8, 0.2, True)
    assert base.stricter(threshold=None) == base
    assert base.stricter(threshold=12).stricter(threshold=11, nk_k=0.85).threshold == 12
    with pytest.raises(TypeError, match="unknown"):
        base.stricter(treshold=20)


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"rounding_base": 0}, {"nk_n": 3},
                                 {"nk_k": 0}, {"nk_k": 1.5}, {"p_percent": -0.1}])
def test_nonsense_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        SdcParams(**bad)


# Invariants under generated results -----------------------------------------------------------

COLUMNS = [count("n"), summed("cost"), summed("mean", "avg"), Col("sd", "stat")]


@st.composite
def results(draw):
    """A grouped result over 0-3 keys with a few values each, and rules to apply to it."""
    domains = draw(st.lists(st.integers(1, 4), max_size=3))
    cells = list(product(*[range(size) for size in domains]))
    groups = draw(st.lists(st.sampled_from(cells), min_size=1, max_size=len(cells), unique=True))
    rows = []
    for group in groups:
        persons = draw(st.integers(1, 40))
        helpers = []
        for _ in range(2):                                  # cost, mean
            top1 = draw(st.integers(0, 100))
            top2 = draw(st.integers(0, top1)) if persons > 1 else 0
            rest = draw(st.integers(0, 300)) if persons > 2 else 0
            helpers += [top1, top2, top1 + top2 + rest]
        stats = [draw(st.integers(0, 200)), helpers[2], helpers[5] / persons,
                 draw(st.none() | st.floats(0, 10))]
        rows.append((*group, *stats, persons, *helpers))
    params = SdcParams(threshold=draw(st.integers(1, 15)), rounding_base=draw(st.integers(1, 10)),
                       nk_n=draw(st.sampled_from([1, 2])),
                       nk_k=draw(st.sampled_from([0.5, 0.9, 1.0])),
                       p_percent=draw(st.sampled_from([0, 0.1, 0.5])),
                       zeros_disclosive=draw(st.booleans()))
    return [key(f"k{d}") for d in range(len(domains))] + COLUMNS, rows, params


@settings(max_examples=300, deadline=None)
@given(results())
def test_no_generated_result_releases_a_disclosive_cell(case):
    columns, rows, params = case
    result = run(columns, rows, params)
    keys = [i for i, c in enumerate(columns) if c.kind == "key"]
    stats = [c.name for c in columns if c.kind != "key"]
    names, released = result.released_table()
    at = {name: i for i, name in enumerate(result.columns)}
    assert "n_persons" not in names and len(released) == len(rows)
    suppressed = suppressed_cells(result)

    for r, (raw, safe, out) in enumerate(zip(result.raw, result.safe, released, strict=False)):
        assert out == safe[:-1] and raw[-1] == safe[-1]
        if raw[-1] < params.threshold:
            assert all(out[at[name]] is None for name in stats)
        for name in stats:
            value, kind = out[at[name]], columns[at[name]].kind
            if (r, name) in suppressed:
                assert value is None
            elif kind == "count":
                assert value % params.rounding_base == 0
                assert abs(value - raw[at[name]]) <= params.rounding_base / 2
            else:
                assert value == raw[at[name]]
            if kind not in ("sum", "avg"):
                assert not {"nk_dominance", "p_percent"} & set(result.flags[r].get(name, ()))

    for d in keys:                                          # slices along every dimension
        others = [k for k in keys if k != d]
        slices = {}
        for r, row in enumerate(result.raw):
            slices.setdefault(tuple(row[k] for k in others), []).append(r)
        for members in slices.values():
            for name in stats:
                hidden = sum((r, name) in suppressed for r in members)
                assert len(members) == 1 or hidden != 1

    expected_status = "suppressed" if suppressed else "pass"
    assert result.status == expected_status
    assert sum(result.summary.values()) == sum(len(v) for f in result.flags for v in f.values())
