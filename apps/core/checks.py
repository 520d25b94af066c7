"""System checks of the platform's own settings (``manage.py check``; ``--deploy`` for the production ones)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

OUTBOUND_ALLOWLIST_IN_USE = "core.W001"


def check_outbound_allowlist_is_empty(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A warning when ``OUTBOUND_ALLOWED_NETWORKS`` lists any network: it is for development and the tests, and
    in production it lets the URLs tenants supply reach the networks it lists (apps.core.outbound)."""
    networks = [cidr.strip() for cidr in getattr(settings, "OUTBOUND_ALLOWED_NETWORKS", None) or () if cidr.strip()]
    if not networks:
        return []
    return [
        checks.Warning(
            f"OUTBOUND_ALLOWED_NETWORKS is not empty ({', '.join(networks)}): URLs that tenants supply (MCP "
            "servers, their own model server) may reach these networks, past the SSRF guard.",
            hint="Leave OUTBOUND_ALLOWED_NETWORKS empty in production; it is for reaching demo servers on loopback "
            "in development and the tests.",
            id=OUTBOUND_ALLOWLIST_IN_USE,
        )
    ]
