"""The database backend: the tenant's search path doubles as the connection's health check,
for a persistent connection and for one taken from the pool; on PostgreSQL 18 a pooled
connection that already has the path needs no SET."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx2
import psycopg
import pytest
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from django.db.utils import OperationalError

from apps.accounts.models import User
from apps.tenants.db import connection
from apps.tenants.postgresql_backend.base import DatabaseWrapper
from deploy.devstack import EmbeddedPostgres
from tests import processes
from tests.conftest import TenantFixture, admin_of, jwt_pair
from tests.processes import WebServer


@pytest.fixture
def checks(monkeypatch: Any) -> list[str]:
    """Each ``SELECT 1`` health check Django sends through this backend."""
    sent: list[str] = []
    is_usable = PostgresWrapper.is_usable

    def counting(self: PostgresWrapper) -> bool:
        sent.append(self.alias)
        return bool(is_usable(self))

    monkeypatch.setattr(PostgresWrapper, "is_usable", counting)
    return sent


def _new_request() -> None:
    """What Django does when a request starts: the next query checks the connection first."""
    connection.health_check_done = False


@pytest.mark.django_db
def test_a_request_for_another_tenant_sends_only_the_set(tenant_alpha: TenantFixture, checks: list[str]) -> None:
    connection.ensure_connection()
    _new_request()
    connection.set_tenant(tenant_alpha.tenant)  # as routing does: the search path is due
    assert User.objects.filter(email=admin_of(tenant_alpha).email).exists()
    assert checks == []
    assert connection.health_check_done
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone()[0] == f"{tenant_alpha.tenant.schema_name}, public"


@pytest.mark.django_db
def test_with_the_path_already_set_django_checks_as_before(tenant_alpha: TenantFixture, checks: list[str]) -> None:
    connection.set_tenant(tenant_alpha.tenant)
    User.objects.exists()  # the search path is set now
    _new_request()
    User.objects.exists()
    User.objects.exists()
    assert checks == ["default"]


@pytest.mark.django_db
def test_a_connection_the_server_ended_is_closed_and_opened_again(tenant_alpha: TenantFixture) -> None:
    probe = DatabaseWrapper({**connection.settings_dict}, alias="probe")  # outside the test's transaction
    try:
        probe.set_tenant(tenant_alpha.tenant)
        with probe.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        probe.health_check_done = False
        probe.set_tenant(tenant_alpha.tenant)  # the next request: check and SET are both due
        probe.close_if_health_check_failed()
        assert probe.connection is None
        with probe.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_setting('search_path')")
            new_pid, path = cursor.fetchone()
        assert new_pid != pid
        assert path == f"{tenant_alpha.tenant.schema_name}, public"
    finally:
        probe.close()


_SHOW_POOL = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'].get('pool'))"


@pytest.mark.django_db
@pytest.mark.parametrize(("process", "code"), [
    ("web", f"import config.wsgi; {_SHOW_POOL}"),
    ("celery or manage.py", f"import django; django.setup(); {_SHOW_POOL}"),
])  # fmt: skip
def test_only_web_processes_pool_their_connections(process: str, code: str) -> None:
    env = processes.child_env()
    env.pop("DATABASE_POOL", None)
    shown = subprocess.run([sys.executable, "-c", code], cwd=processes.ROOT, env=env, capture_output=True,
                           text=True, timeout=60, check=True).stdout.strip()  # fmt: skip
    if process == "web":
        assert "'max_size': 32" in shown, shown
    else:
        assert shown == "None"


def _pooled_probe(size: int) -> DatabaseWrapper:
    """A wrapper with a pool of its own, as web processes have (settings.DATABASE_POOL)."""
    settings_dict = {**connection.settings_dict, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False}
    settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], "application_name": "pool-probe",
                                "pool": {"min_size": size, "max_size": size, "timeout": 10}}  # fmt: skip
    return DatabaseWrapper(settings_dict, alias="pool_probe")


@pytest.mark.django_db
def test_a_connection_back_from_the_pool_takes_the_next_requests_tenant(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    """The pool hands the same connection on with the search path its last user set: it must be set again."""
    probe = _pooled_probe(1)
    try:
        probe.set_tenant(tenant_alpha.tenant)
        with probe.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        probe.close()  # the end of a request: back to the pool
        assert probe.pool.get_stats()["pool_available"] == 1
        probe.set_tenant(tenant_beta.tenant)
        with probe.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_setting('search_path')")
            assert cursor.fetchone() == (pid, f"{tenant_beta.tenant.schema_name}, public")
        assert probe.pool.get_stats().get("connections_lost", 0) == 0
    finally:
        probe.close()
        probe.close_pool()


@pytest.mark.django_db
def test_pooled_connections_the_server_ended_are_replaced(tenant_alpha: TenantFixture) -> None:
    """After a server restart every idle connection in the pool is gone: the next query still works."""
    probe = _pooled_probe(3)
    try:
        probe.pool.open(wait=True)
        assert probe.pool.get_stats()["pool_available"] == 3
        with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pool-probe'"
            ).fetchone()
        assert ended == (3,)
        probe.set_tenant(tenant_alpha.tenant)
        with probe.cursor() as cursor:
            cursor.execute("SELECT current_setting('search_path')")
            assert cursor.fetchone() == (f"{tenant_alpha.tenant.schema_name}, public",)
        assert probe.pool.get_stats()["connections_lost"] >= 2  # found by the pool's check of the others
    finally:
        probe.close()
        probe.close_pool()


@pytest.mark.django_db
def test_a_pooled_connection_whose_path_cannot_be_set_is_never_queried(
    tenant_alpha: TenantFixture, monkeypatch: Any
) -> None:
    """Its path is whatever the connection's previous user set, maybe another tenant's schema."""
    probe = _pooled_probe(2)

    def failing_set(self: DatabaseWrapper, cursor: Any = None) -> None:
        self.search_path_set_schemas = None  # as django-tenants leaves it when the SET raises

    try:
        monkeypatch.setattr(DatabaseWrapper, "_handle_search_path", failing_set)
        probe.set_tenant(tenant_alpha.tenant)
        with pytest.raises(OperationalError, match="search_path"):
            probe.cursor()
    finally:
        probe.close()
        probe.close_pool()


def test_requests_survive_the_database_dropping_their_connections(
    web_server: WebServer, tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """gunicorn's workers keep pools of connections; after PostgreSQL ends them all, requests still succeed."""
    with django_db_blocker.unblock():
        token = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
    url = f"http://127.0.0.1:{web_server.port}/api/conversations"
    headers = {"Host": f"{tenant_alpha.tenant.slug}.localhost:{web_server.port}", **_bearer(token)}

    def answers() -> list[int]:
        with httpx2.Client(timeout=30) as client:
            return [client.get(url, headers=headers).status_code for _ in range(8)]

    with httpx2.Client(timeout=30, limits=httpx2.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as pool:
        # at once, so each worker's pool holds several connections
        assert set(pool.map(lambda _n: client.get(url, headers=headers).status_code, range(32))) == {200}
    assert answers() == [200] * 8
    ours = [connection.connection.info.backend_pid] if connection.connection is not None else []
    with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND pid <> ALL(%s) AND backend_type = 'client backend'",
            [ours],
        ).fetchone()
    assert ended is not None
    assert ended[0] >= 1
    assert answers() == [200] * 8


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def postgres_18() -> Iterator[str]:
    """The embedded PostgreSQL 18 that `make run` uses, the first version to report search_path to clients.

    CI's own server is older, so without this the path below would never run in the tests.
    """
    root = processes.ROOT / ".devdata" / f"test-pg18-{os.getpid()}"
    server = EmbeddedPostgres(root, durable=False)
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("CREATE SCHEMA t_one; CREATE SCHEMA t_two")
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pooled_on(url: str) -> DatabaseWrapper:
    """A wrapper with a pool of one connection to ``url``, as web processes have."""
    parts = urlsplit(url)
    settings_dict = {**connection.settings_dict, "HOST": parts.hostname, "PORT": parts.port, "NAME": parts.path[1:],
                     "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False}  # fmt: skip
    settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], "application_name": "pg18-probe",
                                "pool": {"min_size": 1, "max_size": 1, "timeout": 10}}  # fmt: skip
    return DatabaseWrapper(settings_dict, alias="pg18_probe")


