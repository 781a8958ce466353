"""``pip install -r requirements.txt`` alone (what the Dockerfile does) gives a working service.

A fresh virtual environment gets the runtime requirements and nothing else; in it, with production
settings, every runtime entry point is imported — the web (WSGI application, gunicorn), the Celery
app with every task module, the worker and beat, the Redis transport — and one task is really
published to Redis (the enqueue path that once answered 500 because kombu's Redis transport
imports ``packaging``, which only the test requirements installed).
"""

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import importlib, django
    django.setup()
    from django.core.management import call_command
    call_command("check", "--deploy", "--fail-level", "ERROR")
    from tre.wsgi import application
    import gunicorn.app.wsgiapp, celery.apps.worker, celery.apps.beat, kombu.transport.redis
    from tre.celery import app
    app.loader.import_default_modules()
    modules = sorted({t.__module__ for name, t in app.tasks.items() if not name.startswith("celery.")})
    for m in modules:
        importlib.import_module(m)
    result = app.send_task("audit.tasks.ping", args=["prod-probe"], queue="default")
    print("tasks:", ",".join(modules))
    print("sent:", result.id)
""")


@pytest.fixture(scope="module")
def production_venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("prod-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "-r", str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-4000:]
    return python


def test_the_runtime_requirements_alone_run_every_entry_point(production_venv, tmp_path):
    broker = settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/9"  # a database of its own: nothing else reads it
    client = redis.Redis.from_url(broker)
    client.flushdb()
    db = settings.DATABASES["default"]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TRE_ENV": "production",
        "DEBUG": "false",
        "SECRET_KEY": "p" * 64,
        "TRE_PSEUDONYM_KEY": "k" * 48,
        "TRE_CELLKEY_SECRET": "c" * 48,
        "ALLOWED_HOSTS": "tre.example.org",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "TRE_STORE_DIR": str(tmp_path / "store"),
        "DJANGO_SETTINGS_MODULE": "tre.settings",
    }
    probe = subprocess.run([str(production_venv), "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr[-4000:]
    lines = dict(line.split(": ", 1) for line in probe.stdout.splitlines() if ": " in line)
    assert set(lines["tasks"].split(",")) >= {"audit.tasks", "environment.tasks", "projects.tasks", "queries.tasks"}
    assert client.llen("default") == 1  # the task really reached the broker
    client.flushdb()
    assert sys.prefix not in str(production_venv)
