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
        "can": _permissions(request) if on_tenant else {},
    }


def _permissions(request: HttpRequest) -> dict[str, bool]:
    """``{% if can.manage_users %}``: what the member's role allows, from the permission map."""
    from apps.accounts.permissions import ROLE_PERMISSIONS

    user = getattr(request, "user", None)
    role = getattr(user, "role", "") if user is not None and user.is_authenticated else ""
    return {str(perm): True for perm in ROLE_PERMISSIONS.get(role, ())}
