"""Shared fixtures: a migrated test database with the platform row, the base
schema and two committed tenants, plus real worker and web server processes.

Everything runs on real PostgreSQL and Redis. Tests that use the ``db``
fixture run inside a transaction that is rolled back, DDL included, so a
tenant provisioned inside such a test leaves nothing behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_databases, teardown_databases
from django.utils import translation
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.chat.selectors import turn_hold_key
from apps.core.actors import Actor
from apps.tenants.db import connection
from apps.tenants.models import Tenant
from apps.tenants.route_memory import memory as route_memory
from apps.tenants.services import tenant_provision

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM inside Playwright tests

pytest_plugins = ["tests.processes", "tests.mail_server"]

TEST_ACTOR = Actor(label="tests")
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ADMIN_PASSWORD = "Correct-Horse-Battery-42"
STAFF_PASSWORD = "Staff-Password-2026!"


@dataclass(frozen=True)
class TenantFixture:
    tenant: Tenant
    admin_email: str
    admin_password: str

    @property
    def host(self) -> str:
        return self.tenant.primary_hostname

    def client(self, **defaults: Any) -> Client:
        return Client(HTTP_HOST=self.host, **defaults)


def drop_tenant(slug: str) -> None:
    """Clean up a tenant that a test committed: its row, domains and schema.

    A chat turn the test left answering in the web server is waited for first: its writes and the schema's
    drop deadlocked once (CI, stop 31), and the tenant then stayed for the next test to trip on.
    """
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is not None:
        wait_for_turns(tenant.schema_name)
        tenant.delete(force_drop=True)  # type: ignore[call-arg]  # TenantMixin.delete


def wait_for_turns(schema: str, timeout: float = 30.0) -> None:
    """Until no turn holds a conversation of ``schema`` (``turn_hold_key``: given up once all is stored)."""
    redis = get_redis_connection("default")
    deadline = time.monotonic() + timeout
    while any(redis.scan_iter(match=turn_hold_key(schema, "*"), count=1000)):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise TimeoutError(f"a chat turn still runs in {schema} after {timeout} s")
        time.sleep(0.05)


def provision(slug: str, plan: str = "pro") -> TenantFixture:
    """A tenant made by the real service, its admin ``admin@<slug>.example.com``; committed where the caller
    has the database unblocked (``drop_tenant`` removes it)."""
    email = f"admin@{slug}.example.com"
    result = tenant_provision(
        name=f"{slug.title()} Water", slug=slug, plan=plan, admin_email=email, admin_password=ADMIN_PASSWORD,
        actor=TEST_ACTOR,
    )  # fmt: skip
    return TenantFixture(result.tenant, email, ADMIN_PASSWORD)


@pytest.fixture
def staff(db: None) -> Client:
    """A platform staff member (``staff_user_create``), logged in to the platform host's admin, in English."""
    from apps.accounts.services import staff_user_create

    staff_user_create(email="ops@hydronet.example.com", password=STAFF_PASSWORD)
    client = Client(HTTP_HOST="localhost", HTTP_ACCEPT_LANGUAGE="en")
    assert client.login(username="ops@hydronet.example.com", password=STAFF_PASSWORD)
    return client


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest, django_test_environment: None, django_db_blocker: Any
) -> Iterator[dict[str, TenantFixture]]:
    """The test database, brought up the way `make run` does it, with two committed tenants.

    Replaces pytest-django's fixture, which creates the database only when some
    collected test is marked django_db: the worker and browser tests use the
    database without the per-test transaction that marker brings.
    """
    with django_db_blocker.unblock():
        db_cfg = setup_databases(
            verbosity=request.config.option.verbose,
            interactive=False,
            aliases={"default"},  # type: ignore[arg-type]
            serialized_aliases=set(),
        )
        call_command("migrate_platform", parallel=1, verbosity=0)
        tenants = {slug: provision(slug) for slug in ("alpha", "beta")}
        connection.set_schema_to_public()
    yield tenants
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        _end_other_sessions()
        teardown_databases(db_cfg, verbosity=request.config.option.verbose)


def _end_other_sessions() -> None:
    """Worker and server processes have exited, but PostgreSQL may not have noticed yet."""
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")
        for _ in range(50):
            cursor.execute(f"SELECT count(*) {others}")
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.1)


