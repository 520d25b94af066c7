"""Usage tests: the demo model server answers the AI calls being metered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django_redis import get_redis_connection

from apps.tenants.models import Tenant
from tests.chat.conftest import _model_server, hydrology, member_client  # noqa: F401  (fixtures and helper)


def set_limits(tenant: Tenant, *, plan: str | None = None, **overrides: Any) -> Tenant:
    """Change a tenant's plan or overrides (in the test's transaction) and return the fresh row."""
    from apps.plans.models import Plan

    if plan is not None:
        tenant.plan = Plan.objects.get(code=plan)
    for name, value in overrides.items():
        setattr(tenant, name, value)
    tenant.save()
    return Tenant.objects.select_related("plan").get(pk=tenant.pk)


def forget_counters() -> None:
    """What a Redis restart or FLUSHALL does to the usage counters."""
    from django.conf import settings

    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"{settings.CACHE_KEY_PREFIX}:usage:*", count=1000):
        redis.delete(key)


@pytest.fixture
def fresh_counters() -> Iterator[None]:
    forget_counters()
    yield
    forget_counters()
