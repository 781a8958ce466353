"""Dummy-twin benchmark (run by hand, not a test).

    .venv/bin/python bench/twins.py [--rows 10000] [--runs 5]

Generates the demo dataset's twin (``demo.data.COLUMNS``: 9 stored columns, ``value``'s bounds as
a first load would derive them) from its dictionary alone and writes it as a store file, and
reports the time of each run. Target: ≤ 1 s for 10,000 rows.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre.settings")
    import django

    django.setup()
    from demo.data import COLUMNS
    from environment.declaration import declare
    from environment.derivation import ColumnStats, derive
    from environment.twins import generate_twin, twin_seed, write_twin_file

    declared, problems = declare({"name": "gp_events", "identifier_column": "nhs_number", "columns": COLUMNS})
    assert not problems, problems
    dictionary = derive(declared, {"value": ColumnStats(p01=31.0, p99=720.0)}, threshold=10)
    times = []
    for run in range(args.runs):
        path = Path(tempfile.mkdtemp(prefix="tre-twin-")) / "twin.duckdb"
        started = time.monotonic()
        table = generate_twin(dictionary, rows=args.rows)
        generated = time.monotonic() - started
        write_twin_file(table, dictionary, path, seed=twin_seed(dictionary))
        total = time.monotonic() - started
        times.append(total)
        print(f"run {run + 1}: generate {generated:.3f} s, generate + write {total:.3f} s ({args.rows:,} rows)")
        path.unlink()
    best = min(times)
    print(f"best {best:.3f} s — {'within' if best <= 1 else 'OUTSIDE'} the target (≤ 1 s); "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
