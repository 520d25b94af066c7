"""Liveness and readiness, answered on any host before tenant routing.

``/healthz`` says the process is up. ``/readyz`` says it can serve: the database,
Redis and the Celery broker each answer. Load balancers probe by IP address, so
neither depends on the Host header.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection
from django_redis import get_redis_connection


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis() -> None:
    get_redis_connection("default").ping()


def _check_broker() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
}


def readiness() -> tuple[bool, dict[str, dict[str, object]]]:
    """Run every check; report each one's outcome and latency."""
    results: dict[str, dict[str, object]] = {}
    ready = True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # a probe reports failures, it does not raise them
            ready = False
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return ready, results
