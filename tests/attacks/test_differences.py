"""Attacks of the classes "exact-sum and row-count differences", "linear combinations of two and three
outputs", "padding with known persons", "binary search at the threshold boundary", "averaging many
padded pairs", "re-running after an opt-out" and "dataset counts before and after an opt-out".

Every released value here comes from the product's pipeline (``Environment.release``). Each attack runs
against the 50 replica targets at once (GROUP BY replica); the hidden value is the target's diagnosis
(diabetes in even replicas), weight, income or a December 2024 visit (two replicas in three).

Two kinds of assertion:

* **bounded by the noise** — the attacker's success over the targets is at chance level within a stated
  tolerance, or the error of their estimate is at least a stated bound;
* **caught by the ledger** — the attack compares two cells whose contributors differ by one person (or
  are equal while the filter differs). Against the noise alone such a pair is decisive: if the target is
  absent the two cells have the same contributors and are released identically, if present they differ
  in most cases (measured below and in the strict xfail ``test_one_padded_pair_without_the_ledger``).
  DESIGN.md §6 leaves these to the differencing ledger and the checkers; each such test asserts that the
  harness's ``Ledger`` (the §6 rule over exact contributor sets, cells withheld or not) finds the pair.
"""

import random
import statistics

import pytest

from outputs.disclosure import perturb_dataset_count
from tests.attacks.harness import (
    NOT_TARGET_SQL,
    REPLICAS,
    TARGET_EVENT_COST,
    TARGET_SQL,
    THRESHOLD,
    Ledger,
    by_replica,
    refused,
    share,
    target_diagnosis,
    target_visited,
)

T, NT = TARGET_SQL, NOT_TARGET_SQL
DIABETIC = {r: target_diagnosis(r) == "diabetes" for r in range(REPLICAS)}
EQUALITY_LEAK = (
    "Cell-key noise is a fixed function of the contributor set. A pair of queries whose cells differ only by "
    "the target — A: diagnosis = 'diabetes' AND (pad OR <target>), B: diagnosis = 'diabetes' AND pad AND NOT "
    "<target> — is released identically when the target is not diabetic (same contributors, same cell keys) "
    "and differently in most cases when it is (measured: 85% of pairs differ; 5 pairs tell all 50 "
    "targets' diagnoses). The perturbation alone cannot bound this; DESIGN §6 relies on the differencing ledger (a cell "
    "within 1…threshold−1 persons of a released one, or equal with another filter) and on checkers to refuse "
    "it; the noise cannot, because 'the same contributors always get the same perturbation' (DESIGN §6, what "
    "makes repeats useless) is exactly what makes the absent-target pair equal. Until the ledger exists in "
    "the product, this attack succeeds."
)


def targets(env) -> dict[int, dict]:
    return {r: env.population.person(pid) for r, pid in env.population.target.items()}


def pair(env, a_sql: str, b_sql: str, column: str = "n") -> tuple[dict, dict]:
    return by_replica(env.release(a_sql), column), by_replica(env.release(b_sql), column)


def ledger_finds(env, *sqls: str, projects=None) -> list[list[dict]]:
    """The ledger's findings for each output in turn (outputs released in order, by project)."""
    ledger = Ledger(env)
    projects = projects or ["p1"] * len(sqls)
    return [ledger.record(project, sql) for project, sql in zip(projects, sqls, strict=False)]


def one_person_findings(findings: list[dict]) -> set:
    return {f["key"] for f in findings if f["difference"] == 1}


# --- exact-sum and row-count differences ----------------------------------------------------------


def test_exact_sum_difference_with_and_without_the_target(env):
    """sum(weight) over the north and south, and the same without the target: the difference was the
    target's weight in version 1 (exact sums). Released sums carry noise of 0.5–2.5 × the largest weight in
    the cell, independently drawn for the two cells (their contributors differ), so the difference does not
    tell whether the target is heavier than the median: 50% correct over the 50 targets (chance; tolerance
    ±15 points for 50 targets). The pair is also a one-person difference for the ledger."""
    a_sql = "SELECT replica, sum(weight) AS s FROM patients WHERE region IN ('north', 'south') GROUP BY 1"
    b_sql = f"SELECT replica, sum(weight) AS s FROM patients WHERE region IN ('north', 'south') AND {NT} GROUP BY 1"
    a, b = pair(env, a_sql, b_sql, "s")
    median = statistics.median(p["weight"] for p in env.population.patients)
    weights = {r: p["weight"] for r, p in targets(env).items()}
    correct = share(((a[r] - b[r]) > median) == (weights[r] > median) for r in range(REPLICAS))
    assert abs(correct - 0.5) <= 0.15
    assert one_person_findings(ledger_finds(env, a_sql, b_sql)[1]) == {(r,) for r in range(REPLICAS)}


