from __future__ import annotations

from django.db.models import QuerySet
from django_tenants.utils import get_public_schema_name

from apps.tenants.models import BLOCKED_STATUSES, Tenant


def tenant_list() -> QuerySet[Tenant]:
    """Every tenant but the platform's own public row."""
    return Tenant.objects.exclude(schema_name=get_public_schema_name()).select_related("plan")


def tenant_list_serving() -> QuerySet[Tenant]:
    """Tenants whose hosts are served: trial and active ones."""
    return tenant_list().exclude(status__in=BLOCKED_STATUSES)


def tenant_get_by_slug(*, slug: str) -> Tenant | None:
    return tenant_list().filter(slug=(slug or "").strip().lower()).first()


def tenant_current() -> Tenant:
    """The tenant whose schema the connection is in (a real row, even under schema_context)."""
    from apps.tenants.db import connection

    tenant = connection.tenant
    if isinstance(tenant, Tenant):
        return tenant
    return Tenant.objects.select_related("plan").get(schema_name=connection.schema_name)


def tenant_current_locked() -> Tenant:
    """The current tenant's row with its plan, locked until the transaction ends.

    Changes that are counted against a plan limit take this lock first, so two
    concurrent requests of one tenant cannot both take the last unit.
    """
    from apps.tenants.db import connection

    return Tenant.objects.select_related("plan").select_for_update(of=("self",)).get(schema_name=connection.schema_name)
