"""Ingestion benchmark (run by hand, not a test).

    .venv/bin/python bench/ingest.py                      # 5,000,000 rows, 500,000 persons
    .venv/bin/python bench/ingest.py --rows 1000000 --persons 100000 --runs 3

Generates a CSV (a dictionary of 8 columns: the NHS number, 3 categories, 2 dates, 2 measures;
made with DuckDB, kept in ``--workdir`` for the next run), then runs the strict load —
``environment.loader.build_version_file``,
exactly what the ``ingest_version`` task runs between its two short database transactions — in a
fresh subprocess per run, and reports the wall time and that subprocess's peak memory
(its ``VmHWM``, i.e. the high-water mark of its resident memory: Python, Django and DuckDB
together; ``ru_maxrss`` is the fallback off Linux).

``--bad-rows N`` also writes a copy of the file in which N rows (spread evenly) hold a bad value
(an integer ``40.5``, a float ``NaN``, a date ``2024-2-30`` or an unknown boolean, in turn) and
times its refusal: the first 1,000 errors and the exact total.

Target: ≤ 20 s and ≤ 1 GiB peak on 2 cores for 5M rows; a file with 100,000 bad rows reports in
≤ 2× the time of a clean load.
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

DECLARATION = {
    "name": "bench", "identifier_column": "nhs_number", "rows_per_person": "many",
    "columns": [
        {"name": "nhs_number", "type": "text"},
        {"name": "sex", "type": "text", "values": ["F", "M"]},
        {"name": "region", "type": "text"},  # domain derived at the first load
        {"name": "smoker", "type": "boolean"},
        {"name": "admitted", "type": "date", "granularity": "month"},
        {"name": "born", "type": "date", "granularity": "year", "min": "1900-01-01", "max": "2024-12-31"},
        {"name": "age", "type": "integer", "min": 0, "max": 120},
        {"name": "cost", "type": "float"},  # bounds derived at the first load
    ],
}


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
                 (i % 7 = 0) AS smoker, DATE '1930-01-01' + (n.p % 30000)::INTEGER AS born
          FROM range({int(rows)}) t(i) JOIN numbers n ON n.p = i % {int(persons)}
          ORDER BY i
        ) TO '{tmp}' (HEADER, DELIMITER ',')
    """)
    con.close()
    tmp.rename(path)
    return time.monotonic() - started


def spoil(clean: Path, path: Path, bad_rows: int, rows: int) -> None:
    """A copy of ``clean`` with ``bad_rows`` rows (spread evenly) holding one bad value each."""
    import duckdb

    step = max(1, rows // bad_rows)
    tmp = path.with_suffix(".partial")
    con = duckdb.connect()
    con.execute(f"""
        COPY (
          SELECT nhs_number, sex,
                 CASE WHEN i % {step} = 0 AND (i // {step}) % 4 = 0 AND i // {step} < {bad_rows} THEN '40.5' ELSE age END AS age,
                 region,
                 CASE WHEN i % {step} = 0 AND (i // {step}) % 4 = 1 AND i // {step} < {bad_rows} THEN '2024-02-30' ELSE admitted END AS admitted,
                 CASE WHEN i % {step} = 0 AND (i // {step}) % 4 = 2 AND i // {step} < {bad_rows} THEN 'NaN' ELSE cost END AS cost,
                 CASE WHEN i % {step} = 0 AND (i // {step}) % 4 = 3 AND i // {step} < {bad_rows} THEN 'yes' ELSE smoker END AS smoker,
                 born
          FROM (SELECT row_number() OVER () - 1 AS i, * FROM read_csv('{clean}', all_varchar=true))
          ORDER BY i
        ) TO '{tmp}' (HEADER, DELIMITER ',')
    """)
    con.close()
    tmp.rename(path)


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
    from environment.declaration import declare
    from environment.ingest import build_version_file

    dictionary, problems = declare(DECLARATION)
    assert not problems, problems
    out = Path(args.out)
    temp_dir = Path(tempfile.mkdtemp(prefix="tre-bench-spill-", dir=out.parent))
    started = time.monotonic()
    result = build_version_file(source=Path(args.csv), fmt="csv", dictionary=dictionary,
                                optout_person_ids=[], out_path=out, temp_dir=temp_dir,
                                memory_limit=args.memory_limit, threads=args.threads)
    seconds = time.monotonic() - started
    peak_kib = _peak_rss_kib()
    print(json.dumps({"ok": result.ok, "seconds": round(seconds, 2), "peak_mib": round(peak_kib / 1024, 1),
                      "rows": result.row_count, "persons": result.person_count, "phases": result.timings,
                      "file_mib": round(out.stat().st_size / 2**20, 1) if out.exists() else None,
                      "error_count": result.error_count, "errors_reported": len(result.errors),
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
    parser.add_argument("--bad-rows", type=int, default=0, help="also time the refusal of a file with this many bad rows")
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
    results = [_run(args, csv, run) for run in range(args.runs)]
    if any(r is None for r in results):
        return 1
    for r in results:
        if not r["ok"]:
            print(f"  the load failed: {r['errors']}")
            return 1
    best = min(r["seconds"] for r in results)
    peak = max(r["peak_mib"] for r in results)
    verdict = "within" if best <= 20 and peak <= 1024 else "OUTSIDE"
    print(f"best {best:.1f} s, peak {peak:.0f} MiB — {verdict} the target (≤ 20 s, ≤ 1024 MiB)")
    if args.bad_rows:
        bad = workdir / f"bench-{args.rows}-{args.persons}-bad{args.bad_rows}.csv"
        if not bad.exists():
            spoil(csv, bad, args.bad_rows, args.rows)
        refusals = [_run(args, bad, run) for run in range(args.runs)]
        if any(r is None for r in refusals):
            return 1
        fastest = min(r["seconds"] for r in refusals)
        r = refusals[0]
        ratio = fastest / best
        print(f"bad file: refused in {fastest:.1f} s ({ratio:.2f}× the clean load), {r['errors_reported']} errors "
              f"reported of {r['error_count']:,}, peak {max(x['peak_mib'] for x in refusals):.0f} MiB — "
              f"{'within' if ratio <= 2 and not r['ok'] else 'OUTSIDE'} the target (≤ 2×)")
    return 0


def _run(args, csv: Path, run: int) -> dict | None:
    out = Path(args.workdir) / f"bench-out-{os.getpid()}-{run}.duckdb"
    proc = subprocess.run([sys.executable, __file__, "--child", "--csv", str(csv), "--out", str(out),
                           "--memory-limit", args.memory_limit, "--threads", str(args.threads)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return None
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{csv.name} run {run + 1}: {line['seconds']:.1f} s, peak {line['peak_mib']:.0f} MiB, {line['rows']:,} rows, "
          f"{line['persons']:,} persons, store file {line['file_mib']} MiB, {line['error_count']:,} errors; "
          f"phases {line['phases']}")
    return line


if __name__ == "__main__":
    sys.exit(main())
