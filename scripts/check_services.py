"""Before the tests: are PostgreSQL and Redis reachable? If not, say exactly how to start them."""

import os
import sys
from urllib.parse import urlparse


def main() -> int:
    problems = []
    db_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    try:
        import psycopg2

        u = urlparse(db_url)
        psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, password=u.password,
                         dbname="postgres", connect_timeout=3).close()
    except Exception as exc:
        problems.append(f"PostgreSQL at {db_url} is not reachable ({str(exc).strip()}).\n"
                        "  Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
                        "  or point DATABASE_URL at a running server.")
    try:
        import redis

        redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
    except Exception as exc:
        problems.append(f"Redis at {broker} is not reachable ({exc}).\n"
                        "  Start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no\n"
                        "  or point CELERY_BROKER_URL at a running server.")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
