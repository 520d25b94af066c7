"""Usage tests: the demo model server answers the AI calls being metered."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.tenants.models import Tenant
from apps.usage import limits as L
from apps.usage.meter import month_key
from apps.usage.services import usage_flush
from tests.chat.conftest import _model_server, hydrology, member_client  # noqa: F401  (fixtures and helper)
from tests.conftest import TenantFixture


def set_limits(tenant: Tenant, *, plan: str | None = None, **overrides: Any) -> Tenant:
    """Change a tenant's plan or overrides (in the test's transaction) and return the fresh row.

    ``tenant`` itself is left as it was: it is often a session fixture's (``tenant_alpha.tenant``), which the
    rollback does not reach, and a later test then read this test's limits from it.
    """
    from apps.plans.models import Plan

    row = Tenant.objects.get(pk=tenant.pk)
    if plan is not None:
        row.plan = Plan.objects.get(code=plan)
    for name, value in overrides.items():
        setattr(row, name, value)
    row.save()
    return Tenant.objects.select_related("plan").get(pk=tenant.pk)


def forget_counters() -> None:
    """What a Redis restart or FLUSHALL does to the usage counters."""
    from django.conf import settings

    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"{settings.CACHE_KEY_PREFIX}:usage:*", count=1000):
        redis.delete(key)


@pytest.fixture
def fresh_counters() -> Iterator[None]:
    forget_counters()
    yield
    forget_counters()


DEAD_REDIS = "redis://127.0.0.1:1/0"


def dead_redis(settings: Any, location: str = DEAD_REDIS, *, caches: tuple[str, ...] = ("default",)) -> None:
    """Point the cache (and so the usage counters) at a port where no Redis answers.

    django-redis keeps one connection pool per URL, so each new ``location`` gets a pool made
    with the settings' options (timeouts included)."""
    settings.CACHES = {**settings.CACHES, **{name: {**settings.CACHES[name], "LOCATION": location} for name in caches}}


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """The URL of a Redis that hangs: a listener on loopback that accepts connections and never answers
    (what ``CLIENT PAUSE`` or ``DEBUG SLEEP`` look like to a client)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    over = threading.Event()

    def accept() -> None:
        while not over.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never read from nor answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, name="silent-redis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        over.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()


def counters(tenant: TenantFixture, day: dt.date | None = None) -> dict[str, int]:
    """The tenant's live month counters in Redis."""
    raw = get_redis_connection("default").hgetall(month_key(tenant.tenant.schema_name, day or L.today()))
    return {k.decode(): int(v) for k, v in raw.items() if k != b"g"}  # g: the generation, not a count


def flush(tenant: TenantFixture) -> int:
    with schema_context(tenant.tenant.schema_name):
        return usage_flush()


def direct_dsn() -> dict[str, Any]:
    """The test database for a psycopg connection of one's own, outside the test's transaction."""
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port")}
