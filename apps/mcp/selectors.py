from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.core.actors import Actor
from apps.mcp.models import McpService


def mcp_service_list() -> QuerySet[McpService]:
    return McpService.objects.all().order_by("name", "id")


def mcp_service_count_active() -> int:
    """What the plan's MCP-service limit counts."""
    return McpService.objects.filter(is_active=True).count()


def access_mcp_service(actor: Actor, service_id: object) -> McpService:
    """A service by id, for those who may use or manage services; otherwise the same 404."""
    try:
        pk = int(str(service_id))
    except ValueError:
        raise Http404 from None
    role = actor_role(actor)
    allowed = role is not None and (role_has(role, Perm.MANAGE_SERVICES) or role_has(role, Perm.USE_MCP_SERVICES))
    service = McpService.objects.filter(pk=pk).first() if allowed else None
    if service is None:
        raise Http404
    return service