def test_row_count_difference_reveals_a_visit_unless_the_ledger_stops_it(env):
    """count(*) of the north's and east's events, with and without December 2024: the difference is the
    target's visit that month. The two cells have the same persons, so with per-person keys they share
    the row-count multiplier and the released difference is exactly 1 or 0 (measured: 50 of 50 targets'
    visits told correctly); with row keys the equality of the two releases still tells it. The ledger finds
    every pair: equal contributors, another filter."""
    a_sql = ("SELECT p.replica, count(*) AS n FROM patients p JOIN gp_events e ON p.person_id = e.person_id "
             "WHERE p.region IN ('north', 'east') GROUP BY 1")
    b_sql = a_sql.replace("GROUP BY", "AND e.event_date < '2024-12-01' GROUP BY")
    a, b = pair(env, a_sql, b_sql)
    told = share((a[r] != b[r]) == target_visited(r) for r in range(REPLICAS))
    assert told >= 0.9                                  # what the ledger must catch: measured 1.0
    findings = ledger_finds(env, a_sql, b_sql)[1]
    assert {f["key"] for f in findings if f["difference"] == 0} == {(r,) for r in range(REPLICAS)}


def test_exact_sum_difference_of_one_row_of_the_target(env):
    """sum(e.cost) of the north's and east's events with and without December 2024: the difference is the
    cost of the target's visit. Chance: no visit's cost recovered to ±1 (the noise is 0.5–2.5 × the largest
    per-person cost, thousands)."""
    a_sql = ("SELECT p.replica, sum(e.cost) AS s FROM patients p JOIN gp_events e ON p.person_id = e.person_id "
             "WHERE p.region IN ('north', 'east') GROUP BY 1")
    a, b = pair(env, a_sql, a_sql.replace("GROUP BY", "AND e.event_date < '2024-12-01' GROUP BY"), "s")
    recovered = [r for r in range(REPLICAS) if target_visited(r) and abs(a[r] - b[r] - TARGET_EVENT_COST) < 1]
    assert len(recovered) <= 1


def test_two_counts_of_one_cell_share_their_noise(env):
    """count(*) and count(DISTINCT person_id) of a one-row-per-person cell, and the count inside avg(), hoping
    for independent draws to average. They are one frequency of one contributor set: the same cell key gives
    the same released value, so there is nothing to average."""
    out = env.release("SELECT region, diagnosis, count(*) AS a, count(DISTINCT person_id) AS b, sum(weight) AS s, "
                      "avg(weight) AS m FROM patients GROUP BY 1, 2")
    for row in out.safe.values():
        assert row["a"] == row["b"]
        assert row["m"] == pytest.approx(row["s"] / row["a"])


def test_repeating_a_query_gives_the_same_answer(env):
    """Run the same query again (or re-run it after a new dataset version with the same contributors) to
    average the noise (Diffix's repeated-query attack). Deterministic: the same contributors give the same
    released values, so repeats carry no new information."""
    sql = f"SELECT replica, diagnosis, count(*) AS n, sum(income) AS s FROM patients WHERE {NT} GROUP BY 1, 2"
    assert env.release(sql).safe == env.release(sql).safe


# --- linear combinations --------------------------------------------------------------------------


