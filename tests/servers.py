"""A real tre server in a subprocess (``runserver``), seeded with the demo, for black-box tests."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TRE_", "CACHE_URL", "DEBUG"))}
    # runserver starts a thread per request: persistent connections would pile up to max_connections
    env.update({"PYTHONUNBUFFERED": "1", "DB_CONN_MAX_AGE": "0", **overrides})
    return env


@contextmanager
def live_server(*, database_url: str | None = None, seed_rows: int = 20_000, debug: bool = True, gunicorn: bool = False):
    """Migrate, seed the demo and serve (``runserver``, or gunicorn with 3 workers for heavy
    traffic); yields ``(base_url, env)``. In-process tasks (no broker)."""
    tmp = Path(tempfile.mkdtemp(prefix="tre-server-"))
    env = clean_env(DATABASE_URL=database_url or f"sqlite:///{tmp / 'tre.sqlite3'}", TRE_STORE_DIR=str(tmp / "store"),
                    DEBUG="true" if debug else "false")
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    seed = subprocess.run(manage + ["tre_demo_seed", "--rows", str(seed_rows)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if seed.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{seed.stdout[-3000:]}\n{seed.stderr[-3000:]}")
    env["TRE_SEED_OUTPUT"] = seed.stdout
    port = free_port()
    log = open(tmp / "server.log", "w")
    command = ([sys.executable, "-m", "gunicorn", "tre.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "3",
                "--timeout", "60"] if gunicorn else manage + ["runserver", "--noreload", f"127.0.0.1:{port}"])
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/schema/", timeout=5).read()
                break
            except Exception as exc:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start:\n" + (tmp / "server.log").read_text()[-3000:]) from exc
                time.sleep(0.3)
        yield base, env
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        if server.returncode not in (0, -15):
            print((tmp / "server.log").read_text()[-3000:])


def fresh_postgres_database(base_url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``base_url``; return its URL."""
    from urllib.parse import urlparse

    import psycopg2

    u = urlparse(base_url)
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    auth = f"{u.username}:{u.password}@" if u.password else f"{u.username}@"
    return f"postgres://{auth}{u.hostname}:{u.port or 5432}/{name}"


def drop_postgres_database(url: str) -> None:
    from urllib.parse import urlparse

    import psycopg2

    u = urlparse(url)
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{u.path.lstrip("/")}" WITH (FORCE)')
    conn.close()


def demo_tokens(seed_output: str) -> dict[str, str]:
    """The demo users' tokens, from what ``tre_demo_seed`` printed."""
    tokens = {}
    for line in seed_output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and len(parts[-1]) == 40 and all(c in "0123456789abcdef" for c in parts[-1]):
            tokens[parts[0]] = parts[-1]
    return tokens
