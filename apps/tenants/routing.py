"""Host name -> tenant, cached in Redis and dropped whenever a tenant, domain or plan changes.

Cached tenants carry their plan, so a request is routed with no SQL at all;
the schema switch is the only statement django-tenants adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save, pre_delete

from apps.plans.models import Plan
from apps.tenants.models import Domain, Tenant

_NO_TENANT = "none"  # cached answer for a host that routes nowhere
_NO_TENANT_SECONDS = 30


def _cache() -> Any:
    return caches["platform"]


def _key(hostname: str) -> str:
    return f"tenant-host:{hostname}"


def tenant_for_hostname(hostname: str) -> Tenant | None:
    """The tenant that serves ``hostname`` (no port), or None."""
    key = _key(hostname)
    cached = _cache().get(key)
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


def forget_hostnames(hostnames: Iterable[str]) -> None:
    """Drop cached routes now, and again after commit in case a reader raced the write."""
    keys = [_key(h) for h in set(hostnames) if h]
    if not keys:
        return
    _cache().delete_many(keys)
    transaction.on_commit(lambda: _cache().delete_many(keys))


def forget_all_routes() -> None:
    """Drop every cached route, e.g. after a plan change that cached tenants carry."""
    _cache().delete_pattern(_key("*"))
    transaction.on_commit(lambda: _cache().delete_pattern(_key("*")))


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