def test_two_outputs_of_one_project_differ_by_the_target(env):
    """Output 1: diabetics in the north; output 2: the same without the target (version 1 released both,
    their person sets differing by one person). Against the noise alone the pair is decisive (equal iff the
    target is not diabetic — measured: 98% of targets); the ledger finds output 2's cell of every diabetic target as a
    one-person difference and every other target's as equal contributors under another filter."""
    a_sql = "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND region = 'north' GROUP BY 1"
    b_sql = a_sql.replace("GROUP BY", f"AND {NT} GROUP BY")
    a, b = pair(env, a_sql, b_sql)
    told = share((a[r] != b[r]) == DIABETIC[r] for r in range(REPLICAS))
    assert told >= 0.75                                 # what the ledger must catch: measured 0.98
    findings = ledger_finds(env, a_sql, b_sql)[1]
    assert one_person_findings(findings) == {(r,) for r in range(REPLICAS) if DIABETIC[r]}
    assert {f["key"] for f in findings if f["difference"] == 0} == {(r,) for r in range(REPLICAS) if not DIABETIC[r]}


def test_two_outputs_of_two_projects_differ_by_the_target(env):
    """The same pair released by two projects (one researcher in both, or two colluding): no per-project
    check sees it. The ledger is per population across all projects: it finds project 2's output against
    project 1's."""
    a_sql = "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND sex = 'F' GROUP BY 1"
    b_sql = a_sql.replace("GROUP BY", f"AND {NT} GROUP BY")
    findings = ledger_finds(env, a_sql, b_sql, projects=["project-1", "project-2"])[1]
    found = one_person_findings(findings)
    assert found == {(r,) for r in range(REPLICAS) if DIABETIC[r]}
    assert all(f["against"][0] == "project-1" for f in findings)


def test_three_outputs_combine_to_the_target(env):
    """A = diabetics; B = diabetics outside the north; C = diabetics in the north except the target. No two
    of them differ by fewer than 10 persons (no ledger finding), but A − B − C = 1 if the target is diabetic.
    Each output carries its own noise (variance 2 each), so one triple tells the diagnosis no better than
    chance: measured 48% of 50 targets (tolerance ±15 points)."""
    a, b = pair(env, "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' GROUP BY 1",
                "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND region <> 'north' "
                "GROUP BY 1")
    c = by_replica(env.release(f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' "
                               f"AND region = 'north' AND {NT} GROUP BY 1"), "n")
    correct = share(((a[r] - b[r] - (c[r] or 0)) > 0.5) == DIABETIC[r] for r in range(REPLICAS))
    assert abs(correct - 0.5) <= 0.15


def test_margins_recover_a_withheld_cell(env):
    """The target's one-person cell (north, F, April 1961, diabetes) is withheld; the attacker subtracts the
    released neighbours from a released margin (no secondary suppression in version 2): all diabetics born
    in April 1961 minus those of the other region/sex cells. Every term carries its own noise, so the
    estimate of the withheld cell (0 or 1) is at chance: tolerance ±15 points over 50 targets."""
    margin = by_replica(env.release(
        "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND birth_date >= '1961-01-01' "
        "AND birth_date < '1962-01-01' GROUP BY 1"), "n")
    inner = env.release(
        "SELECT replica, region, sex, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' "
        "AND birth_date >= '1961-01-01' AND birth_date < '1962-01-01' AND NOT (region = 'north' AND sex = 'F' "
        "AND birth_date >= '1961-04-01' AND birth_date < '1961-05-01') GROUP BY 1, 2, 3")
    others = {r: sum(row["n"] or 0 for key, row in inner.safe.items() if key[0] == r) for r in range(REPLICAS)}
    correct = share((((margin[r] or 0) - others[r]) > 0.5) == DIABETIC[r] for r in range(REPLICAS))
    assert abs(correct - 0.5) <= 0.15


# --- padding --------------------------------------------------------------------------------------


def test_padding_with_persons_whose_diagnosis_is_known(env):
    """The attacker pads the target's cell with diabetics they know (those with score < s, exact number K
    known to them) so the cell is released, then reads released − K: 1 if the target is diabetic. The
    count noise (−3…+3, variance 2) hides a difference of one: over 4 paddings × 50 targets the guess is
    right in 60.5% of cases (measured), within the ε = 1 bound of DESIGN §6 (73%, asserted)."""
    results = []
    for s in (300, 400, 500, 600):
        a = by_replica(env.release(f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' "
                                   f"AND (score < {s} OR {T}) GROUP BY 1"), "n")
        known = env.release(f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' "
                            f"AND score < {s} AND {NT} GROUP BY 1")
        k = {r: known.raw[(r,)]["n"] for r in range(REPLICAS)}   # background knowledge: exact
        results += [(((a[r] or 0) - k[r]) > 0.5) == DIABETIC[r] for r in range(REPLICAS)]
    assert share(results) <= 0.73


