"""Attacks of the class "a CASE or expression inside an aggregate isolates one person" (version 1 lost
a target's diagnosis, lab value and visit this way inside cells marked `pass`).

Each test is one idea. The target is described by TARGET_SQL (birth month, region, sex: the attacker's
background knowledge); the hidden value is the target's diagnosis, weight or income."""

import statistics

import pytest

from tests.attacks.harness import TARGET_SQL, refused

T = TARGET_SQL


def test_sum_of_case_isolating_the_target():
    """sum(CASE WHEN <target> THEN weight ELSE 0 END) over everyone is the target's weight inside a large,
    released cell. Refused: no CASE inside an aggregate (a condition goes to WHERE, or becomes a band key,
    where it forms a cell with its own contributors and threshold)."""
    refused(f"SELECT region, sum(CASE WHEN {T} THEN weight ELSE 0 END) FROM patients GROUP BY region",
            "aggregate_case")


def test_count_of_case_isolating_the_target():
    """count(CASE WHEN <target> AND diagnosis = 'diabetes' THEN 1 END) is 1 or 0 inside a large cell.
    Refused: count() of anything but * or DISTINCT person_id."""
    refused(f"SELECT count(CASE WHEN {T} AND diagnosis = 'diabetes' THEN 1 END) FROM patients", "count_column")


def test_count_distinct_of_case_reveals_a_category():
    """count(DISTINCT CASE WHEN <target> THEN diagnosis END) — or of a plain category — counts values, not
    persons. Refused: only count(DISTINCT person_id)."""
    refused(f"SELECT count(DISTINCT CASE WHEN {T} THEN diagnosis END) FROM patients", "count_column")


def test_median_over_case_outputs_the_target_value():
    """median(CASE WHEN <target> THEN weight END) is the target's weight (the only non-null value).
    Refused: median is not an allowed aggregate (it outputs one person's value)."""
    refused(f"SELECT median(CASE WHEN {T} THEN weight END) FROM patients", "aggregate_not_allowed")


def test_max_of_a_cell_outputs_one_value():
    """max(income) per region outputs the richest person's income exactly. Refused by name."""
    refused("SELECT region, max(income) FROM patients GROUP BY region", "aggregate_not_allowed")


def test_min_with_filter_on_the_target():
    """min(weight) WHERE <target> is the target's weight in a one-person cell. Refused by name."""
    refused(f"SELECT min(weight) FROM patients WHERE {T}", "aggregate_not_allowed")


def test_variance_over_case_with_a_constant_background():
    """variance(CASE WHEN <target> THEN weight ELSE 70 END): everyone else contributes 70, so the variance
    is a function of the target's weight alone. Refused: CASE inside an aggregate."""
    refused(f"SELECT variance(CASE WHEN {T} THEN weight ELSE 70 END) FROM patients", "aggregate_case")


def test_sum_of_a_constant():
    """sum(1000) against sum(CASE WHEN <target> THEN 1000 + value ELSE 1000 END) (version 1): the first half
    of the pair is a constant aggregate. Refused: aggregate a measure (count(*) counts rows)."""
    refused("SELECT sum(1000) FROM patients", "aggregate_constant")


def test_if_function_instead_of_case():
    """The same isolation written with IF(<target>, 1000 + weight, 1000). Refused as CASE: sqlglot parses
    IF as a conditional, and conditionals are refused inside aggregates."""
    refused(f"SELECT sum(IF({T}, 1000 + weight, 1000)) FROM patients", "aggregate_case")


def test_boolean_indicator_arithmetic():
    """sum(weight * (sex = 'F')) — a condition used as 0/1 arithmetic isolates like CASE. Refused: a
    comparison is not a measure expression (and a cast to int is refused as a cast)."""
    refused("SELECT sum(weight * (sex = 'F')) FROM patients", "aggregate_column")
    refused(f"SELECT sum(weight * ({T})::int) FROM patients", "cast")


def test_filter_clause_on_an_aggregate():
    """sum(weight) FILTER (WHERE <target>) is CASE by another name. Refused."""
    refused(f"SELECT sum(weight) FILTER (WHERE {T}) FROM patients", "aggregate_filter")


