"""The tenant's model provider under concurrent requests: two real database connections, one row.

Each race is made deterministic: the first request holds its transaction open until the second is seen
waiting on a row lock in PostgreSQL (pg_stat_activity), and only then commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import close_old_connections, transaction
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.llm.models import ModelProvider
from apps.llm.services import model_provider_delete, model_provider_save
from apps.tenants.db import connection
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_provision
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant

SLUG = "provider-race"
URL = "http://127.0.0.1:9/v1"
ACTOR = Actor(label="race")


@pytest.fixture(scope="module")
def racing(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Tenant]:
    """A committed tenant of its own: audit events cannot be deleted, so none are left in the shared ones."""
    with django_db_blocker.unblock():
        tenant = tenant_provision(
            name="Provider Race", slug=SLUG, plan="pro", admin_email=f"admin@{SLUG}.example.com",
            admin_password=ADMIN_PASSWORD, actor=TEST_ACTOR,
        ).tenant  # fmt: skip
    try:
        yield tenant
    finally:
        with django_db_blocker.unblock():
            connection.set_schema_to_public()
            drop_tenant(SLUG)


@pytest.fixture
def saved(racing: Tenant, django_db_blocker: Any) -> Iterator[Tenant]:
    """The tenant with its own model server saved (committed); removed again afterwards."""
    with django_db_blocker.unblock():
        with schema_context(racing.schema_name):
            model_provider_save(actor=ACTOR, base_url=URL, model_ids=["m1"])
        yield racing
        with schema_context(racing.schema_name):
            ModelProvider.objects.all().delete()


def in_thread(
    tenant: Tenant, work: Callable[[], Any], pids: list[int], errors: list[BaseException]
) -> threading.Thread:
    """Run ``work`` on a connection of its own (a thread's), in the tenant's schema."""

    def run() -> None:
        try:
            with schema_context(tenant.schema_name):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    pids.append(cursor.fetchone()[0])
                work()
        except BaseException as exc:  # handed to the test, which raises it
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until_blocked(pids: list[int]) -> None:
    """Until the second connection waits on a lock (a condition, checked; not a guess at a duration)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pids:
            with connection.cursor() as cursor:
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pids[0]])
                row = cursor.fetchone()
            if row and row[0] == "Lock":
                return
        time.sleep(0.01)
    raise AssertionError("the second request never waited on the first one's lock")


def race(tenant: Tenant, first: Callable[[], Any], second: Callable[[], Any]) -> list[BaseException]:
    """``first`` runs and holds its transaction open; ``second`` starts and blocks on its lock; then ``first``
    commits and ``second`` finishes. The errors either raised."""
    release = threading.Event()
    pids: list[int] = []
    errors: list[BaseException] = []
    done_first = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            first()
            done_first.set()
            assert release.wait(30)

    one = in_thread(tenant, hold, [], errors)
    assert done_first.wait(30), errors
    two = in_thread(tenant, second, pids, errors)
    try:
        wait_until_blocked(pids)
    finally:
        release.set()
        one.join(30)
        two.join(30)
    return errors


def deletions(tenant: Tenant) -> int:
    with schema_context(tenant.schema_name):
        return AuditEvent.objects.filter(action="model_provider.deleted").count()


def test_two_deletes_at_once_record_one_deletion(saved: Tenant, django_db_blocker: Any) -> None:
    """Both read the row before either deleted it: both audited a deletion."""

    def delete() -> None:
        model_provider_delete(actor=ACTOR)

    with django_db_blocker.unblock():
        before = deletions(saved)
        assert race(saved, delete, delete) == []
        assert deletions(saved) == before + 1
        with schema_context(saved.schema_name):
            assert not ModelProvider.objects.exists()


def test_a_save_while_the_provider_is_deleted_saves_it_again(saved: Tenant, django_db_blocker: Any) -> None:
    """The save found the row, the delete committed, and the save's lock found none: a 500 DoesNotExist."""
    with django_db_blocker.unblock():
        errors = race(
            saved,
            lambda: model_provider_delete(actor=ACTOR),
            lambda: model_provider_save(actor=ACTOR, base_url=URL, model_ids=["m2"]),
        )
        assert errors == []
        with schema_context(saved.schema_name):
            assert list(ModelProvider.objects.values_list("pk", "model_ids")) == [(1, ["m2"])]
