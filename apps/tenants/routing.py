"""Host name -> tenant, cached in Redis and dropped whenever a tenant, domain or plan changes.

Cached tenants carry their plan, so a request is routed with no SQL at all;
the schema switch is the only statement django-tenants adds. Each process also
keeps the routes it read while Redis tells it of every change to them
(apps.tenants.route_memory), so a request is usually routed with no round trip
to Redis either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save, pre_delete

from apps.plans.models import Plan
from apps.tenants.models import Domain, Tenant
from apps.tenants.route_memory import memory

_NO_TENANT = "none"  # cached answer for a host that routes nowhere
_NO_TENANT_SECONDS = 30


def _cache() -> Any:
    return caches["platform"]


def _key(hostname: str) -> str:
    return f"tenant-host:{hostname}"


def tenant_for_hostname(hostname: str) -> Tenant | None:
    """The tenant that serves ``hostname`` (no port), or None."""
    key = _key(hostname)
    cached = _cached(key)
    if cached == _NO_TENANT:
        return None
    if cached is not None:
        return cached
    domain = Domain.objects.select_related("tenant", "tenant__plan").filter(domain=hostname).first()
    if domain is None:
        _cache().set(key, _NO_TENANT, _NO_TENANT_SECONDS)
        return None
    _cache().set(key, domain.tenant, settings.TENANT_ROUTING_CACHE_SECONDS)
    return domain.tenant


def _cached(key: str) -> Any:
    """The cached answer for ``key``: from this process's memory, else from Redis; None if neither has one.

    While Redis is unreachable this is None, and the database answers (fail open).
    """
    client = _cache().client  # django-redis's DefaultClient
    full_key = client.make_key(key)
    try:
        connection = client.get_client(write=False)
        raw, epoch = memory.recall(connection, client.make_key(_key("")), full_key)
        if raw is None:
            raw = connection.get(full_key)
            if raw is None:
                return None
            memory.keep(full_key, raw, epoch)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return None
    return client.decode(raw)


def _drop(keys: list[str]) -> None:
    _cache().delete_many(keys)
    memory.forget([_cache().client.make_key(key) for key in keys])  # other processes hear it from Redis


def _drop_all() -> None:
    _cache().delete_pattern(_key("*"))
    memory.forget_all()


def forget_hostnames(hostnames: Iterable[str]) -> None:
    """Drop cached routes now, and again after commit in case a reader raced the write."""
    keys = [_key(h) for h in set(hostnames) if h]
    if not keys:
        return
    _drop(keys)
    transaction.on_commit(lambda: _drop(keys))


def forget_all_routes() -> None:
    """Drop every cached route, e.g. after a plan change that cached tenants carry."""
    _drop_all()
    transaction.on_commit(_drop_all)


def _remember_domain(sender: type[Domain], instance: Domain, **kwargs: Any) -> None:
    instance._routing_original_domain = instance.domain


def _domain_changed(sender: type[Domain], instance: Domain, **kwargs: Any) -> None:
    forget_hostnames([instance.domain, getattr(instance, "_routing_original_domain", "")])
    instance._routing_original_domain = instance.domain


def _tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    forget_hostnames(Domain.objects.filter(tenant_id=instance.pk).values_list("domain", flat=True))


def _plan_changed(sender: type[Plan], instance: Plan, **kwargs: Any) -> None:
    forget_all_routes()


def connect_invalidation_signals() -> None:
    post_init.connect(_remember_domain, sender=Domain, dispatch_uid="routing_remember_domain")
    post_save.connect(_domain_changed, sender=Domain, dispatch_uid="routing_domain_saved")
    post_delete.connect(_domain_changed, sender=Domain, dispatch_uid="routing_domain_deleted")
    post_save.connect(_tenant_changed, sender=Tenant, dispatch_uid="routing_tenant_saved")
    pre_delete.connect(_tenant_changed, sender=Tenant, dispatch_uid="routing_tenant_deleted")
    post_save.connect(_plan_changed, sender=Plan, dispatch_uid="routing_plan_saved")
    post_delete.connect(_plan_changed, sender=Plan, dispatch_uid="routing_plan_deleted")
