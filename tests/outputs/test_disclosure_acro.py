"""Threshold, (n,k) dominance and p% of disclosure v2 against ACRO (`acro` 1.0.2, pinned).

The same cells through both: per-person contributions (one row per person), the rules ACRO
applies to a sum table. Where v2 deliberately differs, the test says so:

* threshold — ACRO withholds on the exact count; v2 on the perturbed count. From the threshold up
  the two agree on every cell (the p-table never takes a count of threshold or more below it);
  under it, ACRO always withholds and v2 withholds unless the perturbation releases the cell at
  the threshold or above (probability about count ÷ threshold: DESIGN.md §6, an exact boundary is
  an oracle).
* (n,k) and p% — the same definitions on exact values, but v2 only flags (the magnitude noise
  protects the dominant person) where ACRO suppresses; all-zero cells are not flagged by v2
  (ACRO's zeros_are_disclosive) — as in version 1.
"""

import random
import warnings

import pytest

from outputs import ptable
from outputs.cellkey import perturb_frequency
from outputs.disclosure import DisclosureParams, Grid, Statistic, apply_disclosure

from .acro_reference import SHARED_CASES, acro_nk, acro_p_percent, acro_threshold
from .test_disclosure import make_cell, one_row

TABLE = ptable.get()
PARAMS = DisclosureParams()
COST = Grid((), (), (Statistic("cost", "sum", 0),), one_row_per_person=True)


def v2_rules(values, ckey=0):
    out = apply_disclosure(COST, [make_cell((), one_row(values), ckey=ckey, ckey2=1)], PARAMS)
    return sorted(set(out.flags[0].get("cost", []))), out.safe[0][0]


def acro_expected(values):
    if acro_threshold(values, PARAMS.threshold):
        return ["threshold"]
    if not any(values):
        return []                                   # zeros: the deliberate difference
    return [rule for rule, fired in (("nk_dominance", acro_nk(values, PARAMS.nk_n, PARAMS.nk_k)),
                                     ("p_percent", acro_p_percent(values, PARAMS.p_percent))) if fired]


@pytest.mark.parametrize(("values", "expected"), SHARED_CASES)
@pytest.mark.parametrize("ckey", [0, 77, 255])
def test_shared_cases_agree_with_acro_from_the_threshold_up(values, expected, ckey):
    ours, released = v2_rules(values, ckey)
    if len(values) >= PARAMS.threshold:
        assert ours == acro_expected(values)
        assert released is not None                 # flags never withhold
    else:
        assert acro_expected(values) == ["threshold"]
        withheld = perturb_frequency(len(values), ckey, TABLE) < PARAMS.threshold
        assert (ours == ["threshold"]) == withheld
        assert (released is None) == withheld


def test_under_the_threshold_v2_releases_about_count_over_threshold_of_cells():
    for count in range(1, PARAMS.threshold):
        released = sum(perturb_frequency(count, k, TABLE) >= PARAMS.threshold for k in range(256)) / 256
        assert abs(released - count / PARAMS.threshold) < 0.12, count


def test_acro_itself_agrees_on_random_tables(tmp_path, monkeypatch):
    """Against the real `acro` package: a missing install fails."""
    import acro
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    rng = random.Random(6)
    shapes = [lambda size: [rng.randint(1, 20) for _ in range(size)],
              lambda size: [rng.randint(500, 1000)] + [rng.randint(0, 5) for _ in range(size - 1)],
              lambda size: [rng.randint(300, 400), rng.randint(300, 400)]
              + [rng.randint(0, 10) for _ in range(size - 2)]]
    shared = {("shared", f"case{i}"): values for i, (values, _) in enumerate(SHARED_CASES) if any(values)}
    tables = [shared] + [{(g, h): rng.choice(shapes)(rng.choice([5, 9, 10, 11, 15, 40]))
                          for g in "AB" for h in "xyz"} for _ in range(6)]
    compared = 0
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
        keys = sorted(cells)
        grid = Grid(("g", "h"), (tuple(sorted({g for g, _ in keys})), tuple(sorted({h for _, h in keys}))),
                    (Statistic("cost", "sum", 0),), one_row_per_person=True)
        ckeys = {key: rng.randrange(256) for key in keys}
        out = apply_disclosure(grid, [make_cell(key, one_row(values), ckey=ckeys[key], ckey2=3)
                                      for key, values in cells.items()], PARAMS)
        for row, flags in zip(out.safe, out.flags, strict=False):
            key, values = tuple(row[:2]), cells.get(tuple(row[:2]))
            if values is None:
                continue
            theirs = {"threshold"} if "threshold" in fired[key] else fired[key]
            ours = set(flags.get("cost", []))
            if len(values) >= PARAMS.threshold:
                assert ours == theirs, (key, values)
                compared += 1
            else:
                assert theirs == {"threshold"}
                assert (ours == {"threshold"}) == (perturb_frequency(len(values), ckeys[key], TABLE) < 10)
    assert compared > 20
