from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_tenants.utils import get_public_schema_name


def site(request: HttpRequest) -> dict[str, Any]:
    """What every template needs to know about where it is served."""
    tenant = getattr(request, "tenant", None)
    on_tenant = tenant is not None and tenant.schema_name != get_public_schema_name()
    return {
        "current_tenant": tenant if on_tenant else None,
        "platform_url": f"{settings.SITE_SCHEME}://{settings.BASE_DOMAIN}/",
    }
