"""Tenant-aware tasks, run by a real Celery worker process on real Redis and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout
from django.utils import timezone
from django_guid import clear_guid, set_guid
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.accounts.models import UserSession as Session
from apps.accounts.tasks import clear_expired_sessions_everywhere, send_welcome_email
from apps.tenants.db import connection
from config.celery import TenantRequiredError
from tests.conftest import TenantFixture
from tests.processes import Worker

pytestmark = pytest.mark.celery


@pytest.fixture
def committed(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """The worker sees only committed rows, so these tests run without a test transaction."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        yield
        connection.set_schema_to_public()


def admin_id(tenant: TenantFixture) -> int:
    with schema_context(tenant.tenant.schema_name):
        return User.objects.get(email=tenant.admin_email).pk


def test_a_task_queued_in_a_tenant_runs_in_that_tenants_schema(
    committed: None, celery_worker: Worker, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    # Both admins have the same id in their own schemas; only the schema tells them apart.
    alpha_id, beta_id = admin_id(tenant_alpha), admin_id(tenant_beta)
    assert alpha_id == beta_id
    with schema_context(tenant_beta.tenant.schema_name):
        result = send_welcome_email.delay(beta_id, "en")
    assert result.get(timeout=30) == tenant_beta.admin_email
    mails = "\n".join(p.read_text() for p in celery_worker.email_dir.iterdir())
    assert "http://beta.localhost/login/" in mails
    assert "Your workspace Beta Water is ready." in mails


def test_a_tenant_task_queued_without_a_tenant_fails_instead_of_running_on_public(
    committed: None, celery_worker: Worker, tenant_alpha: TenantFixture
) -> None:
    assert connection.schema_name == "public"
    result = send_welcome_email.delay(admin_id(tenant_alpha))
    with pytest.raises(TenantRequiredError):
        result.get(timeout=30)
    assert result.state == "FAILURE"


def test_a_job_for_every_tenant_reaches_each_tenant_schema(
    committed: None, celery_worker: Worker, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    expired = timezone.now() - timedelta(days=1)
    schemas = [tenant_alpha.tenant.schema_name, tenant_beta.tenant.schema_name]
    for schema in schemas:
        with schema_context(schema):
            Session.objects.create(session_key=f"expired{schema}", session_data="x", expire_date=expired)
    queued = clear_expired_sessions_everywhere.delay().get(timeout=30)
    assert queued >= 2
    deadline = timezone.now() + timedelta(seconds=30)
    remaining = schemas
    while remaining and timezone.now() < deadline:
        remaining = []
        for schema in schemas:
            with schema_context(schema):
                if Session.objects.filter(session_key=f"expired{schema}").exists():
                    remaining.append(schema)
    assert remaining == [], f"expired sessions left in {remaining}"


def test_a_worker_reports_a_missing_result_as_a_timeout_not_a_hang(committed: None, celery_worker: Worker) -> None:
    # Guards the tests above: .get() on a task nobody runs must time out.
    from config.celery import app

    with pytest.raises(CeleryTimeout):
        app.AsyncResult("no-such-task-id").get(timeout=1)


def test_a_new_workspace_has_its_storage_measured_at_once(committed: None, celery_worker: Worker) -> None:
    import time

    from apps.tenants.services import tenant_provision
    from apps.usage.models import UsageStat
    from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant

    tenant = tenant_provision(name="Storage First", slug="storage-first", plan="free",
                              admin_email="admin@storage-first.example.com", admin_password=ADMIN_PASSWORD,
                              actor=TEST_ACTOR).tenant  # fmt: skip
    try:
        measured = None
        for _ in range(150):  # the worker takes the task queued at commit; no beat runs here
            with schema_context(tenant.schema_name):
                measured = (
                    UsageStat.objects.filter(user_id__isnull=True).values_list("storage_bytes", flat=True).first()
                )
            if measured:
                break
            time.sleep(0.2)
        assert measured is not None
        assert measured > 100_000  # the tables and indexes of a fresh schema
    finally:
        connection.set_schema_to_public()
        drop_tenant("storage-first")


def test_a_task_logs_with_the_id_of_the_request_that_queued_it(
    committed: None, celery_worker: Worker, tenant_alpha: TenantFixture
) -> None:
    """django-guid's Celery integration: the worker's lines of a task carry the id of the request that queued it."""
    request_id = uuid.uuid4().hex
    with schema_context(tenant_alpha.tenant.schema_name):
        admin = User.objects.get(email=tenant_alpha.admin_email).pk
        set_guid(request_id)
        try:
            send_welcome_email.delay(admin, "en").get(timeout=30)
        finally:
            clear_guid()
    deadline = time.monotonic() + 10
    while request_id not in celery_worker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"[{request_id}]" in celery_worker.log.read_text()
