"""The processes as deployed, for fault tests: gunicorn (the API), ``celery worker`` and ``celery
beat``, each its own process group on the test database, a broker and the test store — as
docker-compose.yml runs them. A test talks to the API over HTTP with tokens, kills what it likes,
and reads the database directly to assert what happened to every object.

Recovery timing comes from the environment when set (``TRE_HEARTBEAT_STALE_SECONDS``,
``TRE_SWEEP_INTERVAL``), else short test values; run the fault tests with the production defaults
(30 and 30) to measure what docs/operations.md reports.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import ROOT, WorkerProcess, start_worker, stop_worker, wait_for
from tests.servers import free_port

STALE_SECONDS = int(os.environ.get("TRE_HEARTBEAT_STALE_SECONDS", "10"))
SWEEP_INTERVAL = int(os.environ.get("TRE_SWEEP_INTERVAL", "3"))
RECOVERY_BOUND = 90  # seconds from a fault to every object settled (the bound)


def recovery_env() -> dict:
    return {"TRE_HEARTBEAT_STALE_SECONDS": str(STALE_SECONDS), "TRE_SWEEP_INTERVAL": str(SWEEP_INTERVAL)}


def measured(fault: str, seconds: float) -> None:
    """Print a measured recovery time (``pytest -s`` shows them; docs/operations.md reports them)."""
    print(f"\nRECOVERY {fault}: {seconds:.1f} s (stale {STALE_SECONDS} s, sweep every {SWEEP_INTERVAL} s)")


# --- HTTP, as a client of the deployed API -----------------------------------------------------

class HttpResponse:
    def __init__(self, status, headers, content):
        self.status_code, self.headers, self.content = status, headers, content

    def get(self, header, default=None):
        return self.headers.get(header, default)

    def json(self):
        return json.loads(self.content)

    @property
    def data(self):
        try:
            return self.json()
        except ValueError:
            return self.content


class HttpClient:
    """The subset of DRF's APIClient that ``tests.scenario.Scenario`` uses, over real HTTP."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 30):
        self.base, self.token, self.timeout = base, token, timeout

    def request(self, method, path, data=None, format=None):
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        body = None
        if format == "multipart":
            boundary = uuid.uuid4().hex
            body = _multipart(data or {}, boundary)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return HttpResponse(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, dict(exc.headers), exc.read())

    def get(self, path, data=None, **kwargs):
        return self.request("GET", path)

    def post(self, path, data=None, format=None, **kwargs):
        return self.request("POST", path, data if data is not None else {}, format)


def _multipart(fields: dict, boundary: str) -> bytes:
    out = []
    for name, value in fields.items():
        out.append(f"--{boundary}\r\n".encode())
        if hasattr(value, "read"):
            value.seek(0)
            filename = getattr(value, "name", "upload")
            ctype = getattr(value, "content_type", None) or "application/octet-stream"
            out.append(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                       f"Content-Type: {ctype}\r\n\r\n".encode())
            out.append(value.read())
        else:
            out.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode())
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def token_for(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


# --- the processes --------------------------------------------------------------------------------

class Process:
    def __init__(self, name, proc, log_path):
        self.name, self.proc, self.log_path = name, proc, log_path

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def kill(self, sig=signal.SIGKILL):
        """The whole process group (parent and children), without warning by default."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=20)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.kill(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)


def process_env(broker_url: str, **extra) -> dict:
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    auth = f"{db['USER']}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{db['USER']}@"
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker_url, "CELERY_TASK_ALWAYS_EAGER": "false", "TRE_ENV": "test",
        "TRE_STORE_DIR": str(settings.TRE_STORE_DIR), "PYTHONUNBUFFERED": "1", **recovery_env(), **extra,
    })
    return env


def _spawn(name, command, env) -> Process:
    log = tempfile.NamedTemporaryFile(prefix=f"tre-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return Process(name, proc, log.name)


class Deployment:
    """``api()``, ``worker()``, ``beat()`` start the processes; ``stop()`` ends them all."""

    def __init__(self, broker_url: str, **extra_env):
        self.broker_url, self.extra_env = broker_url, extra_env
        self.processes: list = []
        self.base = None
        self.schedule_file = Path(tempfile.mkdtemp(prefix="tre-beat-")) / "celerybeat-schedule"

    def env(self, **extra):
        return process_env(self.broker_url, **{**self.extra_env, **extra})

    def api(self, wait: bool = True) -> str:
        port = free_port()
        self.gunicorn = _spawn("gunicorn", [sys.executable, "-m", "gunicorn", "tre.wsgi:application", "-b",
                                            f"127.0.0.1:{port}", "-w", "2", "--timeout", "60"], self.env())
        self.processes.append(self.gunicorn)
        self.base = f"http://127.0.0.1:{port}"
        if wait:
            self.wait_api()
        return self.base

    def wait_api(self):
        server = self.gunicorn

        def answers():
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=5)
            except urllib.error.HTTPError:
                return True  # 503 when a dependency is down is still an answer
            except OSError:
                assert server.proc.poll() is None, server.log()[-3000:]
                return False
            return True

        wait_for(answers, timeout=60, interval=0.2, message="gunicorn to answer")

    def start(self):
        """All three at once (they start in parallel); ``self.w`` and ``self.b`` are the worker and beat."""
        self.api(wait=False)
        self.b = self.beat(wait=False)
        self.w = self.worker()
        self.wait_api()
        self.wait_beat(self.b)
        return self

    def worker(self, **extra) -> WorkerProcess:
        worker = start_worker(extra_env={"CELERY_BROKER_URL": self.broker_url, **recovery_env(), **self.extra_env, **extra})
        self.processes.append(worker)
        return worker

    def beat(self, wait: bool = True) -> Process:
        beat = _spawn("beat", [sys.executable, "-m", "celery", "-A", "tre", "beat", "-l", "INFO",
                               "--schedule", str(self.schedule_file)], self.env())
        self.processes.append(beat)
        if wait:
            self.wait_beat(beat)
        return beat

    def wait_beat(self, beat):
        wait_for(lambda: "beat: Starting" in beat.log() or beat.proc.poll() is not None, timeout=60,
                 message="celery beat to start")
        assert beat.proc.poll() is None, beat.log()[-3000:]

    def client(self, user=None) -> HttpClient:
        return HttpClient(self.base, token_for(user) if user is not None else None)

    def stop(self):
        """SIGTERM to every process group at once, then wait (SIGKILL what outlives 20 s)."""
        running = [p for p in self.processes if p.proc.poll() is None]
        for process in running:
            try:
                os.killpg(process.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in running:
            try:
                process.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.proc.pid, signal.SIGKILL)
                process.proc.wait(timeout=10)
        for process in self.processes:
            if isinstance(process, WorkerProcess):
                stop_worker(process)  # closes its log
        self.processes = []


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL to the worker's whole process group: the parent and every pool process, no warning."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    if worker.log_file is not None and not worker.log_file.closed:
        worker.log_file.close()


def purge(broker_url: str) -> None:
    import redis

    redis.Redis.from_url(broker_url, socket_connect_timeout=2).flushdb()


def scheduling_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "SchedulingError" in line or "Couldn't apply scheduled task" in line or "ERROR" in line]
