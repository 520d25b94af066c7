"""Provisioning, suspension and the platform audit trail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from unittest import mock

import pytest
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django_tenants.utils import schema_context, schema_exists

from apps.accounts.models import Role, User
from apps.core.exceptions import ApplicationError, InvalidInput
from apps.tenants.db import connection
from apps.tenants.models import Domain, PlatformAuditEvent, Tenant, TenantStatus
from apps.tenants.schemas import schema_is_current
from apps.tenants.services import tenant_provision, tenant_reactivate, tenant_suspend
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, TenantFixture, drop_tenant


def provision(slug: str, **overrides: object) -> object:
    kwargs: dict[str, object] = {
        "name": f"{slug} Org",
        "slug": slug,
        "plan": "free",
        "admin_email": f"owner@{slug}.example.com",
        "admin_password": ADMIN_PASSWORD,
        "actor": TEST_ACTOR,
        **overrides,
    }
    return tenant_provision(**kwargs)  # type: ignore[arg-type]


def leaves_no_trace(slug: str) -> bool:
    return (
        not Tenant.objects.filter(slug=slug).exists()
        and not Domain.objects.filter(domain__startswith=f"{slug}.").exists()
        and not schema_exists(f"t_{slug.replace('-', '_')}")
        and not PlatformAuditEvent.objects.filter(tenant_schema=f"t_{slug.replace('-', '_')}").exists()
    )


@pytest.mark.django_db
class TestProvision:
    def test_creates_tenant_schema_domain_and_admin(self) -> None:
        result = provision("river-works", plan="basic")
        tenant = result.tenant  # type: ignore[attr-defined]
        assert tenant.schema_name == "t_river_works"
        assert schema_exists("t_river_works")
        assert tenant.status == TenantStatus.TRIAL
        assert tenant.trial_ends_at is not None
        assert list(tenant.domains.values_list("domain", "is_primary")) == [("river-works.localhost", True)]
        assert tenant.url == "http://river-works.localhost/"
        with schema_context(tenant.schema_name):
            admin = User.objects.get()
            assert admin.email == "owner@river-works.example.com"
            assert admin.role == Role.ADMIN
            assert admin.check_password(ADMIN_PASSWORD)
        event = PlatformAuditEvent.objects.get(tenant_schema="t_river_works")
        assert event.action == "tenant.provisioned"
        assert event.actor_label == "tests"

    def test_free_plan_starts_active_without_a_trial(self) -> None:
        tenant = provision("free-org").tenant  # type: ignore[attr-defined]
        assert tenant.status == TenantStatus.ACTIVE
        assert tenant.trial_ends_at is None

    def test_schema_is_cloned_from_the_base_schema(self) -> None:
        lines: list[str] = []
        tenant = provision("cloned-org", on_progress=lines.append).tenant  # type: ignore[attr-defined]
        assert tenant.schema_made_by == "clone"
        assert f"Schema t_cloned_org ready (cloned {settings.TENANT_BASE_SCHEMA})" in lines
        assert schema_is_current("t_cloned_org")  # the copied django_migrations rows are complete

    def test_a_base_schema_that_is_behind_is_not_cloned(self) -> None:
        with connection.cursor() as cursor:  # rolled back with the test
            cursor.execute(
                f"DELETE FROM {settings.TENANT_BASE_SCHEMA}.django_migrations "
                "WHERE app = 'plans' AND name = '0002_seed_plans'"
            )
        tenant = provision("behind-org").tenant  # type: ignore[attr-defined]
        assert tenant.schema_made_by == "migrations"
        assert schema_is_current("t_behind_org")

    def test_falls_back_to_migrations_while_the_base_schema_is_missing(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{settings.TENANT_BASE_SCHEMA}" CASCADE')  # rolled back with the test
        lines: list[str] = []
        result = provision("migrated-org", on_progress=lines.append)
        assert result.tenant.schema_made_by == "migrations"  # type: ignore[attr-defined]
        assert "Schema t_migrated_org ready (ran migrations)" in lines
        with schema_context(result.tenant.schema_name):  # type: ignore[attr-defined]
            assert User.objects.count() == 1

    def test_generates_a_password_when_none_is_given(self) -> None:
        result = provision("gen-pass", admin_password=None)
        password = result.generated_password  # type: ignore[attr-defined]
        assert password
        assert len(password) >= 12
        with schema_context(result.tenant.schema_name):  # type: ignore[attr-defined]
            assert User.objects.get().check_password(password)

    def test_slug_and_email_are_normalized(self) -> None:
        result = provision("  Mixed-Case  ", admin_email="  Owner@Example.COM ")
        assert result.tenant.slug == "mixed-case"  # type: ignore[attr-defined]
        assert result.tenant.owner_email == "owner@example.com"  # type: ignore[attr-defined]


@pytest.mark.django_db
class TestProvisionRefusesBadInput:
    @pytest.mark.parametrize(
        ("slug", "reason"),
        [
            ("", "required"),
            ("ab", "3 to 40"),
            ("a" * 41, "3 to 40"),
            ("-leading", "hyphen"),
            ("trailing-", "hyphen"),
            ("double--hyphen", "hyphen"),
            ("under_score", "hyphen"),
            ("dot.ted", "hyphen"),
            ("ünï", "hyphen"),
            ("www", "reserved"),
            ("admin", "reserved"),
            ("api", "reserved"),
            ("public", "reserved"),
            ("static", "reserved"),
            ("mail", "reserved"),
        ],
    )
    def test_invalid_and_reserved_slugs(self, slug: str, reason: str) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision(slug)
        assert reason in " ".join(caught.value.details["slug"])

    def test_duplicate_slug(self, tenant_alpha: TenantFixture) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision("alpha")
        assert caught.value.details["slug"] == ["This address is already taken."]

    def test_duplicate_owner_email(self, tenant_alpha: TenantFixture) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision("new-org", admin_email=tenant_alpha.admin_email.upper())
        assert "admin_email" in caught.value.details
        assert leaves_no_trace("new-org")

    def test_a_cancelled_workspace_frees_its_owner_email(self, tenant_beta: TenantFixture) -> None:
        Tenant.objects.filter(pk=tenant_beta.tenant.pk).update(status=TenantStatus.CANCELLED)
        provision("beta-again", admin_email=tenant_beta.admin_email)

    def test_every_problem_is_reported_at_once(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision("www", name="", plan="platinum", admin_email="not-an-email", admin_password="x")
        assert set(caught.value.details) == {"name", "slug", "plan", "admin_email"}

    def test_weak_password(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision("weak-pass", admin_password="12345678")
        assert "admin_password" in caught.value.details
        assert leaves_no_trace("weak-pass")

    def test_sales_only_plans_are_refused_to_self_serve(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            provision("big-corp", plan="enterprise", self_serve_only=True)
        assert "plan" in caught.value.details
        provision("big-corp", plan="enterprise")  # staff may


@pytest.fixture
def committed_db(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """No test transaction: the service's own transaction is the outermost one, as in production."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        yield
        connection.set_schema_to_public()


