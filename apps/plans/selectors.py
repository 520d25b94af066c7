from __future__ import annotations

from django.db.models import QuerySet

from apps.plans.models import Plan


def plan_list_public() -> QuerySet[Plan]:
    """Active plans in display order, as the pricing table shows them."""
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def plan_get_for_signup(*, code: str) -> Plan | None:
    """The plan an organisation may pick at sign-up, or None."""
    return Plan.objects.filter(code=code, is_active=True, self_serve=True).first()
