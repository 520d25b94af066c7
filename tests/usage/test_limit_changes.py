"""Limits that change within the month: staff overrides and plans, the spending cap, and what follows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.core.actors import Actor
from apps.plans.models import Plan
from apps.tenants.models import QUOTA_OVERRIDE_FIELDS, Tenant
from apps.usage.meter import Meter
from apps.usage.models import SPENDING_CAP, QuotaAlert
from tests.conftest import TEST_ACTOR, TenantFixture, admin_of, bearer, jwt_pair
from tests.usage.conftest import set_limits

pytestmark = pytest.mark.django_db


def tenant_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": tenant.name, "plan": tenant.plan_id}
    for field in QUOTA_OVERRIDE_FIELDS:
        value = getattr(tenant, field)
        data[field] = "" if value is None else value
    data.update({"domains-TOTAL_FORMS": 0, "domains-INITIAL_FORMS": 0, "domains-MIN_NUM_FORMS": 0,
                 "domains-MAX_NUM_FORMS": 1000})  # fmt: skip
    return {**data, **changes}


def test_a_cap_set_below_the_months_overage_tells_the_admins_once(
    tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
) -> None:
    """An admin lowers the cap below what the month's overage already costs: calls stop at once, and each is
    refused before the charge that would raise the cap's alert, so no one else was ever told why."""
    set_limits(tenant_alpha.tenant, api_calls_per_month_override=2)  # pro: 1 fen a call past the quota
    with schema_context(tenant_alpha.tenant.schema_name):
        meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
        for _ in range(6):
            meter.record(meter.charge())
    admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin.put("/api/quota/spending-cap", {"spending_cap_fen": 1}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert len([c for c in callbacks if "_queue_alert_email" in c.__qualname__]) == 1
    for cap in (1, 2, 1):  # set again (after another value): still once for each cap
        admin.put("/api/quota/spending-cap", {"spending_cap_fen": cap}, content_type="application/json")
    admin.put("/api/quota/spending-cap", {"spending_cap_fen": 100}, content_type="application/json")  # not reached
    with schema_context(tenant_alpha.tenant.schema_name):
        alerts = QuotaAlert.objects.filter(quota=SPENDING_CAP).order_by("limit")
        assert list(alerts.values_list("limit", "used")) == [(1, 4), (2, 4)]  # the cap and the overage, in fen


@pytest.mark.parametrize("value", [-1, 10**20, "1.5"])
@pytest.mark.parametrize("field", QUOTA_OVERRIDE_FIELDS)
def test_a_bad_override_is_a_form_error_and_changes_nothing(
    staff: Client, tenant_alpha: TenantFixture, field: str, value: Any
) -> None:
    """Negative, fractional, or past the column's range (which PostgreSQL would refuse with a 500)."""
    tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
    response = staff.post(f"/admin/tenants/tenant/{tenant.pk}/change/", tenant_form(tenant, **{field: value}))
    assert response.status_code == 200, response.content.decode()[:2000]
    assert "errorlist" in response.content.decode()
    assert getattr(Tenant.objects.get(pk=tenant.pk), field) is None


@pytest.mark.parametrize("value", [-1, 10**20, "1.5"])
@pytest.mark.parametrize("field", ["api_calls_per_month", "max_users", "price_fen_per_month", "rate_limit_per_minute"])
def test_a_bad_plan_value_is_a_form_error(staff: Client, field: str, value: Any) -> None:
    plan = Plan.objects.get(code="basic")
    data = {f.name: getattr(plan, f.name) for f in Plan._meta.fields if f.editable}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    response = staff.post(f"/admin/plans/plan/{plan.pk}/change/", {**data, field: value})
    assert response.status_code == 200, response.content.decode()[:2000]
    assert getattr(Plan.objects.get(pk=plan.pk), field) == getattr(plan, field)


def test_a_quota_lowered_under_a_spending_cap_raises_the_caps_alert(tenant_alpha: TenantFixture) -> None:
    """Staff lower a pro workspace's quota: where its cap stops calls falls below the month's calls too, and every
    call is refused before the charge that would raise the cap's alert; the catch-up raised the quota's only."""
    from apps.tenants.services import tenant_update
    from apps.usage.services import quota_alerts_catch_up

    tenant = set_limits(tenant_alpha.tenant, api_calls_per_month_override=10, spending_cap_fen=2)
    with schema_context(tenant.schema_name):
        meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
        for _ in range(6):
            meter.record(meter.charge())
        overrides = {field: getattr(tenant, field) for field in QUOTA_OVERRIDE_FIELDS}
        tenant = tenant_update(tenant=tenant, actor=TEST_ACTOR,
                               overrides={**overrides, "api_calls_per_month_override": 2})  # fmt: skip
        assert quota_alerts_catch_up(tenant=tenant, quotas=["api_calls"]) == {"api_calls": [80, 90, 100]}
        assert list(QuotaAlert.objects.filter(quota=SPENDING_CAP).values_list("limit", "used")) == [(2, 4)]
