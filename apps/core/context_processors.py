from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject
from django_tenants.utils import get_public_schema_name


def site(request: HttpRequest) -> dict[str, Any]:
    """What every template needs to know about where it is served."""
    tenant = getattr(request, "tenant", None)
    on_tenant = tenant is not None and tenant.schema_name != get_public_schema_name()
    user = getattr(request, "user", None)
    member = on_tenant and user is not None and user.is_authenticated
    return {
        "current_tenant": tenant if on_tenant else None,
        "platform_url": f"{settings.SITE_SCHEME}://{settings.BASE_DOMAIN}/",
        "can": _permissions(request) if on_tenant else {},
        # Lazy: the one query runs only where base.html renders the banner.
        "quota_alerts": SimpleLazyObject(lambda: _quota_alerts(request)) if member else [],
    }


def _permissions(request: HttpRequest) -> dict[str, bool]:
    """``{% if can.manage_users %}``: what the member's role allows, from the permission map."""
    from apps.accounts.permissions import ROLE_PERMISSIONS

    user = getattr(request, "user", None)
    role = getattr(user, "role", "") if user is not None and user.is_authenticated else ""
    return {str(perm): True for perm in ROLE_PERMISSIONS.get(role, ())}


def _quota_alerts(request: HttpRequest) -> list[dict[str, Any]]:
    """The quota banner: the highest threshold each quota crossed and still stands at, and whether calls stop.

    One query where no quota was crossed (apps.usage.selectors.alerts_standing); the plan comes with the routed
    tenant.
    """
    from apps.plans.models import fen_to_yuan
    from apps.usage import limits as L
    from apps.usage.models import Quota
    from apps.usage.selectors import alerts_standing

    tenant = request.tenant  # type: ignore[attr-defined]  # set by the routing
    standing = alerts_standing(tenant)
    if not standing:
        return []
    limits = L.limits_for(tenant)
    calls_stop = limits.stops_at_quota  # what the meter does at 100 %
    stops = {Quota.API_CALLS.value: calls_stop, Quota.STORAGE.value: limits.storage_stop_at is not None}
    # Past the storage quota a paid plan goes on, and what is stored beyond it is billed by the GB-month.
    storage_billed = (
        limits.storage_stop_at is None and getattr(tenant.plan, "overage_fen_per_gb_month", None) is not None
    )
    banner: list[dict[str, Any]] = []
    for item in standing:
        alert, full = item.alert, item.alert.threshold >= 100
        calls = full and alert.quota == Quota.API_CALLS
        # Past the quota on an overage plan, calls stop again once the month's overage reaches the spending cap.
        capped = calls and not calls_stop and limits.calls_stop_at is not None and item.used >= limits.calls_stop_at
        banner.append(
            {
                "alert": alert,
                "quota": alert.get_quota_display(),
                "stops": full and stops.get(alert.quota, False),
                "capped": capped,
                "cap_yuan": fen_to_yuan(limits.spending_cap_fen),
                "overage": calls and not calls_stop,
                "storage_overage": full and alert.quota == Quota.STORAGE and storage_billed,
                # Members and MCP services are refused past the limit on every plan; neither resets with the month.
                "full": full and alert.quota in (Quota.USERS, Quota.MCP_SERVICES),
                # A moment, named in the zone the pages use: midnight UTC is 08:00 on the 1st in China, where a bare
                # "2027-01-01" read as its start and calls stayed stopped for eight hours of it.
                "resets_on": L.resets_at(alert.period),
            }
        )
    # The most pressing first: the banner shows it, and the others folded under it, so that several quotas crossed
    # at once do not push a page's own content (the chat's input) out of a laptop's window. Members or MCP services
    # at their limit stop nothing (a free workspace is at its 1 of 1 from the start): after the quotas that do.
    banner.sort(key=lambda item: (not (item["stops"] or item["capped"]), item["full"],
                                  not item["alert"].threshold >= 100, -item["alert"].threshold))  # fmt: skip
    return banner
