"""Faults between a charge and the call's end: every call Redis counts reaches the ledger, or is given back.

Whatever fails (Redis mid-rebuild, the ledger's write, a quota alert, any code of ours between the
charge and the model's answer), the live counters and the ledger must agree afterwards, a
conversation's turn must not stay held, and Redis failures follow the documented fail-open or
fail-closed decision (docs/architecture.md, "When Redis is down").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db.models import Sum
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.core.exceptions import ApplicationError
from apps.tenants.models import Tenant
from apps.usage import limits as L
from apps.usage.meter import Claim, Meter, day_key, month_key
from apps.usage.models import UsageStat
from apps.usage.scripts import Adjustment, add_to_counters
from tests.conftest import TenantFixture
from tests.usage.conftest import counters, flush
from tests.usage.test_metering import events

pytestmark = pytest.mark.django_db


def meter_of(tenant: TenantFixture) -> Meter:
    return Meter(tenant=Tenant.objects.get(pk=tenant.tenant.pk), user_id=None, api_key_id=None)


def agree(tenant: TenantFixture) -> None:
    """After the flush, Redis's month and day counters have the calls PostgreSQL has: no more, no fewer."""
    flush(tenant)
    schema, today = tenant.tenant.schema_name, L.today()
    with schema_context(schema):
        stats = UsageStat.objects.filter(date__gte=L.period_start(today), date__lte=today)
        month = stats.aggregate(calls=Sum("api_calls"))["calls"] or 0
        day = stats.filter(date=today).aggregate(calls=Sum("api_calls"))["calls"] or 0
    assert counters(tenant).get("calls", 0) == month
    of_day = get_redis_connection("default").hgetall(day_key(schema, today))
    assert sum(int(value) for name, value in of_day.items() if name.endswith(b":calls")) == day


def failing(error: BaseException) -> Callable[..., Any]:
    """A stand-in for a function between the charge and the call's end: it raises ``error``."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


# --- Numbers the scripts give Redis -------------------------------------------------------------


class TestIntegerArguments:
    """Lua numbers reach Redis commands formatted as floats: Redis 7.2.0 to 7.2.4 write 100000000 as "1e+08"
    (redis/redis#13113), and every version 10^17 as "1e+17", which HINCRBY, EXPIRE and SET PX refuse. Our
    Redis may be of a version without the first; 10^17 shows the same fault on every version."""

    @pytest.mark.parametrize("n", [10**8, 10**17])
    def test_the_add_script_adds_large_sums(self, tenant_alpha: TenantFixture, n: int) -> None:
        meter = meter_of(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter.record(meter.charge())
        schema, today = tenant_alpha.tenant.schema_name, L.today()
        generation = events(tenant_alpha)[0].counted_in
        add_to_counters([Adjustment(month=month_key(schema, today), day=day_key(schema, today),
                                    who="k", generation=generation, tokens=n, if_same_calls=n)])  # fmt: skip
        assert counters(tenant_alpha) == {"calls": 1 + n, "tokens": n}

    def test_the_charge_script_takes_a_long_claim(self, tenant_alpha: TenantFixture) -> None:
        meter = meter_of(tenant_alpha)
        key = f"{settings.CACHE_KEY_PREFIX}:turn:{meter.schema}:test"
        meter.claim = Claim(key=key, token="t", ttl_ms=10**17, refusal=ApplicationError("busy"))
        try:
            with schema_context(tenant_alpha.tenant.schema_name):
                ticket = meter.charge()
            assert ticket.counted  # not a Redis error taken for Redis down
            assert get_redis_connection("default").pttl(key) > 10**16
        finally:
            get_redis_connection("default").delete(key)
