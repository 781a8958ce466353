"""Test infrastructure: PostgreSQL via pytest-django, API clients per role, a real Celery worker.

Ordinary tests run Celery tasks in-process (eager). Tests marked ``worker`` (or using the
``celery_worker_process`` fixture) get a real ``celery worker`` subprocess on the real Redis broker,
connected to the test database; they must use ``transactional_db`` so the worker sees the rows.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db.backends.signals import connection_created
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent


def _allow_audit_truncate(sender, connection, **kwargs):
    # Lets Django flush the audit table between transactional tests. Never set outside tests.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET tre.audit_truncate_ok = 'on'")


connection_created.connect(_allow_audit_truncate, dispatch_uid="tre-tests-audit-truncate")


@pytest.fixture(scope="session", autouse=True)
def _test_store():
    """Every test session gets its own empty store directory (shared with the worker)."""
    from django.conf import settings

    path = Path(tempfile.mkdtemp(prefix="tre-test-store-"))
    old = settings.TRE_STORE_DIR
    settings.TRE_STORE_DIR = path
    yield path
    settings.TRE_STORE_DIR = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _eager_celery(settings):
    """In-process tasks unless a test asks for the real worker."""
    from tre.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Argon2 (the product's hasher: tests/tre/test_foundation.py checks it) costs ~0.3 s a user;
    tests make dozens of users, so they hash with MD5. Logging in works the same."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()


# --- users and clients -------------------------------------------------------------------

@pytest.fixture
def make_user(db):
    from tests.factories import UserFactory

    def make(username=None, role=None, organisation=None, **kwargs):
        return UserFactory(username=username, role=role, organisation=organisation, **kwargs) if username else \
            UserFactory(role=role, organisation=organisation, **kwargs)

    return make


def _client_for(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


@pytest.fixture
def client_for():
    return _client_for


@pytest.fixture
def anon():
    return APIClient()


# --- the real Celery worker ----------------------------------------------------------------

def _broker_url():
    from django.conf import settings

    return settings.CELERY_BROKER_URL


def _require_redis(url):
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.fail(f"Redis at {url} is not reachable ({exc}); start it with: "
                    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no")


class WorkerProcess:
    def __init__(self, proc, env, log_path, log_file=None):
        self.proc, self.env, self.log_path, self.log_file = proc, env, log_path, log_file

    @property
    def pid(self):
        return self.proc.pid

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


def start_worker(*, queues="default,queries,ingest", concurrency=2, extra_env=None) -> WorkerProcess:
    from django.conf import settings
    from django.db import connection

    url = _broker_url()
    if url.startswith("memory://"):
        pytest.fail("the worker tests need CELERY_BROKER_URL=redis://…; run them with `make test`")
    _require_redis(url)
    db = connection.settings_dict
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "TRE_STORE_DIR": str(settings.TRE_STORE_DIR),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    })
    if db.get("PASSWORD"):
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(f"{db['USER']}@", f"{db['USER']}:{db['PASSWORD']}@")
    log_file = tempfile.NamedTemporaryFile(prefix="tre-worker-", suffix=".log", delete=False)
    log_path = log_file.name
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tre", "worker", "-Q", queues, "-c", str(concurrency),
         "--pool", "prefork", "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"],
        cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = Path(log_path).read_text(errors="replace")
        if " ready." in text:
            return WorkerProcess(proc, env, log_path, log_file)
        if proc.poll() is not None:
            pytest.fail(f"the Celery worker exited at start:\n{text[-4000:]}")
        time.sleep(0.2)
    stop_worker(WorkerProcess(proc, env, log_path, log_file))
    pytest.fail(f"the Celery worker did not become ready in 60 s:\n{Path(log_path).read_text()[-4000:]}")


def stop_worker(worker: WorkerProcess, sig=signal.SIGTERM):
    if worker.proc.poll() is None:
        try:
            os.killpg(worker.proc.pid, sig)
            worker.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(worker.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.proc.wait(timeout=10)
    if worker.log_file is not None and not worker.log_file.closed:
        worker.log_file.close()


def _purge_queues():
    from tre.celery import app

    with app.connection_for_write() as conn:
        for queue in ("default", "queries", "ingest"):
            conn.default_channel.queue_purge(queue)


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real ``celery worker`` subprocess on the real broker, against the test database."""
    from tre.celery import app

    _purge_queues()
    app.conf.task_always_eager = False
    worker = start_worker()
    yield worker
    stop_worker(worker)
    app.conf.task_always_eager = True


def wait_for(predicate, timeout=30.0, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