def test_padding_with_persons_whose_contributions_are_known(env):
    """The attacker pads the target's cell with persons whose incomes they know (exactly), then reads
    released sum − known sum as the target's income. The noise is m × the largest income in the cell with
    |m| ≥ 0.5, and the largest is at least the target's: the error is never below half the target's
    income, for every one of the 50 targets."""
    out = by_replica(env.release(f"SELECT replica, sum(income) AS s FROM patients WHERE score < 200 OR {T} "
                                 f"GROUP BY 1"), "s")
    known = env.release(f"SELECT replica, sum(income) AS s FROM patients WHERE score < 200 AND {NT} GROUP BY 1")
    incomes = {r: p["income"] for r, p in targets(env).items()}
    errors = [abs(out[r] - known.raw[(r,)]["s"] - incomes[r]) / incomes[r] for r in range(REPLICAS)
              if out[r] is not None]
    assert len(errors) == REPLICAS
    assert min(errors) >= 0.5 - 1e-9


ZERO_PADDED = (f"SELECT replica, count(*) AS n, sum(children) AS s FROM patients "
               f"WHERE children = 0 OR ({T} AND diagnosis = 'diabetes') GROUP BY 1")


def test_padding_with_persons_known_to_contribute_zero(env):
    """sum(children) over persons with no children, plus the target if diabetic. The attacker knows the
    target has children (background); they guess "diabetic" iff the released sum is not exactly 0.
    Chance: 50% of those targets (asserted ≤ 60%). Before the floor (outputs/disclosure.py,
    magnitude_floor) an all-zero cell had noise m × 0 and was released as exactly 0: every diabetic
    parent was told (39 of the 50 targets have a child). Now the noise scale is at least 0.1 × the
    measure's bound (12 children: 1.2), so no sum is released as exactly 0; when the target is in, the
    cell is flagged nk_dominance for checkers."""
    out = env.release(ZERO_PADDED)
    parents = [r for r, p in targets(env).items() if p["children"] > 0]
    told = share((out.safe[(r,)]["s"] not in (None, 0)) == DIABETIC[r] for r in parents)
    assert told <= 0.6
    assert all(out.safe[(r,)]["s"] != 0 for r in range(REPLICAS))
    assert all("nk_dominance" in out.flags[(r,)].get("s", ()) for r in parents if DIABETIC[r]
               and out.safe[(r,)]["s"] is not None)


@pytest.mark.xfail(strict=True, reason=(
    "The floor closes the exact-zero oracle, not the dominant-contributor case it reduces to: with the "
    "target in, the cell's sum is c·(1 + m) (c the target's children, the top), without it m·F (F = 0.1 × "
    "12 = 1.2); |m| is uniform in [0.5, 2.5], so the two released values have nearly disjoint supports "
    "once c > F, and an attacker who knows c (background) and the product's parameters (published in "
    "sdc.settings) picks the likelier one. Measured: 32 of 39 parents' diagnoses told (82%; simulated 71% "
    "for c = 1 up to 95% for c = 12; a floor of 1 × the bound still gives 52–75%). The sign-of-difference "
    "property (≤ 73%) holds (62.7% measured for such pairs); what leaks is the magnitude of one dominant "
    "contribution, which DESIGN §6 leaves to the nk_dominance flag (it fires on every such cell, for "
    "checkers) and to the DP tier."))
def test_likelihood_read_of_a_zero_padded_cell(env):
    """The same query read the better way: the attacker knows the target's number of children c and the
    perturbation's published parameters (a = 0.5, b = 2.5, floor 0.1 × bound), and compares the density of
    the released sum under "target in" (c + m·max(c, F)) and "target out" (m·F). Chance: 50% (asserted
    ≤ 60%)."""
    out = env.release(ZERO_PADDED)
    floor = 0.1 * 12

    def density(value, centre, scale):
        return 1 / (4 * scale) if 0.5 <= abs(value - centre) / scale <= 2.5 else 0.0

    guesses = {}
    for r, person in targets(env).items():
        c, value = person["children"], out.safe[(r,)]["s"]
        if c > 0 and value is not None:
            guesses[r] = density(value, c, max(c, floor)) > density(value, 0, floor)
    assert share(guesses[r] == DIABETIC[r] for r in guesses) <= 0.6


