"""A request whose transaction loses a deadlock is run again; it never answers 500."""

import psycopg2
import pytest
from django.db import OperationalError

from tre.middleware import ATTEMPTS


def _deadlock() -> OperationalError:
    class Deadlock(psycopg2.errors.DeadlockDetected):
        pgcode = "40P01"

    exc = OperationalError("deadlock detected")
    exc.__cause__ = Deadlock("deadlock detected")
    return exc


@pytest.fixture
def flaky_me(monkeypatch):
    """GET/POST /api/v1/me/ loses a deadlock the first ``n`` times."""
    from projects.api import MeApi

    calls = {"n": 0, "fail": 0}

    def post(self, request):
        calls["n"] += 1
        if calls["n"] <= calls["fail"]:
            raise _deadlock()
        return MeApi.get(self, request)

    monkeypatch.setattr(MeApi, "post", post, raising=False)
    return calls


def test_a_deadlocked_request_is_retried_and_succeeds(make_user, client_for, flaky_me):
    flaky_me["fail"] = ATTEMPTS - 1
    r = client_for(make_user("rhea")).post("/api/v1/me/", {"x": 1}, format="json")
    assert r.status_code == 200 and flaky_me["n"] == ATTEMPTS


def test_a_request_that_keeps_deadlocking_answers_503_not_500(make_user, client_for, flaky_me):
    flaky_me["fail"] = 99
    r = client_for(make_user("rhea")).post("/api/v1/me/", {"x": 1}, format="json")
    assert r.status_code == 503 and r.json()["dependency"] == "database" and r["Retry-After"] == "1"
    assert flaky_me["n"] == ATTEMPTS
