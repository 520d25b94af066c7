"""Staff actions in the platform admin land in the platform audit trail."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.plans.models import Plan
from apps.tenants.models import PlatformAuditEvent, Tenant, TenantStatus
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db


def test_editing_a_plan_is_recorded(staff: Client) -> None:
    plan = Plan.objects.get(code="basic")
    data = {field.name: getattr(plan, field.name) for field in Plan._meta.fields if field.editable}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data["rate_limit_per_minute"] = 321
    response = staff.post(f"/admin/plans/plan/{plan.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    event = PlatformAuditEvent.objects.get(action="admin.plan.changed")
    assert event.actor_label == "ops@hydronet.example.com"
    assert event.target_id == str(plan.pk)
    assert "requests per minute" in event.metadata["message"].lower()


def test_suspending_from_the_admin_is_recorded(staff: Client, tenant_alpha: TenantFixture) -> None:
    response = staff.post(
        "/admin/tenants/tenant/",
        {"action": "suspend_selected", "_selected_action": [tenant_alpha.tenant.pk]},
    )
    assert response.status_code == 302
    assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).status == TenantStatus.SUSPENDED
    event = PlatformAuditEvent.objects.get(action="tenant.suspended", tenant_schema="t_alpha")
    assert event.actor_label == "ops@hydronet.example.com"
    assert event.ip == "127.0.0.1"


def test_provisioning_from_the_admin(staff: Client) -> None:
    response = staff.post(
        "/admin/tenants/tenant/provision/",
        {"name": "Admin Made", "slug": "admin-made", "plan": Plan.objects.get(code="pro").pk,
         "admin_email": "boss@admin-made.example.com"},
    )  # fmt: skip
    assert response.status_code == 302
    assert Tenant.objects.filter(slug="admin-made").exists()
    assert PlatformAuditEvent.objects.filter(action="tenant.provisioned", actor_label="ops@hydronet.example.com")


def test_the_admin_refuses_non_staff_members(tenant_alpha: TenantFixture) -> None:
    client = Client(HTTP_HOST="localhost")
    assert not client.login(username=tenant_alpha.admin_email, password=tenant_alpha.admin_password)


def test_the_tenant_list_speaks_chinese_throughout(staff: Client, tenant_alpha: TenantFixture) -> None:
    page = staff.get("/admin/tenants/tenant/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    headers = re.findall(r'<th scope="col"[^>]*>.*?</th>', page, re.S)
    texts = [re.sub(r"<[^>]+>", "", header).strip() for header in headers]
    assert "套餐" in texts
    assert "创建时间" in texts
    assert "Plan" not in texts
    assert "Created at" not in texts


def test_a_tenants_storage_is_shown_in_mb_as_the_plans_state_it(staff: Client, tenant_alpha: TenantFixture) -> None:
    """It was filesizeformat's: a pro plan's 10,000 MB read "9.8 GB", an override of 2**53 MB "8589934592.0 PB"."""
    page = staff.get(f"/admin/tenants/tenant/{tenant_alpha.tenant.pk}/change/").content.decode()
    limit = Tenant.objects.get(pk=tenant_alpha.tenant.pk).plan.storage_mb  # type: ignore[union-attr]
    assert f"{limit:,} MB" in page
    assert " GB" not in page


def test_the_plan_list_shows_prices_in_yuan_to_the_fen(staff: Client) -> None:
    """It showed the price as an integer of fen (9900 for basic's ¥99.00), unlike every other page."""
    page = staff.get("/admin/plans/plan/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "¥99.00" in page
    assert "¥499.00" in page
