"""Staff edit a plan: every tenant on it carries the change at once, and those now past a threshold are told."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.core.exceptions import InvalidInput
from apps.plans.models import Plan
from apps.plans.services import plan_update
from apps.plans.tasks import alerts_after_plan_lowered
from apps.tenants.models import PlatformAuditEvent, Tenant
from apps.usage import limits as L
from apps.usage.meter import month_key
from apps.usage.models import SPENDING_CAP, QuotaAlert
from apps.usage.tasks import alerts_after_limits_lowered, send_quota_alert_email
from tests.conftest import TEST_ACTOR, TenantFixture, admin_of, bearer, jwt_pair
from tests.usage.conftest import set_limits

pytestmark = pytest.mark.django_db


Queued = list[tuple[str, list[str]]]


@pytest.fixture
def small() -> Plan:
    """A plan of this test's own, so that no other test's tenants are on it: stops at its quota, as free does."""
    return Plan.objects.create(code="small", name_en="Small", name_zh="小", api_calls_per_month=100, storage_mb=100,
                               max_users=5, max_mcp_services=3, rate_limit_per_minute=60, hard_stop=True)  # fmt: skip


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> Queued:
    """The fan-out runs here, as the worker would run it on the public schema; the catch-ups it queues for each
    tenant are kept as (schema, quotas), in the order queued."""
    kept: Queued = []

    def fan_out(args: list[Any], **_options: Any) -> None:
        alerts_after_plan_lowered.apply(args=args).get()

    def catch_up(args: list[Any], headers: dict[str, str], **_options: Any) -> None:
        kept.append((headers["_schema_name"], args[0]))

    monkeypatch.setattr(alerts_after_plan_lowered, "apply_async", fan_out)
    monkeypatch.setattr(alerts_after_limits_lowered, "apply_async", catch_up)
    return kept


def plan_form(plan: Plan, **changes: Any) -> dict[str, Any]:
    data = {f.name: getattr(plan, f.name) for f in Plan._meta.fields if f.editable}
    return {**{k: ("" if v is None else v) for k, v in data.items()}, **changes}


def on_plan(tenant: TenantFixture, **changes: Any) -> Tenant:
    """``set_limits`` on a fresh row: the session's tenant object keeps what earlier tests set on it."""
    return set_limits(Tenant.objects.get(pk=tenant.tenant.pk), **changes)


def month_calls(tenant: TenantFixture, calls: int) -> None:
    get_redis_connection("default").hset(month_key(tenant.tenant.schema_name, L.today()), "calls", calls)