class TestProvisionIsAllOrNothing:
    """A failure at any step leaves no schema, no tenant row, no domain and no audit event."""

    @pytest.mark.parametrize(
        "failing_step",
        [
            "apps.tenants.schemas._clone",
            "apps.tenants.services.Domain.objects.create",
            "apps.tenants.services.user_create",
            "apps.tenants.services.platform_audit_record",
        ],
    )
    def test_a_failure_in_any_step_leaves_no_trace(self, committed_db: None, failing_step: str) -> None:
        slug = "doomed-org"
        try:
            with (
                mock.patch(failing_step, side_effect=DatabaseError("injected failure")),
                pytest.raises(DatabaseError, match="injected failure"),
            ):
                provision(slug)
            assert leaves_no_trace(slug)
        finally:
            drop_tenant(slug)

    def test_the_happy_path_commits(self, committed_db: None) -> None:
        slug = "kept-org"
        try:
            provision(slug)
            assert Tenant.objects.filter(slug=slug).exists()
            assert schema_exists("t_kept_org")
        finally:
            drop_tenant(slug)

    def test_two_sign_ups_racing_for_one_slug_give_one_tenant(self, committed_db: None) -> None:
        slug = "raced-org"
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def attempt(n: int) -> None:
            try:
                barrier.wait()
                provision(slug, admin_email=f"owner{n}@raced.example.com")
                outcomes.append("created")
            except InvalidInput:
                outcomes.append("refused")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(2)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["created", "refused"]
            assert Tenant.objects.filter(slug=slug).count() == 1
        finally:
            drop_tenant(slug)


@pytest.mark.django_db
class TestStatusChanges:
    def test_suspend_and_reactivate_are_audited(self, tenant_alpha: TenantFixture) -> None:
        tenant = tenant_suspend(tenant=tenant_alpha.tenant, actor=TEST_ACTOR, reason="unpaid invoice")
        assert tenant.status == TenantStatus.SUSPENDED
        assert tenant.suspended_at is not None
        with pytest.raises(ApplicationError):
            tenant_suspend(tenant=tenant, actor=TEST_ACTOR)
        tenant = tenant_reactivate(tenant=tenant, actor=TEST_ACTOR)
        assert tenant.status == (TenantStatus.TRIAL if tenant.trial_ends_at else TenantStatus.ACTIVE)
        with pytest.raises(ApplicationError):
            tenant_reactivate(tenant=tenant, actor=TEST_ACTOR)
        actions = list(
            PlatformAuditEvent.objects.filter(tenant_schema=tenant.schema_name)
            .order_by("id")
            .values_list("action", "metadata__reason")
        )
        assert actions[-2:] == [("tenant.suspended", "unpaid invoice"), ("tenant.reactivated", None)]

    def test_platform_audit_trail_is_append_only(self, tenant_alpha: TenantFixture) -> None:
        tenant_suspend(tenant=tenant_alpha.tenant, actor=TEST_ACTOR)
        event = PlatformAuditEvent.objects.latest("id")
        for statement in (
            lambda: PlatformAuditEvent.objects.filter(pk=event.pk).update(action="tampered"),
            lambda: PlatformAuditEvent.objects.filter(pk=event.pk).delete(),
        ):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
                statement()
        assert PlatformAuditEvent.objects.get(pk=event.pk).action == "tenant.suspended"
