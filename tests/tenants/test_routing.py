"""Host -> tenant routing: isolation, unknown hosts, suspension, the cached lookup and its copy in memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.tenants.models import Domain, Tenant, TenantStatus
from apps.tenants.route_memory import memory as route_memory
from apps.tenants.routing import tenant_for_hostname
from apps.tenants.services import tenant_reactivate, tenant_suspend
from tests.conftest import TEST_ACTOR, TenantFixture

pytestmark = pytest.mark.django_db


def login(client: Client, email: str, password: str) -> int:
    return client.post("/login/", {"username": email, "password": password}).status_code


class TestIsolation:
    def test_each_host_serves_its_own_tenant(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        page = tenant_alpha.client().get("/login/").content.decode()
        assert "Alpha Water" in page
        assert "Beta Water" not in page

    def test_a_host_sees_only_its_own_rows(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        with schema_context(tenant_beta.tenant.schema_name):
            User.objects.create_user("only-in-beta@example.com", "Another-Pass-123", role="viewer")
        alpha = tenant_alpha.client()
        assert login(alpha, tenant_alpha.admin_email, tenant_alpha.admin_password) == 302
        page = alpha.get("/dashboard/")
        assert page.status_code == 200
        assert page.context["member_count"] == 1
        beta = tenant_beta.client()
        assert login(beta, tenant_beta.admin_email, tenant_beta.admin_password) == 302
        assert beta.get("/dashboard/").context["member_count"] == 2

    def test_members_of_one_tenant_cannot_log_in_to_another(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        beta = tenant_beta.client()
        response = beta.post("/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password})
        assert response.status_code == 400  # the form again, with an error
        assert "_auth_user_id" not in beta.session
        assert beta.get("/dashboard/").status_code == 302

    def test_a_session_from_one_host_is_useless_on_another(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        alpha = tenant_alpha.client()
        assert login(alpha, tenant_alpha.admin_email, tenant_alpha.admin_password) == 302
        cookie = alpha.cookies["sessionid"]
        assert cookie["domain"] == ""  # host-only: never sent to another tenant's host
        beta = tenant_beta.client()
        beta.cookies["sessionid"] = cookie.value
        response = beta.get("/dashboard/")
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


class TestUnknownHosts:
    def test_unknown_host_gets_a_404_page_not_the_public_site(self) -> None:
        response = Client(HTTP_HOST="nobody.localhost").get("/")
        assert response.status_code == 404
        body = response.content.decode()
        assert "nobody.localhost" in body
        assert 'data-testid="signup-form"' not in body

    def test_unknown_host_gets_json_404_under_api(self) -> None:
        response = Client(HTTP_HOST="nobody.localhost").get("/api/public/plans")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    @pytest.mark.parametrize("host", ["alpha.localhost:8000:1", "alphä.localhost", "%61lpha.localhost", "a" * 300])
    def test_a_malformed_host_gets_the_same_404_json_under_api_and_a_page_elsewhere(self, host: str) -> None:
        """django-tenants answered a Host that Django refuses with an empty 404, not in the API's error format."""
        response = Client(HTTP_HOST=host).get("/api/auth/me")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        page = Client(HTTP_HOST=host, HTTP_ACCEPT_LANGUAGE="en").get("/")
        assert page.status_code == 404
        assert "Workspace not found" in page.content.decode()

    def test_unknown_host_cannot_post_a_signup(self) -> None:
        response = Client(HTTP_HOST="evil.example.org").post(
            "/api/public/signup", {"name": "x"}, content_type="application/json"
        )
        assert response.status_code == 404

    def test_admin_is_served_on_the_platform_host_only(self, tenant_alpha: TenantFixture) -> None:
        assert tenant_alpha.client().get("/admin/").status_code == 404
        assert Client(HTTP_HOST="localhost").get("/admin/").status_code == 302  # to the admin login


