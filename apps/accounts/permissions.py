"""The permission map: which role may do what. DESIGN.md's table, in one place.

Everything that checks a permission reads it from here: the API's permission
class (apps.api.permissions), the web pages' decorator
(apps.accounts.decorators.permission_required), the templates' ``can`` context
and the role-matrix test.
"""

from __future__ import annotations

from enum import StrEnum

from apps.accounts.models import Role


class Perm(StrEnum):
    CREATE_CONVERSATION = "create_conversation"
    VIEW_OWN_CONVERSATIONS = "view_own_conversations"
    USE_MCP_SERVICES = "use_mcp_services"
    MANAGE_USERS = "manage_users"
    MANAGE_SERVICES = "manage_services"
    VIEW_STATS = "view_stats"
    ALL_CONVERSATIONS = "all_conversations"
    MANAGE_BILLING = "manage_billing"
    MANAGE_API_KEYS = "manage_api_keys"
    VIEW_AUDIT = "view_audit"


_VIEWER = frozenset({Perm.VIEW_OWN_CONVERSATIONS})
_USER = frozenset({Perm.CREATE_CONVERSATION, Perm.VIEW_OWN_CONVERSATIONS, Perm.USE_MCP_SERVICES})
_ADMIN = _USER | {
    Perm.MANAGE_USERS,
    Perm.MANAGE_SERVICES,
    Perm.VIEW_STATS,
    Perm.ALL_CONVERSATIONS,
    Perm.MANAGE_BILLING,
    Perm.MANAGE_API_KEYS,
    Perm.VIEW_AUDIT,
}

ROLE_PERMISSIONS: dict[str, frozenset[Perm]] = {
    Role.ADMIN: _ADMIN,
    Role.USER: _USER,
    Role.VIEWER: _VIEWER,
}

#: Roles from most to least powerful; a role may hand out only roles at or below it.
ROLE_ORDER: tuple[str, ...] = (Role.ADMIN, Role.USER, Role.VIEWER)


def role_has(role: str, perm: Perm | str) -> bool:
    return perm in ROLE_PERMISSIONS.get(role, frozenset())


def role_at_or_below(role: str, ceiling: str) -> bool:
    """True if ``role`` grants nothing that ``ceiling`` lacks."""
    return ROLE_ORDER.index(role) >= ROLE_ORDER.index(ceiling)
