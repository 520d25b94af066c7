"""The quota under concurrent load: two gunicorn processes, real Redis and PostgreSQL, a real Celery worker.

With Q calls left and K concurrent requests, exactly min(K, Q) get through, each
alert fires once, and the counts are exact afterwards in Redis, in the ledger
and, after the worker's flush, in usage_stats.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.services import api_key_create
from apps.core.actors import Actor
from apps.tenants.db import connection
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_provision
from apps.usage import limits as L
from apps.usage.meter import month_key
from apps.usage.models import QuotaAlert, UsageEvent, UsageStat
from apps.usage.tasks import flush_usage
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer, Worker, serve

SLUG = "metered"
REQUESTS = 20


@dataclass(frozen=True)
class Setup:
    tenant: Tenant
    secret: str
    servers: tuple[WebServer, WebServer]


@pytest.fixture(scope="module")
def metered(django_db_blocker: Any, demo_model_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A committed free-plan tenant with an API key, served by two single-process gunicorns."""
    with django_db_blocker.unblock():
        tenant = tenant_provision(
            name="Metered Water", slug=SLUG, plan="free", admin_email=f"admin@{SLUG}.example.com",
            admin_password=ADMIN_PASSWORD, actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        with schema_context(tenant.schema_name):
            _key, secret = api_key_create(actor=Actor(label="tests"), name="load", role="admin")
    tmp = tmp_path_factory.mktemp("metered")
    try:
        with serve(tmp, demo_model_url, workers=1) as one, serve(tmp, demo_model_url, workers=1) as two:
            yield Setup(tenant, secret, (one, two))
    finally:
        with django_db_blocker.unblock():
            connection.set_schema_to_public()
            drop_tenant(SLUG)


def set_quota(django_db_blocker: Any, tenant: Tenant, calls: int) -> None:
    with django_db_blocker.unblock():
        row = Tenant.objects.get(pk=tenant.pk)
        row.api_calls_per_month_override = calls
        row.save()  # drops the cached route, so both servers see the new limit


def burst(setup: Setup) -> list[int]:
    """REQUESTS completions at once, alternating between the two server processes."""
    start = threading.Barrier(REQUESTS)

    def one(n: int) -> int:
        server = setup.servers[n % 2]
        body = {"model": "hydronet-demo", "messages": [{"role": "user", "content": f"Hello {n}"}]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Host": f"{SLUG}.localhost:{server.port}", "Authorization": f"Bearer {setup.secret}",
                     "Content-Type": "application/json"},
            method="POST",
        )  # fmt: skip
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310  (http on loopback)
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    with ThreadPoolExecutor(REQUESTS) as pool:
        return list(pool.map(one, range(REQUESTS)))


def live_calls(tenant: Tenant) -> int:
    value = get_redis_connection("default").hget(month_key(tenant.schema_name, L.today()), "calls")
    return int(value or 0)


def test_exactly_the_calls_left_get_through(metered: Setup, django_db_blocker: Any, celery_worker: Worker) -> None:
    # Ten calls left, twenty at once: ten succeed, and 80, 90 and 100 % each alert once.
    set_quota(django_db_blocker, metered.tenant, 10)
    statuses = burst(metered)
    assert sorted(statuses) == [200] * 10 + [402] * 10, statuses
    assert live_calls(metered.tenant) == 10

    # One call left, twenty at once: exactly one succeeds.
    set_quota(django_db_blocker, metered.tenant, 11)
    statuses = burst(metered)
    assert sorted(statuses) == [200] + [402] * (REQUESTS - 1), statuses
    assert live_calls(metered.tenant) == 11

    with django_db_blocker.unblock(), schema_context(metered.tenant.schema_name):
        assert UsageEvent.objects.count() == 11
        alerts = sorted(QuotaAlert.objects.values_list("limit", "threshold", "used"))
        # Each once for each limit: the raised quota's 100 % too, its 80 and 90 % were past when it was raised.
        assert alerts == [(10, 80, 8), (10, 90, 9), (10, 100, 10), (11, 100, 11)]
        # The beat task, run by the real worker, persists the ledger; run again, it adds nothing.
        schema = {"_schema_name": metered.tenant.schema_name}
        assert flush_usage.apply_async(headers=schema).get(timeout=60) == 11
        assert flush_usage.apply_async(headers=schema).get(timeout=60) == 0
        assert UsageEvent.objects.count() == 0
        assert UsageStat.objects.get(user=None, date=L.today()).api_calls == 11
