"""Writes to plans: staff edit a plan's prices and limits, which every tenant on it carries."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from apps.core.actors import Actor
from apps.core.exceptions import InvalidInput
from apps.plans.models import Plan
from apps.plans.selectors import PLAN_QUOTA_FIELDS
from apps.tenants.services import platform_audit_record

# The fields staff edit; the rest (id, timestamps) are the database's.
PLAN_EDITABLE_FIELDS = tuple(f.name for f in Plan._meta.concrete_fields if f.editable and not f.primary_key)


@transaction.atomic
def plan_update(*, plan: Plan, actor: Actor, values: dict[str, Any]) -> Plan:
    """Change a plan's fields (``values``, by field name), as staff do in the admin, for every tenant on it.

    Records ``plan.updated`` with the old and new values. Each web process drops its cached routes, which
    carry the plan, at once (``apps.tenants.routing``'s signal). Where a quota fell, or the overage price rose
    (which lowers where a spending cap stops calls), the tenants now past a threshold are alerted as
    ``tenant_update`` alerts one: after commit, one platform task queues the catch-up for each affected tenant
    (``apps.plans.tasks.alerts_after_plan_lowered``), so the request does no work per tenant.
    """
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    before = {field: getattr(plan, field) for field in PLAN_EDITABLE_FIELDS}
    for field, value in values.items():
        if field not in PLAN_EDITABLE_FIELDS:
            raise InvalidInput(_("The input is not valid."), details={field: [_("This field is not accepted here.")]})
        setattr(plan, field, value)
    try:
        plan.full_clean()
    except ValidationError as exc:
        raise InvalidInput(_("The input is not valid."), details=exc.message_dict) from exc
    changes = {field: [before[field], getattr(plan, field)] for field in PLAN_EDITABLE_FIELDS
               if getattr(plan, field) != before[field]}  # fmt: skip
    if not changes:
        return plan
    plan.save(update_fields=[*changes, "updated_at"])
    platform_audit_record(
        actor=actor,
        action="plan.updated",
        target_type="plan",
        target_id=plan.pk,
        metadata={"code": plan.code, "changes": changes},
    )
    lowered = plan_quotas_lowered(before, plan)
    calls_stop_sooner = _cap_stops_sooner(before, plan)
    restate = _stops_at_quota_now(before, plan)
    if lowered or calls_stop_sooner or restate:
        from apps.plans.tasks import alerts_after_plan_lowered

        plan_id = plan.pk
        transaction.on_commit(
            lambda: alerts_after_plan_lowered.apply_async(args=[plan_id, lowered, calls_stop_sooner, restate]),
            robust=True,  # the plan is changed either way; a broker outage loses only the alerts, and logs it
        )
    return plan


def plan_quotas_lowered(before: dict[str, Any], plan: Plan) -> list[str]:
    """The quotas whose limit on ``plan`` is lower than in ``before`` (a field -> value map; unlimited is highest)."""
    lowered = []
    for quota, (field, _override) in PLAN_QUOTA_FIELDS.items():
        old, new = before[field], getattr(plan, field)
        if new is not None and (old is None or new < old):
            lowered.append(quota)
    return lowered


def _stops_at_quota_now(before: dict[str, Any], plan: Plan) -> list[str]:
    """The quotas at which work now stops where it went on before: API calls on a plan that no longer bills
    overage (no price, or stopping hard), storage on one that now stops hard. Their 100 % alerts said it went on."""

    def bills(hard_stop: bool, price: int | None) -> bool:
        return not hard_stop and bool(price)

    restate = []
    if bills(before["hard_stop"], before["overage_fen_per_1000_calls"]) and not bills(
        plan.hard_stop, plan.overage_fen_per_1000_calls
    ):
        restate.append("api_calls")
    if plan.hard_stop and not before["hard_stop"]:
        restate.append("storage")
    return restate


def _cap_stops_sooner(before: dict[str, Any], plan: Plan) -> bool:
    """A higher overage price spends a tenant's spending cap on fewer calls: calls stop sooner, and a month already
    past the new stop is refused before the charge that would raise the cap's alert."""
    old, new = before["overage_fen_per_1000_calls"], plan.overage_fen_per_1000_calls
    return old is not None and new is not None and new > old