# --- the threshold boundary ---------------------------------------------------------------------------


def test_release_decision_uses_the_perturbed_count(env):
    """Version 1 withheld a cell iff its exact count was under 10, so a search over birth-date windows found
    the window of exactly 9 others and read the target's diagnosis from whether window + target appeared
    (8/8 targets). Here the decision is taken on the perturbed count: among windows of 1 … 9 exact persons
    the share released rises with the count (measured over 1,800 cells: 11% of 1s, 37% of 4s, 80% of 9s —
    about n/10, the p-table's small rows) instead of jumping at 10: no cell is withheld for certain at 9
    and released for certain at 10."""
    released: dict[int, list[bool]] = {}
    for sql in ("SELECT replica, region, diagnosis, count(*) AS n FROM patients GROUP BY 1, 2, 3",
                "SELECT replica, sex, diagnosis, count(*) AS n FROM patients WHERE score < 400 GROUP BY 1, 2, 3",
                "SELECT replica, region, sex, count(*) AS n FROM patients WHERE weight >= 80 GROUP BY 1, 2, 3"):
        out = env.release(sql)
        for key, row in out.safe.items():
            exact = out.raw[key]["n"]
            if 1 <= exact <= 12:
                released.setdefault(exact, []).append(row["n"] is not None)
    small = [x for n in range(1, THRESHOLD) for x in released.get(n, [])]
    assert 0.05 < share(small) < 0.5                    # small cells are sometimes released…
    assert share(released[THRESHOLD - 1]) < 1           # …and a 9 is not always
    assert all(share(released[n]) == 1 for n in range(THRESHOLD, 13) if n in released)


def test_binary_search_for_the_threshold_window(env):
    """The version-1 search, run against version 2: grow a birth-year window around the target's birth
    month (others only, NOT <target>) until the diabetics' cell is released; the window just before is
    taken as "9 others"; then ask that window with the target in and guess "diabetic" iff it is released.
    The search does not converge on a window of exactly threshold − 1 others (measured: 1 of 48 searches;
    small windows of 0–5 others are released by chance first), and the final step (measured: right for 81%
    of targets, against 100% in version 1) works only through the equality of two cells whose contributors
    differ by the target alone — which the ledger finds (cells withheld or not)."""
    found, guesses, final_pairs = [], {}, {}
    for r in range(REPLICAS):
        final_pairs[r] = None
    windows = [(1961 - k, 1962 + k) for k in range(0, 12)]
    others = [env.release(f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND "
                          f"birth_date >= '{lo}-01-01' AND birth_date < '{hi}-01-01' AND {NT} GROUP BY 1")
              for lo, hi in windows]
    for r in range(REPLICAS):
        k = next((i for i, out in enumerate(others) if out.safe[(r,)]["n"] is not None), None)
        if k is None or k == 0:
            continue
        found.append(others[k - 1].raw[(r,)]["n"])
        final_pairs[r] = windows[k - 1]
    assert share(n == THRESHOLD - 1 for n in found) < 0.5
    for r, window in final_pairs.items():
        if window is None:
            continue
        lo, hi = window
        with_target = env.release(f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND "
                                  f"(birth_date >= '{lo}-01-01' AND birth_date < '{hi}-01-01') AND replica = {r} "
                                  f"GROUP BY 1")
        guesses[r] = with_target.safe[(r,)]["n"] is not None
    correct = share(guesses[r] == DIABETIC[r] for r in guesses)
    assert correct >= 0.6                               # what the ledger must catch (measured below)
    lo, hi = next(w for w in final_pairs.values() if w is not None)
    base = (f"SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND "
            f"birth_date >= '{lo}-01-01' AND birth_date < '{hi}-01-01'")
    findings = ledger_finds(env, f"{base} AND {NT} GROUP BY 1", f"{base} GROUP BY 1")[1]
    assert {f["key"] for f in findings if f["difference"] <= 1} == {(r,) for r in range(REPLICAS)}


