from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Q, QuerySet

from apps.plans.models import Plan

# Each quota (``apps.usage.models.Quota``) as a plan states it, and the tenant's override that takes its place
# (``apps.usage.limits.limits_for``): a tenant with an override is not affected by the plan's value.
PLAN_QUOTA_FIELDS = {
    "api_calls": ("api_calls_per_month", "api_calls_per_month_override"),
    "storage": ("storage_mb", "storage_mb_override"),
    "users": ("max_users", "max_users_override"),
    "mcp_services": ("max_mcp_services", "max_mcp_services_override"),
}


def plan_list_public() -> QuerySet[Plan]:
    """Active plans in display order, as the pricing table shows them."""
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def plan_get_for_signup(*, code: str) -> Plan | None:
    """The plan an organisation may pick at sign-up, or None."""
    return Plan.objects.filter(code=code, is_active=True, self_serve=True).first()


def plan_tenants_affected(
    *, plan_id: int, quotas: list[str], calls_stop_sooner: bool = False, everyone: bool = False
) -> Iterator[tuple[str, list[str]]]:
    """The serving tenants on the plan that a change to its ``quotas`` affects, as (schema name, their quotas).

    A tenant's override of a quota hides the plan's value of it. With ``calls_stop_sooner`` (a higher overage
    price), every tenant with a spending cap has its API calls affected too, override or not; with ``everyone``
    (a change of what happens at the quotas, which no override hides), every tenant on the plan. Read in chunks,
    for plans with many tenants.
    """
    from apps.tenants.selectors import tenant_list_serving

    overrides = {quota: PLAN_QUOTA_FIELDS[quota][1] for quota in quotas}
    affected = Q(pk__in=[])
    for override in overrides.values():
        affected |= Q(**{f"{override}__isnull": True})
    if calls_stop_sooner:
        affected |= Q(spending_cap_fen__isnull=False)
    if everyone:
        affected |= Q(pk__isnull=False)
    rows = (
        tenant_list_serving()
        .filter(affected, plan_id=plan_id)
        .order_by("pk")
        .values("schema_name", "spending_cap_fen", *overrides.values())
    )
    for row in rows.iterator(chunk_size=1000):
        own = [quota for quota, override in overrides.items() if row[override] is None]
        if calls_stop_sooner and row["spending_cap_fen"] is not None and "api_calls" not in own:
            own.append("api_calls")
        yield row["schema_name"], own
