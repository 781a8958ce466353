"""Load benchmark (loopback only, bounded in time): 50 concurrent researchers submit queries and poll
them, two checkers review, for 60 seconds, against gunicorn + a Celery worker + PostgreSQL + Redis.
Reports throughput, API latency p50/p95 (non-query endpoints separately), queue wait and errors,
then verifies the audit chain.

    .venv/bin/python bench/load.py [--researchers 50] [--seconds 60] [--gunicorn-workers 4]
Needs PostgreSQL and Redis on 127.0.0.1 (a scratch database `tre_bench_load` is created).
Targets (issue 9): 0 errors; p95 <= 200 ms for non-query endpoints on 2 cores.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import clean_env, demo_tokens, free_port, fresh_postgres_database  # noqa: E402

QUERIES = [
    "SELECT region, count(*) AS n, avg(value) AS mean_cost FROM gp_events GROUP BY region",
    "SELECT age_band, sex, count(DISTINCT person_id) AS people FROM gp_events GROUP BY age_band, sex",
    "SELECT code, count(*) AS n, sum(value) AS cost FROM gp_events WHERE smoker GROUP BY code",
    "SELECT region, age_band, median(value) AS med FROM gp_events GROUP BY region, age_band",
]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)  # kind -> seconds
        self.errors = []
        self.queries_done = 0
        self.reviews = 0

    def add(self, kind, seconds):
        with self.lock:
            self.latency[kind].append(seconds)

    def error(self, text):
        with self.lock:
            self.errors.append(text)


def call(base, method, path, token=None, body=None, stats=None, kind=None, expect=(200, 201, 202)):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except Exception as exc:  # connection reset, timeout: an error
        if stats:
            stats.error(f"{method} {path}: {exc}")
        return None, None
    elapsed = time.perf_counter() - started
    if stats and kind:
        stats.add(kind, elapsed)
    if status not in expect:
        if stats:
            stats.error(f"{method} {path} → {status} {raw[:200]!r}")
        return status, None
    return status, (json.loads(raw) if raw else None)


def researcher(base, token, project_id, deadline, stats, poll):
    rng = random.Random(token)
    while time.monotonic() < deadline:
        _, q = call(base, "POST", f"/api/v1/projects/{project_id}/queries/", token, {"sql": rng.choice(QUERIES)},
                    stats, "query_submit", expect=(201,))
        if not q:
            time.sleep(0.5)
            continue
        while time.monotonic() < deadline + 60:
            _, body = call(base, "GET", f"/api/v1/queries/{q['id']}/", token, stats=stats, kind="api")
            if body and body["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(poll)
        if body and body["status"] == "completed":
            with stats.lock:
                stats.queries_done += 1
            call(base, "GET", f"/api/v1/outputs/{body['output']}/", token, stats=stats, kind="api")
            if rng.random() < 0.3:
                call(base, "POST", f"/api/v1/outputs/{body['output']}/request-release/", token, stats=stats, kind="api")
        elif body:
            stats.error(f"query {q['id']} ended {body['status']}: {body.get('error')}")
        call(base, "GET", "/api/v1/me/", token, stats=stats, kind="api")
        time.sleep(rng.uniform(0.2, 1.0))


def checker(base, token, deadline, stats):
    while time.monotonic() < deadline:
        _, page = call(base, "GET", "/api/v1/outputs/?status=submitted&page_size=5", token, stats=stats, kind="api")
        for item in (page or {}).get("results", []):
            call(base, "GET", f"/api/v1/outputs/{item['id']}/", token, stats=stats, kind="api")
            status, _ = call(base, "POST", f"/api/v1/outputs/{item['id']}/reviews/", token,
                             {"decision": "approve", "comment": "Checked under load."}, stats, "api", expect=(200, 409))
            if status == 200:
                with stats.lock:
                    stats.reviews += 1
        time.sleep(0.5)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000 if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--researchers", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between a researcher's status polls")
    args = parser.parse_args()

    db = fresh_postgres_database("postgres://postgres@127.0.0.1:5432/postgres", "tre_bench_load")
    store = Path(f"/tmp/tre-bench-load-{os.getpid()}")
    store.mkdir(parents=True, exist_ok=True)
    broker = "redis://127.0.0.1:6379/10"
    base_env = clean_env(DATABASE_URL=db, TRE_STORE_DIR=str(store), DEBUG="false")
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v0"], cwd=ROOT, env=base_env, check=True)
    seed = subprocess.run(manage + ["tre_demo_seed", "--rows", str(args.rows)], cwd=ROOT, env=base_env,
                          capture_output=True, text=True, check=True)
    tokens = demo_tokens(seed.stdout)
    researchers = [f"load{i:02d}" for i in range(args.researchers)]
    make_users = ("from organisations.services import user_upsert\n"
                  f"for name in {researchers!r}:\n"
                  "    user_upsert(username=name, password='load-password-123', organisation='University of Exampleton')")
    subprocess.run(manage + ["shell", "-c", make_users], cwd=ROOT, env=base_env, check=True, capture_output=True)
    env = {**base_env, "CELERY_BROKER_URL": broker, "CACHE_URL": "redis://127.0.0.1:6379/9"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = open(store / "services.log", "w")
    procs = [
        subprocess.Popen([sys.executable, "-m", "gunicorn", "tre.wsgi:application", "-b", f"127.0.0.1:{port}",
                          "-w", str(args.gunicorn_workers), "--threads", "4", "--timeout", "60"],
                         cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "tre", "worker", "-Q", "default,queries,ingest", "-c", "2",
                          "-l", "WARNING", "--without-gossip", "--without-mingle"],
                         cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True),
    ]
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except Exception:
                time.sleep(0.3)
        _, me = call(base, "GET", "/api/v1/me/", tokens["sam"])
        project_id = me["projects"][-1]["id"]
        user_tokens = []
        for name in researchers:
            call(base, "POST", f"/api/v1/projects/{project_id}/members/", tokens["rita"], {"username": name})
            _, t = call(base, "POST", "/api/v1/auth/token/", None, {"username": name, "password": "load-password-123"})
            user_tokens.append(t["token"])
        stats = Stats()
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=researcher, args=(base, t, project_id, deadline, stats, args.poll)) for t in user_tokens]
        threads += [threading.Thread(target=checker, args=(base, tokens[c], deadline, stats)) for c in ("olu", "otto")]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 120)
        wall = time.monotonic() - started
        _, verify = call(base, "GET", "/api/v1/audit/verify/", tokens["aud"])
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
    waits = _queue_waits(db)
    api = stats.latency["api"]
    submits = stats.latency["query_submit"]
    total = sum(len(v) for v in stats.latency.values())
    print(f"{args.researchers} researchers (polling every {args.poll}s) + 2 checkers for {args.seconds}s (wall {wall:.0f}s), "
          f"gunicorn {args.gunicorn_workers} workers x 4 threads, 1 Celery worker (2 processes), 2 cores")
    print(f"requests: {total} ({total / wall:.1f}/s); queries completed: {stats.queries_done} "
          f"({stats.queries_done / wall:.2f}/s); reviews: {stats.reviews}")
    print(f"non-query API latency: p50 {pct(api, 50):.0f} ms, p95 {pct(api, 95):.0f} ms, max {pct(api, 100):.0f} ms "
          f"over {len(api)} requests   (target p95 <= 200 ms)")
    print(f"query submission latency: p50 {pct(submits, 50):.0f} ms, p95 {pct(submits, 95):.0f} ms")
    if waits:
        print(f"queue wait (submitted → started): p50 {statistics.median(waits):.0f} ms, "
              f"p95 {pct([w / 1000 for w in waits], 95):.0f} ms, max {max(waits):.0f} ms")
    print(f"errors: {len(stats.errors)}   (target 0)")
    for e in stats.errors[:10]:
        print("   ", e)
    print(f"audit chain after the run: {verify}")


def _queue_waits(db_url):
    from urllib.parse import urlparse

    import psycopg2

    u = urlparse(db_url)
    conn = psycopg2.connect(host=u.hostname, port=u.port, user=u.username, dbname=u.path.lstrip("/"))
    with conn.cursor() as c:
        c.execute("SELECT (timings->>'queue_wait_ms')::float FROM queries_query WHERE timings ? 'queue_wait_ms'")
        waits = [r[0] for r in c.fetchall()]
    conn.close()
    return waits


if __name__ == "__main__":
    main()