def test_ordered_set_aggregate():
    """percentile_cont(1.0) WITHIN GROUP (ORDER BY income) is the maximum. Refused (ordered-set
    aggregates output one person's value)."""
    refused("SELECT percentile_cont(1.0) WITHIN GROUP (ORDER BY income) FROM patients", "aggregate_not_allowed")


def test_list_and_string_aggregates_output_rows():
    """string_agg(diagnosis, ','), list(diagnosis), any_value(diagnosis), arg_max(diagnosis, weight) output
    row values. Refused by name."""
    for sql in ("SELECT string_agg(diagnosis, ',') FROM patients", "SELECT list(diagnosis) FROM patients",
                f"SELECT any_value(diagnosis) FROM patients WHERE {T}",
                "SELECT arg_max(diagnosis, weight) FROM patients"):
        refused(sql, "aggregate_not_allowed")


def test_higher_moments_and_population_variants():
    """skewness, kurtosis, stddev_pop: extra moments give extra equations in the target's value (and the
    population variants skip the cell-key parts). Refused by name."""
    for name in ("skewness", "kurtosis", "stddev_pop", "var_pop"):
        refused(f"SELECT {name}(weight) FROM patients", "aggregate_not_allowed")


def test_arithmetic_of_aggregates_cancels_noise():
    """sum(weight) - sum(weight + 0) asks the engine to subtract two statistics before perturbation (an
    exact difference). Refused: one aggregate per output column."""
    refused("SELECT sum(weight) - sum(weight + 0) FROM patients", "aggregate_arithmetic")


def test_offset_trick_sum_of_1000_plus_value():
    """sum(1000 + weight) with count(*): the attacker hopes to read sum(weight) = sum(1000 + weight) − 1000 ×
    count exactly, then difference it over a cell with and without the target. Before the measure rules the
    magnitude noise (scaled to the expression's largest contribution, ≥ 1000 + 30) defeated it (the estimate
    of the target's weight was off by more than the declared range in 49 of 49 pairs); it is now refused
    outright: a literal may only scale a measure (measure_offset), since the sum of a per-row constant is a
    second count of the cell (test_differences.py::test_second_count_from_two_sums_halves_the_averaging_cost)."""
    refused("SELECT replica, sum(1000 + weight) AS s, count(*) AS n FROM patients WHERE region = 'north' "
            "GROUP BY replica", "measure_offset")


def test_syntactic_variants_of_one_sum_cannot_be_averaged(env):
    """Ask for the same sum many ways in one query — sum(weight), sum(weight * 1), sum(2 * weight) / 2,
    sum(weight / 4) × 4, sum(-weight) × −1 (sum(weight + 0) is refused: measure_offset) — hoping for independent noises to average (the Diffix
    "syntactic variants" attack). It fails: the multiplier is drawn per cell and part from the cell's
    second key, not per expression, and scaled to the expression's own largest contribution, so every
    variant carries the same relative error and their mean is no closer than one of them."""
    refused("SELECT region, sum(weight + 0) AS c FROM patients GROUP BY region", "measure_offset")
    out = env.release("SELECT region, sum(weight) AS a, sum(weight * 1) AS b, sum(-weight) AS c, "
                      "sum(2 * weight) AS d, sum(weight / 4) AS e FROM patients GROUP BY region")
    for key, row in out.safe.items():
        exact = out.raw[key]["a"]
        variants = [row["a"], row["b"], -row["c"], row["d"] / 2, row["e"] * 4]
        assert max(variants) - min(variants) < 1e-6 * abs(exact)
        assert abs(statistics.fmean(variants) - exact) == pytest.approx(abs(row["a"] - exact))


def test_constant_expression_with_a_column_counts_with_a_second_noise():
    """sum(weight * 0 + 1) — a constant that mentions a column — hoping for a second, independent noisy
    count of every cell (count(*) is perturbed by the p-table, this by the magnitude method; measured before
    the measure rules: 11 pairs instead of 21 reached 90% in the averaging attack). Refused: the expression
    multiplied out is a constant (aggregate_constant), and so are x - x, x * 0 and their kin."""
    refused("SELECT region, count(*), sum(weight * 0 + 1) FROM patients GROUP BY region", "aggregate_constant")
