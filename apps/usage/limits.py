"""A tenant's effective limits: its plan's, with staff overrides and the admins' spending cap and member limit.

NULL means unlimited, as in the plans table. Which checks stop work:

* free (``hard_stop``): API calls and storage stop at the quota;
* paid plans: they go on past the quota, and the excess is overage for the
  invoice, until the overage reaches the tenant's spending cap (if set);
* unlimited (enterprise): nothing stops.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass

from django.utils import timezone

from apps.tenants.models import Tenant

MB = 1024 * 1024
THRESHOLDS = (80, 90, 100)


@dataclass(frozen=True)
class Limits:
    api_calls: int | None
    storage_bytes: int | None
    users: int | None
    mcp_services: int | None
    rate_per_minute: int
    hard_stop: bool
    overage_fen_per_1000_calls: int | None
    spending_cap_fen: int | None
    member_daily_calls: int | None = None  # the admins' limit on each member's AI calls a day

    @property
    def calls_stop_at(self) -> int | None:
        """The monthly call count past which calls are refused; None if never."""
        if self.api_calls is None:
            return None
        if not self.bills_overage:
            return self.api_calls
        if self.spending_cap_fen is None:
            return None
        assert self.overage_fen_per_1000_calls  # bills_overage
        return self.api_calls + self.spending_cap_fen * 1000 // self.overage_fen_per_1000_calls

    @property
    def bills_overage(self) -> bool:
        """Calls past the quota are billed as overage (until the spending cap, if any)."""
        return self.api_calls is not None and not self.hard_stop and bool(self.overage_fen_per_1000_calls)

    @property
    def stops_at_quota(self) -> bool:
        """Calls stop at the quota itself: a hard-stop plan, no overage price, or a spending cap of 0."""
        return self.api_calls is not None and self.calls_stop_at == self.api_calls

    @property
    def storage_stop_at(self) -> int | None:
        """Storage in bytes at which writes are refused; only plans that stop hard have one."""
        return self.storage_bytes if self.hard_stop else None

    def overage_calls(self, used: int) -> int:
        return max(0, used - self.api_calls) if self.api_calls is not None else 0

    def overage_fen(self, used: int) -> int:
        """What the month's calls past the quota cost, rounded up to the fen."""
        price = self.overage_fen_per_1000_calls or 0
        return math.ceil(self.overage_calls(used) * price / 1000)


def limits_for(tenant: Tenant) -> Limits:
    plan = tenant.plan
    if plan is None:  # the public row; never serves tenant API requests
        return Limits(None, None, None, None, 0, True, None, None)

    def pick(override: int | None, value: int | None) -> int | None:
        return override if override is not None else value

    storage_mb = pick(tenant.storage_mb_override, plan.storage_mb)
    return Limits(
        api_calls=pick(tenant.api_calls_per_month_override, plan.api_calls_per_month),
        storage_bytes=storage_mb * MB if storage_mb is not None else None,
        users=pick(tenant.max_users_override, plan.max_users),
        mcp_services=pick(tenant.max_mcp_services_override, plan.max_mcp_services),
        rate_per_minute=pick(tenant.rate_limit_per_minute_override, plan.rate_limit_per_minute) or 0,
        hard_stop=plan.hard_stop,
        overage_fen_per_1000_calls=plan.overage_fen_per_1000_calls,
        spending_cap_fen=tenant.spending_cap_fen,
        member_daily_calls=tenant.member_daily_calls,
    )


# --- Periods: calendar months in UTC ---------------------------------------------------


def today(now: dt.datetime | None = None) -> dt.date:
    return (now or timezone.now()).astimezone(dt.UTC).date()


def period_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def period_end(day: dt.date) -> dt.date:
    """The last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def resets_at(day: dt.date) -> dt.datetime:
    """When the month of ``day`` ends and its counts start again: midnight UTC on the 1st."""
    nxt = period_end(day) + dt.timedelta(days=1)
    return dt.datetime(nxt.year, nxt.month, 1, tzinfo=dt.UTC)


def day_resets_at(day: dt.date) -> dt.datetime:
    """When the day's counts start again (a member's daily limit): the next midnight UTC."""
    nxt = day + dt.timedelta(days=1)
    return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    """A reset time as every usage answer writes it: ISO 8601 in UTC with ``Z``, as DRF writes ``/api/quota``'s."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def crossed(limit: int | None, before: int, after: int) -> list[int]:
    """The thresholds (80, 90, 100 %) that going from ``before`` to ``after`` crosses.

    A limit of 0 is reached before any use, so no growth crosses it: its alerts come from the level
    (``reached``), when the limit is set (``apps.usage.services.quota_alerts_catch_up``).
    """
    if not limit:
        return []
    return [t for t in THRESHOLDS if before < math.ceil(limit * t / 100) <= after]


def reached(limit: int | None, used: int) -> list[int]:
    """The thresholds (80, 90, 100 %) that ``used`` is at or past: a measured level, which a lower limit can put
    past thresholds that no growth crossed. A limit of 0 is reached at any use, none included."""
    if limit is None:
        return []
    return [t for t in THRESHOLDS if math.ceil(limit * t / 100) <= used]