def test_a_quota_lowered_in_the_admin_alerts_the_tenants_on_the_plan_once(
    staff: Client, small: Plan, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, queued: Queued, *,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    """A workspace on a plan that stops at its quota, with 60 of its 100 calls made: staff lower the plan's quota
    to 50, so every call is refused before the charge that would alert, and without the catch-up no one is told."""
    on_plan(tenant_alpha, plan="small")
    month_calls(tenant_alpha, 60)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/plans/plan/{small.pk}/change/", plan_form(small, api_calls_per_month=50))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert queued == [(tenant_alpha.tenant.schema_name, ["api_calls"])]  # not beta, on another plan
    event = PlatformAuditEvent.objects.get(action="plan.updated")
    assert event.actor_label == "ops@hydronet.example.com"
    assert event.target_id == str(small.pk)
    assert event.metadata["changes"] == {"api_calls_per_month": [100, 50]}
    with schema_context(tenant_alpha.tenant.schema_name):
        assert alerts_after_limits_lowered.apply(args=[["api_calls"]]).get() == {"api_calls": [80, 90, 100]}
        assert alerts_after_limits_lowered.apply(args=[["api_calls"]]).get() == {"api_calls": []}  # once
        alert = QuotaAlert.objects.get(limit=50, threshold=100)
        assert send_quota_alert_email.apply(args=[alert.pk, "en"]).get() == [tenant_alpha.admin_email]
    assert "has used 60 of its 50 API calls" in mail.outbox[0].body
    assert "AI calls are stopped until the quota resets on " in mail.outbox[0].body


def test_a_tenants_own_override_hides_the_plans_lower_quota(
    small: Plan, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, queued: Queued,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    on_plan(tenant_alpha, plan="small")
    on_plan(tenant_beta, plan="small", api_calls_per_month_override=1000, max_mcp_services_override=1)
    with django_capture_on_commit_callbacks(execute=True):
        plan_update(plan=small, actor=TEST_ACTOR, values={"api_calls_per_month": 50})
    assert queued == [(tenant_alpha.tenant.schema_name, ["api_calls"])]
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        plan_update(plan=small, actor=TEST_ACTOR, values={"max_users": 2, "max_mcp_services": 2})
    assert sorted(queued) == sorted([(tenant_alpha.tenant.schema_name, ["users", "mcp_services"]),
                                     (tenant_beta.tenant.schema_name, ["users"])])  # fmt: skip


def test_a_higher_overage_price_alerts_the_tenants_whose_cap_now_stops_calls(
    small: Plan, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, queued: Queued,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    """A cap of 2 fen at 1 fen a call past a quota of 10 stops calls at 12; at 2 fen a call, at 11. With 11 calls
    made, every call is now refused before the charge that would raise the cap's alert. The quota's override does
    not hide the plan's price."""
    plan_update(plan=small, actor=TEST_ACTOR, values={"hard_stop": False, "overage_fen_per_1000_calls": 1000})
    on_plan(tenant_alpha, plan="small", api_calls_per_month_override=10, spending_cap_fen=2)
    on_plan(tenant_beta, plan="small")  # no cap: its calls do not stop sooner
    month_calls(tenant_alpha, 11)
    with django_capture_on_commit_callbacks(execute=True):
        plan_update(plan=small, actor=TEST_ACTOR, values={"overage_fen_per_1000_calls": 2000})
    assert queued == [(tenant_alpha.tenant.schema_name, ["api_calls"])]
    with schema_context(tenant_alpha.tenant.schema_name):
        alerts_after_limits_lowered.apply(args=[["api_calls"]]).get()
        assert list(QuotaAlert.objects.filter(quota=SPENDING_CAP).values_list("limit", "used")) == [(2, 2)]


def test_a_raised_limit_queues_nothing(
    small: Plan, tenant_alpha: TenantFixture, queued: Queued, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    on_plan(tenant_alpha, plan="small")
    with django_capture_on_commit_callbacks(execute=True):
        plan_update(plan=small, actor=TEST_ACTOR, values={"api_calls_per_month": 200, "max_users": None})
        plan_update(plan=small, actor=TEST_ACTOR, values={"overage_fen_per_1000_calls": 1000})  # a price first set
    assert queued == []
    assert PlatformAuditEvent.objects.filter(action="plan.updated", target_id=str(small.pk)).count() == 2


@pytest.mark.parametrize("value", [-1, 10**20, "1.5"])
def test_a_bad_plan_value_is_refused_and_changes_nothing(
    staff: Client, small: Plan, tenant_alpha: TenantFixture, queued: Queued, value: Any, *,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    on_plan(tenant_alpha, plan="small")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/plans/plan/{small.pk}/change/", plan_form(small, api_calls_per_month=value))
        assert response.status_code == 200, response.content.decode()[:2000]
        assert "errorlist" in response.content.decode()
        with pytest.raises(InvalidInput) as refused:
            plan_update(plan=small, actor=TEST_ACTOR, values={"api_calls_per_month": value, "max_users": 1})
    assert refused.value.details is not None
    assert "api_calls_per_month" in refused.value.details
    assert Plan.objects.values_list("api_calls_per_month", "max_users").get(pk=small.pk) == (100, 5)
    assert queued == []
    assert not PlatformAuditEvent.objects.filter(action="plan.updated").exists()


def test_a_tenants_next_request_sees_the_plans_new_limit(
    staff: Client, small: Plan, tenant_alpha: TenantFixture
) -> None:
    """The route cached in Redis and in each process's memory carries the plan; changing the plan drops it."""
    on_plan(tenant_alpha, plan="small")
    admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))

    def calls_limit() -> Any:
        response = admin.get("/api/quota")
        assert response.status_code == 200, response.content
        return response.json()["quotas"][0]["limit"]

    assert calls_limit() == 100  # and the route is now cached
    response = staff.post(f"/admin/plans/plan/{small.pk}/change/", plan_form(small, api_calls_per_month=50))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert calls_limit() == 50
    assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).plan_id == small.pk


@pytest.fixture
def run_in_tenants(monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    """The plan's fan-out, each tenant's catch-up and the alert emails run here, as the worker would run them."""

    def run(task: Any) -> Callable[..., None]:
        def apply_async(args: list[Any], kwargs: dict[str, Any] | None = None, **options: Any) -> None:
            schema = (options.get("headers") or {}).get("_schema_name", "public")
            with schema_context(schema), django_capture_on_commit_callbacks(execute=True):
                task.apply(args=args, kwargs=kwargs).get()

        return apply_async

    for task in (alerts_after_plan_lowered, alerts_after_limits_lowered, send_quota_alert_email):
        monkeypatch.setattr(task, "apply_async", run(task))


def emailed_100_percent(tenant: TenantFixture, limit: int) -> QuotaAlert:
    """This month's 100 % alert of the API calls, its email sent (it said calls went on as overage)."""
    from django.utils import timezone

    with schema_context(tenant.tenant.schema_name):
        return QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=100,
                                         limit=limit, used=limit, emailed_at=timezone.now())  # fmt: skip


def test_a_plan_that_stops_billing_overage_tells_those_past_its_quota_that_calls_stop(
    small: Plan, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, run_in_tenants: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    """The quota stays at 100 and its 100 % alert fired this month, saying calls went on as overage: staff make
    the plan stop at its quota, and every call is refused from then on. No alert was new, so no one was told."""
    plan_update(plan=small, actor=TEST_ACTOR, values={"hard_stop": False, "overage_fen_per_1000_calls": 1000})
    on_plan(tenant_alpha, plan="small")
    on_plan(tenant_beta, plan="small")
    month_calls(tenant_alpha, 130)
    month_calls(tenant_beta, 40)  # under the quota: nothing to tell
    alert = emailed_100_percent(tenant_alpha, 100)
    with django_capture_on_commit_callbacks(execute=True):
        plan_update(plan=small, actor=TEST_ACTOR, values={"overage_fen_per_1000_calls": None})
    (message,) = mail.outbox
    assert message.to == [tenant_alpha.admin_email]
    assert "AI calls are stopped until the quota resets on " in message.body
    with schema_context(tenant_alpha.tenant.schema_name):
        alert.refresh_from_db()
    assert alert.emailed_at is not None
    with django_capture_on_commit_callbacks(execute=True):  # a change that stops nothing sooner tells no one
        plan_update(plan=small, actor=TEST_ACTOR, values={"hard_stop": True})
    assert len(mail.outbox) == 1


def test_a_tenant_moved_to_a_plan_that_stops_at_the_same_quota_is_told(
    small: Plan, tenant_alpha: TenantFixture, run_in_tenants: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    from apps.tenants.services import tenant_update

    billing = Plan.objects.create(code="small-billing", name_en="Small+", name_zh="小+", api_calls_per_month=100,
                                  storage_mb=100, max_users=5, max_mcp_services=3, rate_limit_per_minute=60,
                                  hard_stop=False, overage_fen_per_1000_calls=1000)  # fmt: skip
    on_plan(tenant_alpha, plan=billing.code)
    month_calls(tenant_alpha, 100)
    emailed_100_percent(tenant_alpha, 100)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), actor=TEST_ACTOR, plan=small)
    (message,) = mail.outbox
    assert "AI calls are stopped until the quota resets on " in message.body