# --- averaging ------------------------------------------------------------------------------------

PADS = 64
BANDS = [f"(score >= {100 * b} AND score < {100 * b + 100})" for b in range(10)]


def pads(count: int) -> list[str]:
    """``count`` distinct padding filters: each a different set of 5 of the 10 score bands (so each padding
    set holds about 20 diabetics of a replica, and no two are the same set)."""
    rng = random.Random(7)
    chosen: list[tuple] = []
    while len(chosen) < count:
        subset = tuple(sorted(rng.sample(range(10), 5)))
        if subset not in chosen:
            chosen.append(subset)
    return ["(" + " OR ".join(BANDS[b] for b in subset) + ")" for subset in chosen]


def padded_pairs(env) -> dict[int, list[int]]:
    """Per target, the released differences of count(*) over PADS pairs (A: diabetics of a padding set, plus
    the target; B: the same set without the target). The sets differ, so every pair has its own
    contributors. (The second count once hidden in two sums, (sum(weight + 1000) − sum(weight)) / 1000, is
    refused since the measure rules: test_second_count_from_two_sums_halves_the_averaging_cost.)"""
    counts: dict[int, list[int]] = {r: [] for r in range(REPLICAS)}
    select = "SELECT replica, count(*) AS n, sum(weight) AS s FROM patients"
    for pad in pads(PADS):
        a = env.release(f"{select} WHERE diagnosis = 'diabetes' AND ({pad} OR {T}) GROUP BY 1").safe
        b = env.release(f"{select} WHERE diagnosis = 'diabetes' AND {pad} AND {NT} GROUP BY 1").safe
        for r in range(REPLICAS):
            x, y = a[(r,)], b[(r,)]
            if x["n"] is not None and y["n"] is not None:
                counts[r].append(x["n"] - y["n"])
    return counts


@pytest.fixture(scope="module")
def pairs(env):
    return padded_pairs(env)


def pairs_needed(differences: dict[int, list[int]], level: float, rng: random.Random, trials: int = 400) -> int:
    """The fewest pairs whose mean released difference exceeds ½ for a diabetic target in ``level`` of
    campaigns (a campaign: a diabetic target and its pairs in a random order; n pairs = the first n)."""
    wins = [0] * (PADS + 1)
    campaigns = 0
    for r, ds in differences.items():
        if not DIABETIC[r]:
            continue
        for _ in range(trials):
            order = rng.sample(ds, len(ds))
            total = 0
            for n, d in enumerate(order, start=1):
                total += d
                wins[n] += total / n > 0.5
            campaigns += 1
    return next((n for n in range(1, PADS + 1) if wins[n] >= level * campaigns), PADS + 1)


def test_averaging_many_differently_padded_pairs(pairs):
    """The averaging attack DESIGN §6 admits: each padded pair's released difference is 1 + noise (target
    in) or exactly 0 (target out); averaging n pairs whose contributors all differ removes the noise. Measured
    at the default parameters (D = 3, V = 2), over 25 diabetic targets × 64 padding sets, campaigns drawn
    400 times per target: **21 pairs** make the mean exceed ½ in 90% of campaigns (11 for 80%, 33 for 95%;
    asserted 15–35 and 6–20; the disclosure core's simulation with independent keys gave 29). The targets
    without diabetes give exactly 0 in every pair."""
    assert all(d == 0 for r, ds in pairs.items() if not DIABETIC[r] for d in ds)
    assert all(len(ds) >= PADS - 5 for ds in pairs.values())
    rng = random.Random(1)
    n90, n80 = pairs_needed(pairs, 0.9, rng), pairs_needed(pairs, 0.8, rng)
    assert 15 <= n90 <= 35
    assert 6 <= n80 <= 20 and n80 < n90


@pytest.mark.xfail(strict=True, reason=EQUALITY_LEAK)
def test_one_padded_pair_without_the_ledger(pairs):
    """The same pairs read the attacker's better way: "diabetic iff some pair's two cells differ". If the
    perturbation alone protected a one-person difference, a campaign of 5 pairs would be right at about
    chance (asserted: at most 60% of the 50 targets)."""
    rng = random.Random(2)
    correct = share(any(d != 0 for d in rng.sample(ds, 5)) == DIABETIC[r] for r, ds in pairs.items())
    assert correct <= 0.6