class TestSuspension:
    def test_suspended_tenant_gets_403_on_web_and_api(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        assert client.get("/login/").status_code == 200  # cached as serving
        tenant_suspend(tenant=tenant_alpha.tenant, actor=TEST_ACTOR, reason="unpaid")

        page = client.get("/login/")
        assert page.status_code == 403
        assert "tenant_suspended" in page.content.decode()

        api = client.get("/api/anything")
        assert api.status_code == 403
        assert api.json()["error"]["code"] == "tenant_suspended"

        tenant_reactivate(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), actor=TEST_ACTOR)
        assert client.get("/login/").status_code == 200

    def test_cancelled_tenant_gets_403(self, tenant_beta: TenantFixture) -> None:
        Tenant.objects.filter(pk=tenant_beta.tenant.pk).update(status=TenantStatus.CANCELLED)
        response = tenant_beta.client().get("/api/x")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "tenant_cancelled"


class TestRoutingCache:
    def test_a_cached_route_costs_no_sql(self, tenant_alpha: TenantFixture) -> None:
        host = tenant_alpha.host
        with CaptureQueriesContext(connection) as first:
            assert tenant_for_hostname(host) == tenant_alpha.tenant
        assert len([q for q in first.captured_queries if not q["sql"].startswith("SET search_path")]) == 1
        with CaptureQueriesContext(connection) as second:
            cached = tenant_for_hostname(host)
        assert len(second) == 0
        assert cached is not None
        assert cached.plan is not None
        assert cached.plan.code == "pro"  # the plan travels with the cached tenant

    def test_unknown_hosts_are_cached_too(self) -> None:
        assert tenant_for_hostname("ghost.localhost") is None
        with CaptureQueriesContext(connection) as queries:
            assert tenant_for_hostname("ghost.localhost") is None
        assert len(queries) == 0

    def test_a_tenant_change_drops_its_cached_route(self, tenant_alpha: TenantFixture) -> None:
        host = tenant_alpha.host
        assert tenant_for_hostname(host).name == "Alpha Water"  # type: ignore[union-attr]
        tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
        tenant.name = "Renamed Water"
        tenant.save(update_fields=["name"])
        assert tenant_for_hostname(host).name == "Renamed Water"  # type: ignore[union-attr]

    def test_a_new_domain_routes_at_once_and_a_deleted_one_stops(self, tenant_alpha: TenantFixture) -> None:
        assert tenant_for_hostname("water.alpha.example") is None  # cached as unknown
        domain = Domain.objects.create(domain="water.alpha.example", tenant=tenant_alpha.tenant, is_primary=False)
        assert Client(HTTP_HOST="water.alpha.example").get("/login/").status_code == 200
        domain.delete()
        assert Client(HTTP_HOST="water.alpha.example").get("/login/").status_code == 404

    def test_renaming_a_domain_drops_the_old_name(self, tenant_alpha: TenantFixture) -> None:
        domain = Domain.objects.create(domain="old.alpha.example", tenant=tenant_alpha.tenant, is_primary=False)
        assert tenant_for_hostname("old.alpha.example") is not None
        domain = Domain.objects.get(pk=domain.pk)
        domain.domain = "new.alpha.example"
        domain.save()
        assert tenant_for_hostname("old.alpha.example") is None
        assert tenant_for_hostname("new.alpha.example") is not None

    def test_a_plan_change_reaches_cached_tenants(self, tenant_alpha: TenantFixture) -> None:
        cached = tenant_for_hostname(tenant_alpha.host)
        assert cached is not None
        assert cached.plan is not None
        plan = cached.plan
        plan.rate_limit_per_minute = 1234
        plan.save(update_fields=["rate_limit_per_minute"])
        refreshed = tenant_for_hostname(tenant_alpha.host)
        assert refreshed is not None
        assert refreshed.plan is not None
        assert refreshed.plan.rate_limit_per_minute == 1234


