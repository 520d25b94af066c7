"""Rules for the slug that becomes a tenant's subdomain and schema name."""

from __future__ import annotations

import re

from django.utils.translation import gettext as _

from apps.core.exceptions import InvalidInput

SLUG_MIN_LENGTH = 3
SLUG_MAX_LENGTH = 40
# A DNS label: lower-case letters, digits and hyphens, starting and ending with
# a letter or digit.
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")

#: Names that would look like the platform's own hosts or mislead people.
RESERVED_SLUGS = frozenset(
    {
        "www", "admin", "administrator", "api", "app", "apps", "public", "static", "media", "assets",
        "cdn", "mail", "email", "smtp", "imap", "pop", "pop3", "mx", "ftp", "sftp", "ns", "ns1", "ns2",
        "dns", "docs", "doc", "help", "support", "status", "blog", "billing", "pay", "payment",
        "payments", "invoice", "invoices", "auth", "oauth", "sso", "login", "logout", "signin",
        "signup", "register", "account", "accounts", "root", "system", "sys", "staff", "platform",
        "dashboard", "console", "portal", "internal", "intranet", "dev", "staging", "test", "testing",
        "localhost", "hydronet", "tenant", "tenants", "base", "template", "security", "webhook",
        "webhooks", "metrics", "health", "healthz", "readyz", "v1", "v2", "graphql", "ws", "wss",
        "proxy", "vpn", "git", "ssh", "postgres", "redis", "celery", "null", "undefined",
    }
)  # fmt: skip


def normalize_slug(slug: str) -> str:
    return (slug or "").strip().lower()


def validate_slug(slug: str, *, field: str = "slug") -> str:
    """Return the normalized slug, or raise InvalidInput saying what is wrong with it."""
    slug = normalize_slug(slug)
    if not slug:
        raise InvalidInput(_("Choose a workspace address."), details={field: [_("This field is required.")]})
    if not (SLUG_MIN_LENGTH <= len(slug) <= SLUG_MAX_LENGTH):
        message = _("The address must be %(min)d to %(max)d characters long.") % {
            "min": SLUG_MIN_LENGTH,
            "max": SLUG_MAX_LENGTH,
        }
        raise InvalidInput(message, details={field: [message]})
    if not _SLUG_RE.match(slug) or "--" in slug:
        message = _("Use lower-case letters, digits and single hyphens, starting and ending with a letter or digit.")
        raise InvalidInput(message, details={field: [message]})
    if slug in RESERVED_SLUGS:
        message = _("“%(slug)s” is reserved. Choose another address.") % {"slug": slug}
        raise InvalidInput(message, details={field: [message]})
    return slug


def schema_name_for_slug(slug: str) -> str:
    """Schema names get a prefix so no slug can name a PostgreSQL system schema."""
    return "t_" + slug.replace("-", "_")