def _request(probe: DatabaseWrapper, schema: str) -> tuple[list[str], tuple[int, str]]:
    """One request's routing and first query: the statements sent, and (backend pid, search path)."""
    probe.set_schema(schema)
    probe.queries_log.clear()
    probe.force_debug_cursor = True  # logs every statement, the SET included
    with probe.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('search_path')")
        answer = cursor.fetchone()
    probe.close()  # the end of the request: back to the pool
    return [query["sql"] for query in probe.queries_log], answer


@pytest.mark.usefixtures("_database_access")
class TestReportedSearchPath:
    """PostgreSQL 18 reports search_path: a pooled connection that has the request's path needs no SET."""

    @pytest.fixture
    def _database_access(self, django_db_blocker: Any) -> Iterator[None]:
        with django_db_blocker.unblock():  # a server of the tests' own, outside pytest-django's databases
            yield

    @pytest.fixture
    def probe(self, postgres_18: str) -> Iterator[DatabaseWrapper]:
        probe = _pooled_on(postgres_18)
        yield probe
        probe.close()
        probe.close_pool()

    def test_a_connection_with_the_path_is_used_without_a_set(self, probe: DatabaseWrapper) -> None:
        sent, (pid, path) = _request(probe, "t_one")
        assert sent[0].startswith("SET search_path")
        assert path == "t_one, public"
        sent, answer = _request(probe, "t_one")
        assert len(sent) == 1
        assert not sent[0].startswith("SET")
        assert answer == (pid, "t_one, public")
        sent, answer = _request(probe, "t_two")  # another tenant's request: the SET is due
        assert sent[0].startswith("SET search_path")
        assert answer == (pid, "t_two, public")

    def test_a_path_changed_behind_our_back_is_set_again(self, probe: DatabaseWrapper) -> None:
        _request(probe, "t_one")
        probe.set_schema("t_one")
        with probe.cursor() as cursor:
            cursor.execute("SET search_path = t_two")  # whatever a previous user of the connection did
        probe.close()
        sent, (_pid, path) = _request(probe, "t_one")
        assert sent[0].startswith("SET search_path")
        assert path == "t_one, public"

    def test_a_set_undone_by_a_rollback_is_noticed(self, probe: DatabaseWrapper) -> None:
        _request(probe, "t_one")
        probe.set_schema("t_two")
        probe.set_autocommit(False)
        probe.cursor().execute("SELECT 1")  # the SET to t_two, inside a transaction...
        probe.rollback()  # ...that is rolled back
        probe.set_autocommit(True)
        probe.close()
        sent, (_pid, path) = _request(probe, "t_two")  # the rollback undid the SET: t_one is back
        assert sent[0].startswith("SET search_path")
        assert path == "t_two, public"

    def test_a_connection_the_server_ended_is_not_trusted_for_its_path(
        self, probe: DatabaseWrapper, postgres_18: str
    ) -> None:
        _, (pid, _path) = _request(probe, "t_one")
        with psycopg.connect(postgres_18, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            for _ in range(500):  # until the backend is gone and its end of the socket closed
                if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                    break
                time.sleep(0.01)
        _, (new_pid, path) = _request(probe, "t_one")
        assert new_pid != pid
        assert path == "t_one, public"
