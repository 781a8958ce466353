"""Ingestion benchmark (run by hand, not a test).

    .venv/bin/python bench/ingest.py                      # 5,000,000 rows, 500,000 persons
    .venv/bin/python bench/ingest.py --rows 1000000 --persons 100000 --runs 3

Generates a CSV (NHS number + seven columns, one of them dropped; made with DuckDB, kept in
``--workdir`` for the next run), then runs the load — ``environment.ingest.build_version_file``,
exactly what the ``ingest_version`` task runs between its two short database transactions — in a
fresh subprocess per run, and reports the wall time and that subprocess's peak memory
(its ``VmHWM``, i.e. the high-water mark of its resident memory: Python, Django and DuckDB
together; ``ru_maxrss`` is the fallback off Linux).

Target: ≤ 20 s and ≤ 1 GiB peak on 2 cores for 5M rows.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = [
    {"name": "nhs_number", "type": "text"},
    {"name": "sex", "type": "text"},
    {"name": "age", "type": "integer"},
    {"name": "region", "type": "text"},
    {"name": "admitted", "type": "date"},
    {"name": "cost", "type": "float"},
    {"name": "smoker", "type": "boolean"},
    {"name": "postcode", "type": "text", "drop": True},
]


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre.settings")
    import django

    django.setup()


def generate(path: Path, rows: int, persons: int) -> float:
    import duckdb
    import pyarrow as pa

    from environment.pseudonym import make_nhs_number

    started = time.monotonic()
    numbers = pa.table({"p": pa.array(range(persons), pa.int64()), "nhs": [make_nhs_number(i) for i in range(persons)]})
    con = duckdb.connect()
    con.register("numbers", numbers)
    tmp = path.with_suffix(".partial")
    con.execute(f"""
        COPY (
          SELECT n.nhs AS nhs_number, CASE WHEN n.p % 2 = 0 THEN 'F' ELSE 'M' END AS sex, (n.p % 90)::INTEGER AS age,
                 ['north', 'south', 'east', 'west', 'midlands'][(i % 5) + 1] AS region,
                 DATE '2020-01-01' + (i % 1500)::INTEGER AS admitted, round((i % 10007) * 1.37, 2) AS cost,
                 (i % 7 = 0) AS smoker, 'AB' || (n.p % 100) || ' ' || (i % 9) || 'XY' AS postcode
          FROM range({int(rows)}) t(i) JOIN numbers n ON n.p = i % {int(persons)}
          ORDER BY i
        ) TO '{tmp}' (HEADER, DELIMITER ',')
    """)
    con.close()
    tmp.rename(path)
    return time.monotonic() - started


def _peak_rss_kib() -> int:
    """This process's peak resident memory. On Linux ``VmHWM`` of this process image: ``ru_maxrss``
    would also count the parent's memory at fork (the kernel carries it across ``exec``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args) -> None:
    """One load, in this (fresh) process; prints a JSON line."""
    _django()
    from environment.ingest import build_version_file

    out = Path(args.out)
    temp_dir = Path(tempfile.mkdtemp(prefix="tre-bench-spill-", dir=out.parent))
    started = time.monotonic()
    result = build_version_file(source=Path(args.csv), fmt="csv", columns=COLUMNS, identifier_column="nhs_number",
                                optout_person_ids=[], out_path=out, temp_dir=temp_dir,
                                memory_limit=args.memory_limit, threads=args.threads)
    seconds = time.monotonic() - started
    peak_kib = _peak_rss_kib()
    print(json.dumps({"ok": result.ok, "seconds": round(seconds, 2), "peak_mib": round(peak_kib / 1024, 1),
                      "rows": result.row_count, "persons": result.person_count, "phases": result.timings,
                      "file_mib": round(out.stat().st_size / 2**20, 1) if out.exists() else None,
                      "errors": result.errors[:3]}))
    out.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--persons", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "tre-bench"))
    parser.add_argument("--memory-limit", default=os.environ.get("TRE_INGEST_MEMORY_LIMIT", "512MB"),
                        help="DuckDB memory_limit for the load (the task uses TRE_INGEST_MEMORY_LIMIT, default 512MB)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    _django()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / f"bench-{args.rows}-{args.persons}.csv"
    if not csv.exists():
        print(f"generating {args.rows:,} rows for {args.persons:,} persons → {csv}")
        print(f"  generated in {generate(csv, args.rows, args.persons):.1f} s")
    print(f"file: {csv} ({csv.stat().st_size / 2**20:.0f} MiB); cores: {os.cpu_count()}; "
          f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results = []
    for run in range(args.runs):
        out = workdir / f"bench-out-{os.getpid()}-{run}.duckdb"
        proc = subprocess.run([sys.executable, __file__, "--child", "--csv", str(csv), "--out", str(out),
                               "--memory-limit", args.memory_limit, "--threads", str(args.threads)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        line = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(line)
        print(f"run {run + 1}: {line['seconds']:.1f} s, peak {line['peak_mib']:.0f} MiB, {line['rows']:,} rows, "
              f"{line['persons']:,} persons, store file {line['file_mib']} MiB; phases {line['phases']}")
        if not line["ok"]:
            print(f"  the load failed: {line['errors']}")
            return 1
    best = min(r["seconds"] for r in results)
    peak = max(r["peak_mib"] for r in results)
    verdict = "within" if best <= 20 and peak <= 1024 else "OUTSIDE"
    print(f"best {best:.1f} s, peak {peak:.0f} MiB — {verdict} the target (≤ 20 s, ≤ 1024 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