@pytest.fixture(scope="session")
def tenant_alpha(django_db_setup: dict[str, TenantFixture]) -> TenantFixture:
    return django_db_setup["alpha"]


@pytest.fixture(scope="session")
def tenant_beta(django_db_setup: dict[str, TenantFixture]) -> TenantFixture:
    return django_db_setup["beta"]


@pytest.fixture
def public_client() -> Client:
    return Client(HTTP_HOST=settings.BASE_HOSTNAME)


@pytest.fixture(autouse=True)
def _english_outside_requests() -> Iterator[None]:
    """Service messages are asserted in English; requests still pick their own language."""
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def _reset_schema_and_routes() -> Iterator[None]:
    """Every test starts and ends on the public schema with no cached routes, AI setups, lockouts or counters.

    A route or a tenant's AI setup cached during a rolled-back test could point
    at rows that no longer exist, and every test client comes from 127.0.0.1,
    so one test's failed logins must not lock the next one out.
    """
    connection.set_schema_to_public()
    yield
    connection.set_schema_to_public()
    caches["platform"].delete_pattern("tenant-host:*")  # type: ignore[attr-defined]  # django-redis
    route_memory.forget_all()  # at once: Redis's message about the delete arrives a moment later
    redis = get_redis_connection("default")
    prefix = settings.CACHE_KEY_PREFIX
    for pattern in (f"{prefix}:lockout:*", f"*:{prefix}:*:ai-setup:*", f"{prefix}:usage:*", f"{prefix}:rl:*"):
        for key in redis.scan_iter(match=pattern, count=1000):
            redis.delete(key)


@pytest.fixture(scope="session", autouse=True)
def _drop_this_runs_redis_keys() -> Iterator[None]:
    yield
    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"*{settings.CACHE_KEY_PREFIX}*", count=1000):
        redis.delete(key)
    redis.delete(settings.CELERY_TASK_DEFAULT_QUEUE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests need Chromium: skipped with a reason where it is missing, but never under CI=true.

    They also run last: Playwright's sync API keeps an event loop running in the
    main thread for the rest of the session, and asyncio.run refuses to nest.
    """
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    browser_items = [item for item in items if item.get_closest_marker("browser")]
    if not browser_items or os.path.exists(CHROMIUM_PATH):
        return
    reason = f"no Chromium at {CHROMIUM_PATH}: `apt-get install chromium` (or set CHROMIUM_PATH) to run browser tests"
    if os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(f"CI=true and {reason}")
    print(f"\nSkipping {len(browser_items)} browser test(s): {reason}")
    for item in browser_items:
        item.add_marker(pytest.mark.skip(reason=reason))


# --- Members, tokens and keys for API tests ----------------------------------------


def make_member(tenant: TenantFixture, role: str, email: str | None = None, password: str = ADMIN_PASSWORD) -> Any:
    """A member of ``tenant`` with ``role``, created directly (no quota, no audit)."""
    from apps.accounts.models import User

    with schema_context(tenant.tenant.schema_name):
        return User.objects.create_user(email or f"{role}-{os.urandom(3).hex()}@example.com", password, role=role)


def admin_of(tenant: TenantFixture) -> Any:
    from apps.accounts.models import User

    with schema_context(tenant.tenant.schema_name):
        return User.objects.get(email=tenant.admin_email)


def jwt_pair(tenant: TenantFixture, user: Any) -> dict[str, str]:
    from apps.accounts.services import token_pair_issue

    with schema_context(tenant.tenant.schema_name):
        return token_pair_issue(user=user)


def api_key_secret(tenant: TenantFixture, role: str, **extra: Any) -> str:
    from apps.accounts.services import api_key_create

    with schema_context(tenant.tenant.schema_name):
        _key, secret = api_key_create(actor=Actor(label="tests"), name=f"{role} key", role=role, **extra)
    return str(secret)


def assert_read_as_the_orm_reads(found: Any, expected: Any) -> None:
    """A row built from a hand-written statement (``from_db``) is the ORM's row: fields and state."""
    from django.forms.models import model_to_dict

    assert found is not None
    assert found._state.adding is False
    assert found._state.db == "default"
    fields = [field.attname for field in type(expected)._meta.concrete_fields]
    assert model_to_dict(found, fields=fields) == model_to_dict(expected, fields=fields)


def bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
