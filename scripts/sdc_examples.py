"""Print the worked examples of docs/sdc.md and docs/query-language.md, computed by the code itself.

    .venv/bin/python scripts/sdc_examples.py

Every number in those documents' examples comes from this script (default parameters), so a change of
method or parameters shows up as a changed output here.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outputs import ptable  # noqa: E402
from outputs.cellkey import SUM, multiplier, perturb_frequency, perturb_magnitude  # noqa: E402
from outputs.disclosure import DisclosureParams, Grid, Statistic, apply_disclosure, perturb_dataset_count  # noqa: E402

TABLE = ptable.get()


def counts():
    print("## counts")
    print("37 persons, ckey 200 ->", perturb_frequency(37, 200, TABLE))
    print("38 persons, ckey (200 + 91) % 256 =", (200 + 91) % 256, "->", perturb_frequency(38, (200 + 91) % 256, TABLE))
    large = TABLE.lookup[-1]
    print("large row, keys per perturbation:", {v: large.count(v) for v in sorted(set(large))})
    for i in range(1, 10):
        withheld = sum(1 for k in range(256) if i + TABLE.lookup[i][k] < 10) / 256
        print(f"exact {i}: P(withheld) = {withheld:.2f}, released as", sorted({i + v for v in TABLE.lookup[i] if i + v >= 10}))
    print("11 ->", sorted({11 + v for v in TABLE.lookup[11]}))


def magnitudes():
    print("## magnitudes")
    for ckey2 in (7, 123456789, 4000000000):
        print(f"ckey2 {ckey2}: m(sum) = {multiplier(ckey2, SUM):.3f}")
    m = multiplier(123456789, SUM)
    released = perturb_magnitude(52_340, 2_100, 123456789)
    count = perturb_frequency(120, 200, TABLE)
    print(f"120 persons, total 52,340, top 2,100, ckey2 123456789: m = {m:.3f}, released {released:.1f}; "
          f"count (ckey 200) {count}; mean {released / count:.2f} (exact {52_340 / 120:.2f})")


def grid():
    print("## a worked grid (one row per person)")
    g = Grid(("region", "sex"), (("North", "South"), ("F", "M")),
             (Statistic("persons", "count_persons"), Statistic("total_cost", "sum", 0),
              Statistic("mean_cost", "avg", 0)), one_row_per_person=True)

    def cell(key, n, total, top1, top2, ckey, ckey2):
        return {"key": key, "n_persons": n, "ckey": ckey, "ckey2": ckey2, "n_rows": n, "rows_max": 1,
                "m0_n": n, "m0_sum": total, "m0_sumsq": total * total / n, "m0_top1": top1, "m0_top2": top2,
                "m0_sqtop1": top1 * top1}

    cells = [cell(("North", "F"), 120, 52_340.0, 2_100.0, 1_900.0, 200, 123456789),
             cell(("North", "M"), 7, 2_500.0, 600.0, 500.0, 10, 55),
             cell(("South", "F"), 7, 2_500.0, 600.0, 500.0, 250, 99),
             cell(("South", "M"), 45, 61_000.0, 56_000.0, 300.0, 31, 4000000000)]
    out = apply_disclosure(g, cells)
    for raw, safe, flags in zip(out.raw, out.safe, out.flags, strict=False):
        print(raw, "->", tuple(round(v, 2) if isinstance(v, float) else v for v in safe), flags)
    print(out.sdc["status"], out.sdc["summary"])
    print("settings", out.sdc["settings"])


def dataset_counts():
    print("## dataset counts")
    for n, ckey in ((12_345, 77), (4_000, 10), (87, 10), (86, 10)):
        print(f"{n} persons, ckey {ckey} -> {perturb_frequency(n, ckey, TABLE)} -> shown {perturb_dataset_count(n, ckey)}")


def query():
    print("## a query end to end (the attack corpus's synthetic population)")
    from tests.attacks.harness import environment  # noqa: PLC0415 - the population is built only here

    env = environment()
    out = env.release("SELECT region, count(*) AS persons, avg(weight) AS mean_weight, sum(income) AS income "
                      "FROM patients WHERE sex = 'F' AND birth_date >= '1990-01-01' GROUP BY region")
    for key in out.safe:
        raw, safe = out.raw[key], out.safe[key]
        print(key, {k: (round(raw[k], 2) if isinstance(raw[k], float) else raw[k],
                        round(safe[k], 2) if isinstance(safe[k], float) else safe[k])
                    for k in ("persons", "mean_weight", "income")}, out.flags[key])
    print(DisclosureParams().settings()["ptable"])


if __name__ == "__main__":
    counts()
    magnitudes()
    grid()
    dataset_counts()
    query()
