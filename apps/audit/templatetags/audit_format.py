"""The audit log as a tenant admin reads it: what each action is called, and its details as values.

The stored event keeps its stable code (``user.role_changed``) and raw details (``{"to_fen": None}``),
which the API and the export return as they are; only the page words them.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Any

from django import template
from django.apps import apps as django_apps
from django.conf import settings
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

from apps.accounts.models import Role

register = template.Library()

ACTIONS = {
    "api_key.created": _("API key created"),
    "api_key.revoked": _("API key revoked"),
    "assistant.instructions_set": _("Assistant instructions changed"),
    "auth.lockout": _("Locked out after failed logins"),
    "auth.login": _("Logged in"),
    "auth.login_failed": _("Login failed"),
    "auth.logout": _("Logged out"),
    "billing.spending_cap_set": _("Spending cap changed"),
    "conversation.deleted": _("Conversation deleted"),
    "mcp_service.created": _("MCP service added"),
    "mcp_service.deleted": _("MCP service deleted"),
    "mcp_service.disabled": _("MCP service disabled"),
    "mcp_service.enabled": _("MCP service enabled"),
    "mcp_service.tested": _("MCP service tested"),
    "mcp_service.updated": _("MCP service changed"),
    "model_provider.deleted": _("Model server removed"),
    "model_provider.saved": _("Model server saved"),
    "plan.updated": _("Plan changed"),
    "tenant.provisioned": _("Workspace created"),
    "tenant.reactivated": _("Workspace reactivated"),
    "tenant.suspended": _("Workspace suspended"),
    "tenant.updated": _("Workspace changed"),
    "usage.member_daily_calls_set": _("Members' daily AI calls limit changed"),
    "user.created": _("Member added"),
    "user.deactivated": _("Member deactivated"),
    "user.deleted": _("Member deleted"),
    "user.invitation_accepted": _("Invitation accepted"),
    "user.invitation_revoked": _("Invitation revoked"),
    "user.invited": _("Member invited"),
    "user.password_changed": _("Password changed"),
    "user.password_reset": _("Password reset"),
    "user.password_reset_requested": _("Password reset requested"),
    "user.profile_updated": _("Profile changed"),
    "user.reactivated": _("Member reactivated"),
    "user.role_changed": _("Role changed"),
}
# Details stored as [before, after].
CHANGES = ("role", "full_name", "language")
FEN_SUFFIX = "_fen"
# The details' names as the page shows them; a name not here shows as stored.
KEYS = {
    "admin_email": _("admin email"),
    "base_url": _("base URL"),
    "changes": _("changes"),
    "channel": _("through"),
    "chars": _("characters"),
    "credential": _("credential"),
    "email": _("email"),
    "fields": _("fields"),
    "full_name": _("full name"),
    "invitation": _("invitation"),
    "key_changed": _("key changed"),
    "language": _("language"),
    "message": _("message"),
    "messages": _("messages"),
    "models": _("models"),
    "name": _("name"),
    "object": _("object"),
    "plan": _("plan"),
    "previous_status": _("previous status"),
    "reason": _("reason"),
    "role": _("role"),
    "slug": _("subdomain"),
    "status": _("status"),
    "tools": _("tools"),
}
# Stored codes whose words the page shows, by the name they are stored under.
VALUES: dict[str, dict[str, Any]] = {
    "channel": {"web": _("the web pages"), "api": _("the API")},
    "credential": {"api_key": _("API key"), "jwt": _("access token"), "session": _("web session")},
    "language": dict(settings.LANGUAGES),
    "role": dict(Role.choices),
}


@register.filter
def action_label(code: str) -> str:
    """The action in words; an action without a label (platform staff's ``admin.*``) as its code."""
    return str(ACTIONS.get(code, code))


@register.filter
def audit_details(metadata: Any) -> list[tuple[str, str]]:
    """(name, value) pairs: amounts in fen as yuan, nothing as "—", a change as "before → after" (unnamed
    where the action says what changed: ``from``/``to``)."""
    if not isinstance(metadata, dict):
        return [] if metadata in (None, "") else [("", str(metadata))]
    pairs = []
    for key, value in metadata.items():
        words = VALUES.get(key, {})
        if key.endswith(FEN_SUFFIX) and (value is None or isinstance(value, int)):
            pairs.append((key.removesuffix(FEN_SUFFIX), _yuan(value)))
        elif key in CHANGES and isinstance(value, list) and len(value) == 2:
            pairs.append((key, f"{_value(value[0], words)} → {_value(value[1], words)}"))
        else:
            pairs.append((key, _value(value, words)))
    named = dict(pairs)
    if "from" in named and "to" in named:  # a setting changed (stored as JSON, whose keys have no order)
        pairs = [("", f"{named['from']} → {named['to']}")] + [p for p in pairs if p[0] not in ("from", "to")]
    return [(str(KEYS.get(key, key)), value) for key, value in pairs]


@register.filter
def audit_target(event: Any) -> str:
    """What the event is about, as its kind in words (the model's name: "member #3"), or nothing."""
    if not event.target_type:
        return ""
    return f"{_kinds().get(event.target_type, event.target_type)} #{event.target_id}"


@cache
def _kinds() -> dict[str | None, Any]:
    """Each model's name in words, by the name events store (lazy: in the page's language when shown)."""
    return {model._meta.model_name: model._meta.verbose_name for model in django_apps.get_models()}


def _yuan(fen: int | None) -> str:
    if fen is None:
        return "—"
    return "¥" + number_format(Decimal(fen) / 100, 2, force_grouping=True)


def _value(value: Any, words: dict[str, Any] | None = None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if isinstance(value, list):
        return ", ".join(_value(item, words) for item in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{KEYS.get(key, key)}: {_value(item, VALUES.get(key))}" for key, item in value.items()) or "—"
    if words and isinstance(value, str) and value in words:
        return str(words[value])
    return str(value)
