"""Health of the three dependencies: database, broker, store. Each answers fast."""

import os

import redis
from django.conf import settings
from django.db import connection


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception:
        return "unreachable"


def check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("memory://"):
        return "ok"  # embedded default: tasks run in-process
    if not url.startswith(("redis://", "rediss://")):
        return "unsupported"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return "ok" if client.ping() else "unreachable"
        finally:
            client.close()
    except Exception:
        return "unreachable"


def check_store() -> str:
    path = settings.TRE_STORE_DIR
    if not os.path.isdir(path):
        return "missing"
    if not os.access(path, os.W_OK | os.X_OK):
        return "unwritable"
    return "ok"


def health_report() -> dict:
    return {
        "database": check_database(),
        "broker": check_broker(),
        "store": check_store(),
        "mode": "embedded" if settings.EMBEDDED else "services",
    }
