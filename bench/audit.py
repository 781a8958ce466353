"""Audit benchmark: appends per second with 1 and 8 concurrent writers, and verify_audit on 1M events.

Run by hand against a scratch PostgreSQL database (it is emptied):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tre_bench .venv/bin/python bench/audit.py [--events 1000000]
Targets (issue 3): >= 1,000 appends/s with 8 writers; verification of 1M events in <= 10 s.
"""

import argparse
import io
import multiprocessing as mp
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tre_bench")


def _setup():
    import django

    django.setup()


def _ensure_db():
    from urllib.parse import urlparse

    import psycopg2

    u = urlparse(os.environ["DATABASE_URL"])
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [u.path.lstrip("/")])
        if not c.fetchone():
            c.execute(f'CREATE DATABASE "{u.path.lstrip("/")}"')
    conn.close()


def _empty():
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SET tre.audit_truncate_ok = 'on'; TRUNCATE audit_auditevent; RESET tre.audit_truncate_ok")


def _writer(n, k, start_evt):
    _setup()
    from django.db import transaction

    from audit.services import audit_record

    start_evt.wait()
    for i in range(n):
        with transaction.atomic():
            audit_record(actor=f"bench{k}", action="system.ping", target=("thing", i), project=1,
                         data={"k": k, "i": i, "comment": "a typical short comment"})


def appends_per_second(writers: int, per_writer: int) -> float:
    start_evt = mp.Event()
    procs = [mp.Process(target=_writer, args=(per_writer, k, start_evt)) for k in range(writers)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import Django and connect
    t0 = time.perf_counter()
    start_evt.set()
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"writer exited {p.exitcode}"
    return writers * per_writer / (time.perf_counter() - t0)


def load_chain(n: int):
    """Write a valid chain of n events with COPY (the hashes computed exactly as audit_record does)."""
    from django.db import connection

    from audit.chain import GENESIS, canonical, event_hash

    prev, t = GENESIS, datetime(2026, 1, 1, tzinfo=UTC)
    cols = "seq,timestamp,actor,actor_id,action,target_type,target_id,project,data,ip,prev_hash,hash"
    batch = 100_000
    with connection.cursor() as c:
        raw = c.cursor if hasattr(c, "cursor") else c
        for start in range(1, n + 1, batch):
            buf = io.StringIO()
            for seq in range(start, min(n, start + batch - 1) + 1):
                ts = t + timedelta(milliseconds=seq)
                data = {"i": seq, "decision": "approve", "comment": "looks fine"}
                h = event_hash(prev, seq=seq, timestamp=ts, actor="bench", actor_id=1, action="bench.loaded",
                               target_type="project", target_id=str(seq % 500), project=seq % 500, data=data, ip="127.0.0.1")
                buf.write(f"{seq}\t{ts.isoformat()}\tbench\t1\tbench.loaded\tproject\t{seq % 500}\t{seq % 500}\t"
                          f"{canonical(data).decode()}\t127.0.0.1\t{prev}\t{h}\n")
                prev = h
            buf.seek(0)
            raw.copy_expert(f"COPY audit_auditevent ({cols}) FROM STDIN", buf)
    connection.commit() if not connection.get_autocommit() else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=4000, help="appends per run (split across writers)")
    args = parser.parse_args()
    _ensure_db()
    _setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.verify import verify_chain

    call_command("migrate", verbosity=0)
    _empty()
    connection.close()
    one = appends_per_second(1, args.appends)
    _empty()
    connection.close()
    eight = appends_per_second(8, args.appends // 8)
    assert verify_chain().valid, "the concurrent run forked the chain"
    print(f"appends/s, 1 writer : {one:,.0f}")
    print(f"appends/s, 8 writers: {eight:,.0f}   (target >= 1,000)")
    _empty()
    t0 = time.perf_counter()
    load_chain(args.events)
    print(f"loaded {args.events:,} events in {time.perf_counter() - t0:.1f}s (setup, not measured)")
    connection.close()
    t0 = time.perf_counter()
    result = verify_chain()
    elapsed = time.perf_counter() - t0
    print(f"verify_audit on {result.events_checked:,} events: {elapsed:.2f}s, valid={result.valid}   (target <= 10 s)")
    _empty()


if __name__ == "__main__":
    main()
