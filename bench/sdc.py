"""Time the SDC rules on big results: `.venv/bin/python bench/sdc.py` (not a test).

Targets (docs/sdc.md): apply_sdc on 100,000 groups in at most 1 s; find_differencing of 10,000
new groups against 10,000 released ones without comparing every pair.
"""

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroaring import BitMap64  # noqa: E402

from outputs.sdc import apply_sdc, find_differencing  # noqa: E402
from queries.personsets import deserialize_sets, serialize_sets  # noqa: E402


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    top1: str | None = None
    top2: str | None = None
    total: str | None = None


COLUMNS = [Column("a", "key"), Column("b", "key"), Column("n", "count"),
           Column("n_visits", "count"), Column("cost", "sum", "c1", "c2", "ct"),
           Column("mean_cost", "avg", "m1", "m2", "mt"), Column("sd_age", "stat")]
RESULT_COLUMNS = ["a", "b", "n", "n_visits", "cost", "mean_cost", "sd_age", "n_persons",
                  "c1", "c2", "ct", "m1", "m2", "mt"]


def result(groups: int, width: int, small: float, rng: random.Random) -> list[tuple]:
    """`groups` groups over keys a × b (b has `width` values), a share `small` of them below the
    threshold; about 2% have a dominated sum."""
    rows = []
    for g in range(groups):
        persons = rng.randint(1, 9) if rng.random() < small else rng.choice((12, 25, 40, 80, 1000))
        top1, top2 = rng.uniform(10, 500), rng.uniform(0, 10)
        total = top1 + top2 + rng.uniform(0, 2000)          # some groups dominated
        rows.append((g // width, g % width, persons, persons * 3, total, total / persons,
                     rng.uniform(1, 20), persons, top1, top2, total, top1, top2, total))
    return rows


def timed(function, repeat: int = 3) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def bench_apply(rng: random.Random) -> None:
    cases = (("2-D 1,000 x 100", 100, 0.2), ("2-D 1,000 x 100", 100, 0.005),
             ("1-D 100,000", 100_000, 0.2))
    for label, width, small in cases:
        rows = result(100_000, width, small, rng)
        columns = COLUMNS if width != 100_000 else COLUMNS[1:]
        seconds, out = timed(lambda columns=columns, rows=rows: apply_sdc(columns, RESULT_COLUMNS, rows))
        print(f"apply_sdc, 100,000 groups, {label}, {small:.1%} below threshold: "
              f"{seconds:.3f} s (best of 3); {out.summary}")


def persons(rng: random.Random, count: int) -> list[int]:
    return [rng.getrandbits(64) for _ in range(count)]


def bench_differencing(rng: random.Random) -> None:
    # Released: 10,000 groups partitioning 1,000,000 persons. New: the same groups re-cut with a
    # slightly different filter: 1 in 10 loses 1-5 persons (findings), the rest lose 20-40.
    population = persons(rng, 1_000_000)
    old_groups = [population[i * 100:(i + 1) * 100] for i in range(10_000)]
    released = {(g,): BitMap64(ids) for g, ids in enumerate(old_groups)}
    new_sets = {(g,): BitMap64(ids[rng.randint(1, 5) if g % 10 == 0 else rng.randint(20, 40):])
                for g, ids in enumerate(old_groups)}
    seconds, findings = timed(lambda: find_differencing(new_sets, [(1, released)], 10))
    print(f"find_differencing, 10,000 new vs 10,000 released groups (100 persons each): "
          f"{seconds:.3f} s, {len(findings)} findings")
    seconds, findings = timed(lambda: find_differencing(new_sets, [(1, released), (2, released),
                                                                   (3, released)], 10))
    print(f"find_differencing, 10,000 new vs 3 x 10,000 released groups: {seconds:.3f} s, "
          f"{len(findings)} findings")
    few_new, few_old = dict(list(new_sets.items())[:1000]), dict(list(released.items())[:1000])
    seconds, _ = timed(lambda: [a.symmetric_difference_cardinality(b) for a in few_new.values()
                                for b in few_old.values()], repeat=1)
    print(f"for scale, comparing every pair of 1,000 x 1,000 groups: {seconds:.3f} s "
          f"(10,000 x 10,000 would take ~{seconds * 100:.0f} s)")
    seconds, blob = timed(lambda: serialize_sets(released))
    load, _ = timed(lambda: deserialize_sets(blob))
    print(f"serialize_sets, 10,000 groups / 1,000,000 persons: {len(blob) / 1e6:.1f} MB, "
          f"{seconds:.3f} s; deserialize_sets {load:.3f} s")


if __name__ == "__main__":
    rng = random.Random(2024)
    bench_apply(rng)
    bench_differencing(rng)
