import json
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from audit.models import AuditEvent
from tests.factories import PASSWORD
from tre import errors

ROOT = Path(__file__).resolve().parents[2]


def _settings_in_subprocess(env: dict, code: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TRE_", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"))}
    clean.update(env)
    return subprocess.run([sys.executable, "-c", f"import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE','tre.settings'); django.setup(); {code}"],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


# --- settings ---------------------------------------------------------------------------------

def test_embedded_default_uses_sqlite_in_process_tasks_and_var_store():
    r = _settings_in_subprocess({}, "from django.conf import settings as s; import json; print(json.dumps("
                                    "[s.DATABASES['default']['ENGINE'], str(s.DATABASES['default']['NAME']), s.CELERY_TASK_ALWAYS_EAGER, str(s.TRE_STORE_DIR), s.PASSWORD_HASHERS[0]]))")
    assert r.returncode == 0, r.stderr
    engine, name, eager, store, hasher = json.loads(r.stdout.strip().splitlines()[-1])
    assert hasher == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert engine.endswith("sqlite3") and name == str(ROOT / "var" / "tre.sqlite3")
    assert eager is True and store == str(ROOT / "var" / "store")


def test_services_mode_uses_postgresql_and_redis():
    r = _settings_in_subprocess(
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tre", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "TRE_STORE_DIR": "/tmp/s"},
        "from django.conf import settings as s; import json; print(json.dumps([s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CELERY_TASK_ALWAYS_EAGER]))")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["django.db.backends.postgresql", "redis://127.0.0.1:6379/0", False]


@pytest.mark.parametrize("env,needle", [
    ({}, "SECRET_KEY"),
    ({"SECRET_KEY": "x" * 60}, "TRE_PSEUDONYM_KEY"),
])
def test_production_refuses_default_secrets(env, needle):
    base = {"TRE_ENV": "production", "ALLOWED_HOSTS": "tre.example.org", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tre",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
    r = _settings_in_subprocess({**base, **env}, "pass")
    assert r.returncode != 0
    assert "production settings refused" in r.stderr and needle in r.stderr


def test_production_check_deploy_is_clean():
    env = {"TRE_ENV": "production", "ALLOWED_HOSTS": "tre.example.org", "SECRET_KEY": "k" * 30 + "Q9!z" * 10,
           "TRE_PSEUDONYM_KEY": "p" * 40, "TRE_CELLKEY_SECRET": "c" * 40, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tre",
           "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TRE_"))}
    r = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                       env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues" in r.stdout


# --- token auth -------------------------------------------------------------------------------

def test_token_good_and_bad_password(make_user, anon):
    make_user("erin")
    r = anon.post("/api/v1/auth/token/", {"username": "erin", "password": PASSWORD}, format="json")
    assert r.status_code == 200 and len(r.json()["token"]) == 40 and "expires_at" in r.json()
    anon.credentials(HTTP_AUTHORIZATION=f"Token {r.json()['token']}")
    assert anon.get("/api/v1/me/").json()["username"] == "erin"
    bad = anon.post("/api/v1/auth/token/", {"username": "erin", "password": "nope-nope-nope"}, format="json")
    assert bad.status_code == 400 and "credentials" in json.dumps(bad.json())
    missing = anon.post("/api/v1/auth/token/", {"username": "erin"}, format="json")
    assert missing.status_code == 400 and "password" in missing.json()


def test_bad_token_is_401(anon, db):
    anon.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert anon.get("/api/v1/me/").status_code == 401


def test_repeated_failed_logins_are_throttled(make_user, anon):
    make_user("frank")
    codes = [anon.post("/api/v1/auth/token/", {"username": "frank", "password": f"guess-{i}-xx"}, format="json").status_code
             for i in range(12)]
    assert codes[:10] == [400] * 10 and codes[10:] == [429, 429]
    # even the right password is refused while throttled: guessing cannot continue
    r = anon.post("/api/v1/auth/token/", {"username": "frank", "password": PASSWORD}, format="json")
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_expired_token_is_refused_and_login_issues_a_new_one(make_user, anon, settings):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    make_user("gina")
    key = anon.post("/api/v1/auth/token/", {"username": "gina", "password": PASSWORD}, format="json").json()["token"]
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(hours=settings.TRE_TOKEN_TTL_HOURS + 1))
    anon.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert anon.get("/api/v1/me/").status_code == 401
    anon.credentials()
    new = anon.post("/api/v1/auth/token/", {"username": "gina", "password": PASSWORD}, format="json").json()["token"]
    assert new != key