class TestRedisOutage:
    def test_routing_falls_back_to_the_database_while_redis_is_down(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        dead = {**settings.CACHES["platform"], "LOCATION": "redis://127.0.0.1:1/0"}
        settings.CACHES = {**settings.CACHES, "platform": dead}
        assert tenant_alpha.client().get("/login/").status_code == 200
        assert Client(HTTP_HOST="nobody.localhost").get("/login/").status_code == 404


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _route_in_memory(host: str) -> None:
    """Route ``host`` until this process keeps it (the listener starts on the first lookup)."""
    tenant_for_hostname(host)
    assert _eventually(lambda: route_memory.live)
    # Read from Redis while live, it is kept; unless the message about the route's own caching
    # (the first lookup's write to Redis) arrives between the read and the keeping.
    assert _eventually(lambda: tenant_for_hostname(host) is not None and len(route_memory) == 1)


class TestRouteMemory:
    """Each process keeps the routes it read while Redis reports every change to them."""

    def test_a_route_in_memory_costs_no_round_trip_to_redis(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _route_in_memory(tenant_alpha.host)
        commands: list[Any] = []
        original = redis.Redis.execute_command

        def counted(client: redis.Redis, *args: Any, **options: Any) -> Any:
            commands.append(args[0])
            return original(client, *args, **options)

        monkeypatch.setattr(redis.Redis, "execute_command", counted)
        with CaptureQueriesContext(connection) as queries:
            routed = tenant_for_hostname(tenant_alpha.host)
        assert routed == tenant_alpha.tenant
        assert routed is not tenant_for_hostname(tenant_alpha.host)  # decoded anew: requests share no Tenant
        assert commands == []
        assert len(queries) == 0

    def test_a_change_made_by_another_process_reaches_this_one(self, tenant_alpha: TenantFixture) -> None:
        host = tenant_alpha.host
        _route_in_memory(host)
        # What another process's tenant change does: the row changes and the Redis key goes,
        # with no call into this process.
        Tenant.objects.filter(pk=tenant_alpha.tenant.pk).update(name="Renamed Elsewhere")
        get_redis_connection("platform").delete(caches["platform"].make_key(f"tenant-host:{host}"))
        assert _eventually(lambda: tenant_for_hostname(host).name == "Renamed Elsewhere")  # type: ignore[union-attr]

    def test_a_flushed_redis_empties_the_memory(self, tenant_alpha: TenantFixture) -> None:
        _route_in_memory(tenant_alpha.host)
        # Any database's flush is reported; an empty one keeps the test off the shared database 0.
        kwargs = get_redis_connection("platform").connection_pool.connection_kwargs
        redis.Redis(host=kwargs["host"], port=kwargs["port"], db=15).flushdb()
        assert _eventually(lambda: len(route_memory) == 0)

    def test_nothing_outlives_a_broken_connection(self, tenant_alpha: TenantFixture) -> None:
        _route_in_memory(tenant_alpha.host)
        listener = route_memory.client_id
        assert listener is not None
        get_redis_connection("platform").client_kill_filter(_id=listener)
        assert _eventually(lambda: route_memory.client_id != listener and route_memory.live)
        assert len(route_memory) == 0  # dropped while no change could be heard

    def test_a_read_that_raced_a_change_is_not_kept(self, tenant_alpha: TenantFixture) -> None:
        tenant_for_hostname(tenant_alpha.host)
        assert _eventually(lambda: route_memory.live)
        platform = caches["platform"]
        key = platform.make_key(f"tenant-host:{tenant_alpha.host}")
        client = get_redis_connection("platform")
        kept, epoch = route_memory.recall(client, platform.make_key("tenant-host:"), key)
        assert kept is None
        value = client.get(key)  # read from Redis...
        assert value is not None
        route_memory.forget([key])  # ...while the route changes
        route_memory.keep(key, value, epoch)
        assert len(route_memory) == 0

    def test_this_process_drops_its_own_change_at_once(self, tenant_alpha: TenantFixture) -> None:
        host = tenant_alpha.host
        _route_in_memory(host)
        tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
        tenant.name = "Renamed Here"
        tenant.save(update_fields=["name"])
        assert tenant_for_hostname(host).name == "Renamed Here"  # type: ignore[union-attr]  # no waiting

    def test_nothing_is_kept_while_redis_is_down(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        dead = {**settings.CACHES["platform"], "LOCATION": "redis://127.0.0.1:1/0"}
        settings.CACHES = {**settings.CACHES, "platform": dead}
        assert tenant_for_hostname(tenant_alpha.host) == tenant_alpha.tenant  # from the database
        assert tenant_for_hostname(tenant_alpha.host) == tenant_alpha.tenant
        assert not route_memory.live
        assert len(route_memory) == 0
