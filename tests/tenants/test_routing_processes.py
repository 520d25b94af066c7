"""Routes kept in the memory of gunicorn's workers follow a change made by another process."""

from __future__ import annotations

import time
from typing import Any

import httpx2
from django_redis import get_redis_connection

from apps.tenants.models import Tenant
from apps.tenants.route_memory import CLIENT_NAME
from apps.tenants.services import tenant_reactivate, tenant_suspend
from tests.conftest import TEST_ACTOR, TenantFixture
from tests.processes import WebServer


def _statuses(server: WebServer, host: str, count: int) -> list[int]:
    """``count`` requests, each on a new connection, so both workers take some."""
    url = f"http://127.0.0.1:{server.port}/api/conversations"
    return [httpx2.get(url, headers={"Host": f"{host}:{server.port}"}, timeout=10).status_code for _ in range(count)]


def _eventually_all(server: WebServer, host: str, status: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if set(_statuses(server, host, 12)) == {status}:
            return True
    return False


def test_a_suspension_reaches_the_routes_the_workers_keep(
    web_server: WebServer, tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    host = tenant_alpha.host
    assert set(_statuses(web_server, host, 12)) == {401}  # routed (no credentials): kept by the workers
    listeners = [c for c in get_redis_connection("platform").client_list() if c["name"] == CLIENT_NAME]
    assert len(listeners) >= 2  # both workers' (and this process's, if it routed)
    assert set(_statuses(web_server, host, 12)) == {401}  # now read from memory
    with django_db_blocker.unblock():
        tenant_suspend(tenant=tenant_alpha.tenant, actor=TEST_ACTOR, reason="unpaid")
    try:
        assert _eventually_all(web_server, host, 403)
    finally:
        with django_db_blocker.unblock():
            tenant_reactivate(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), actor=TEST_ACTOR)
    assert _eventually_all(web_server, host, 401)
