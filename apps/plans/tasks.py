from __future__ import annotations

from apps.plans.selectors import plan_tenants_affected
from config.celery import platform_task


@platform_task()
def alerts_after_plan_lowered(
    plan_id: int, quotas: list[str], calls_stop_sooner: bool = False, restate: list[str] | None = None
) -> int:
    """After staff lowered a plan's limits: queue the catch-up (``usage.tasks.alerts_after_limits_lowered``) in
    each tenant the change affects, for its quotas; with ``restate`` (the quotas at which work now stops, where
    it went on before), in every tenant on the plan. Returns how many were queued."""
    from apps.usage.tasks import alerts_after_limits_lowered

    queued = 0
    for schema_name, affected in plan_tenants_affected(
        plan_id=plan_id, quotas=quotas, calls_stop_sooner=calls_stop_sooner, everyone=bool(restate)
    ):
        alerts_after_limits_lowered.apply_async(
            args=[affected], kwargs={"restate": restate or []}, headers={"_schema_name": schema_name}
        )
        queued += 1
    return queued