# --- me -------------------------------------------------------------------------------------

def test_me_shows_roles_and_organisation(make_user, client_for, anon):
    user = make_user("hana", role=["custodian", "auditor"], organisation="Org H")
    body = client_for(user).get("/api/v1/me/").json()
    assert body["roles"] == ["auditors", "custodians"] and body["organisation_name"] == "Org H"
    assert isinstance(body["organisation"], int) and body["projects"] == []
    assert anon.get("/api/v1/me/").status_code == 401


# --- healthz --------------------------------------------------------------------------------

def test_healthz_ok(anon, db):
    r = anon.get("/healthz")
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("database", "broker", "store")} == {"database": "ok", "broker": "ok", "store": "ok"}


def test_healthz_reports_the_broker_down_and_answers_fast(anon, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    started = time.monotonic()
    r = anon.get("/healthz")
    elapsed = time.monotonic() - started
    assert r.status_code == 503 and r.json()["broker"] == "unreachable" and r.json()["database"] == "ok"
    assert elapsed < 3.0, f"healthz took {elapsed:.1f}s with the broker down"


def test_healthz_reports_a_missing_store(anon, db, settings, tmp_path):
    settings.TRE_STORE_DIR = tmp_path / "nope"
    assert anon.get("/healthz").json()["store"] == "missing"


# --- tre_user -------------------------------------------------------------------------------

def test_tre_user_is_idempotent_and_rejects_unknown_roles(db):
    from django.contrib.auth import get_user_model

    out = StringIO()
    call_command("tre_user", "ivan", "--password", "pw-123456", "--role", "dac", "--organisation", "NHS Trust", "--sector", "nhs", stdout=out)
    call_command("tre_user", "ivan", "--password", "pw-123456", "--role", "dac", "--organisation", "NHS Trust", stdout=out)
    user = get_user_model().objects.get(username="ivan")
    assert list(user.groups.values_list("name", flat=True)) == ["dac"]
    assert user.profile.organisation.name == "NHS Trust" and user.profile.organisation.sector == "nhs"
    assert user.check_password("pw-123456")
    assert AuditEvent.objects.filter(action="role.granted").count() == 1
    with pytest.raises(CommandError, match="unknown role 'wizard'"):
        call_command("tre_user", "ivan", "--role", "wizard")
    with pytest.raises(CommandError, match="belongs to"):
        call_command("tre_user", "ivan", "--organisation", "Other Org")


# --- the error handler ---------------------------------------------------------------------------

@pytest.mark.parametrize("exc,status,body", [
    (errors.Invalid(fields={"title": ["required"]}), 400, {"title": ["required"]}),
    (errors.Forbidden("only a DAC member may do this", rule="role_dac"), 403, {"detail": "only a DAC member may do this", "rule": "role_dac"}),
    (errors.NotFound("no such project"), 404, {"detail": "no such project"}),
    (errors.WrongState("project is approved, not draft"), 409, {"detail": "project is approved, not draft"}),
    (errors.Unavailable("the broker is down", dependency="broker"), 503, {"detail": "the broker is down", "dependency": "broker"}),
    (OperationalError("connection refused"), 503, {"detail": "the database is unavailable; try again shortly", "dependency": "database"}),
])
def test_error_handler_maps_domain_errors(exc, status, body, db):
    class Boom(APIView):
        permission_classes: list = []

        def get(self, request):
            raise exc

    response = Boom.as_view()(APIRequestFactory().get("/boom"))
    assert response.status_code == status and response.data == body


def test_openapi_schema_and_docs_are_public(anon, db):
    schema = anon.get("/api/schema/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content and b"/api/v1/me/" in schema.content
    assert anon.get("/api/docs/").status_code == 200


def test_pagination_shape(make_user, client_for):
    body = client_for(make_user(role="auditor")).get("/api/v1/audit/events/").json()
    assert set(body) == {"count", "next", "previous", "results"}


# --- the real worker ------------------------------------------------------------------------

@pytest.mark.worker
def test_a_task_runs_on_the_real_worker(celery_worker_process):
    from audit.tasks import ping
    from tests.conftest import wait_for

    ping.delay("hello-worker")
    wait_for(lambda: AuditEvent.objects.filter(action="system.ping", data__label="hello-worker").exists(), timeout=30,
             message="the worker to run the ping task")
    assert "audit.tasks.ping" in celery_worker_process.log()
