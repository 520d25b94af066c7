"""A bench's own database, cache keys and Celery queue, removed when it ends.

    with scratch("metering"):
        ...  # DATABASE_URL, CACHE_KEY_PREFIX and CELERY_TASK_DEFAULT_QUEUE point at this run's own

Set up before Django is: the database is created next to the one DATABASE_URL
names (as ``hydronet_<name>_<pid>``), and the cache prefix and the queue are
``<name>-<pid>``, so a bench never touches the data of the app or of another run.
At the end the database is dropped and every Redis key of the prefix and the
queue (kombu's bindings included) is deleted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


@contextmanager
def scratch(name: str) -> Iterator[None]:
    import psycopg
    import redis

    tag = f"{name}-{os.getpid()}"
    base = urlsplit(os.environ["DATABASE_URL"])
    database = f"hydronet_{name}_{os.getpid()}"
    admin_url = urlunsplit(base._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = urlunsplit(base._replace(path=f"/{database}"))
    os.environ["CACHE_KEY_PREFIX"] = tag
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = tag
    try:
        yield
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for pattern in (f"*{tag}:*", f"*{tag}"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