def test_one_padded_pair_separates_the_hypotheses_measured(pairs):
    """(The figure behind the xfail above, measured and asserted so that a change shows.) Share of pairs of a
    diabetic target released with different values: 85% (asserted 75–95%); targets for whom 5 pairs suffice
    (some pair differs): asserted at least 22 of 25."""
    diabetic = [ds for r, ds in pairs.items() if DIABETIC[r]]
    differ = share(d != 0 for ds in diabetic for d in ds)
    assert 0.75 <= differ <= 0.95
    assert sum(any(d != 0 for d in ds[:5]) for ds in diabetic) >= 22


# --- opt-outs ---------------------------------------------------------------------------------------


def test_rerun_after_the_target_opts_out(env):
    """The attacker releases the diabetics of the north; the target opts out; every unreleased output is
    re-run (stale) and the attacker releases the same query again. If the target is diabetic the two cells
    differ by one person — independently perturbed, but their inequality tells (measured against the noise
    alone: 98% of targets); if not, they are identical. The ledger finds the re-run's cell of every diabetic target as
    a one-person difference against the first release, and the others as equal contributors (same filter:
    no finding — the same cell released twice is harmless)."""
    sql = "SELECT replica, count(*) AS n FROM patients WHERE diagnosis = 'diabetes' AND region = 'north' GROUP BY 1"
    optouts = set(env.population.target.values())
    before = by_replica(env.release(sql), "n")
    after = by_replica(env.release(sql, optouts=optouts), "n")
    told = share((before[r] != after[r]) == DIABETIC[r] for r in range(REPLICAS))
    assert told >= 0.75
    ledger = Ledger(env)
    ledger.record("p1", sql)
    findings = ledger.record("p1", sql, optouts=optouts)
    assert one_person_findings(findings) == {(r,) for r in range(REPLICAS) if DIABETIC[r]}
    assert not [f for f in findings if f["difference"] == 0]


def test_dataset_counts_before_and_after_an_opt_out(env):
    """A member sees each dataset's person count perturbed (cell key over the dataset's persons) and rounded
    to two significant figures. The attacker watches gp_events' count before and after the target's opt-out
    to learn whether the target is in gp_events. With 4,000 persons the rounding step is 100: over the 50
    targets' opt-outs (one at a time), the shown count changed for none (measured: 4,000 persons shown as
    4,000 before and after each), so the attacker's guess "in the dataset iff the count changed" is right
    half the time (asserted ≤ 60%, the hypotheses being equally likely: 0.5 + 0.5 × the share that
    changed). A dataset of fewer than 100 persons has a rounding step of 1: there the perturbation alone
    protects it, and the pair before/after is the equality attack of the xfail above."""
    def shown(optouts=()):
        plan, statement = env.statement("SELECT count(DISTINCT person_id) FROM gp_events", optouts)
        cell = env.cells(statement)[0]
        return perturb_dataset_count(cell["n_persons"], cell["ckey"])

    before = shown()
    changed = [shown({pid}) != before for pid in env.population.target.values()]
    assert 0.5 + 0.5 * share(changed) <= 0.6


def test_second_count_from_two_sums_halves_the_averaging_cost(pairs):
    """sum(weight + 1000) and sum(weight) in the same query: their released difference divided by 1000 was
    another noisy count of the cell (the multiplier is shared by a cell's sums: (R2 − R1) / 1000 = n + m),
    perturbed independently of count(*), and averaging both halved the averaging attack's cost (measured
    before the measure rules: 12 pairs reached 90% instead of 21). The measure rules refuse every per-row
    constant — an offset (measure_offset), or an expression that multiplies out to a constant
    (aggregate_constant) — so the only count of a cell an attacker can average is count(*) itself: a campaign
    of padded pairs still needs at least 15 pairs for 90%."""
    refused("SELECT replica, sum(weight) AS s, sum(weight + 1000) AS s2 FROM patients GROUP BY 1", "measure_offset")
    refused("SELECT replica, sum(weight * 0 + 1) AS s2 FROM patients GROUP BY 1", "aggregate_constant")
    assert pairs_needed(pairs, 0.9, random.Random(3)) >= 15
