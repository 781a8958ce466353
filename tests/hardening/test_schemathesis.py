"""Schemathesis against the project's own OpenAPI schema, as every role, on a real server backed by
PostgreSQL with DEBUG off: zero 5xx answers and zero answers that break the schema (status codes,
content types, headers, bodies). Bounded examples per operation so the suite stays within minutes."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.servers import ROOT, demo_tokens, drop_postgres_database, fresh_postgres_database, live_server

ROLES = ["anonymous", "rita", "sam", "dina", "olu", "cass", "aud"]  # lead, member, DAC, checker, custodian, auditor
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def server():
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("the schemathesis run needs PostgreSQL: run it with `make test`")
    base_url = f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/postgres"
    url = fresh_postgres_database(base_url, f"tre_schemathesis_{os.getpid()}")  # per run: parallel runs never collide
    try:
        with live_server(database_url=url, seed_rows=3000, debug=False, gunicorn=True) as (base, env):
            yield base, demo_tokens(env["TRE_SEED_OUTPUT"])
    finally:
        drop_postgres_database(url)


@pytest.mark.parametrize("role", ROLES)
def test_no_server_errors_and_no_schema_violations(server, role):
    base, tokens = server
    headers = [] if role == "anonymous" else ["-H", f"Authorization: Token {tokens[role]}"]
    r = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/schema/", *headers,
                        "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", "2",
                        "--workers", "2", "--seed", "20261122", "--no-color", "--generation-database", "none",
                        "--request-timeout", "30"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = r.stdout[-6000:]
    assert r.returncode == 0, f"schemathesis as {role} found problems:\n{summary}\n{r.stderr[-2000:]}"
    assert "generated" in summary
