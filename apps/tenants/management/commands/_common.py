from __future__ import annotations

from django.core.management.base import CommandError

from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_get_by_slug

CLI_ACTOR = Actor(label="cli")


def command_error(exc: ApplicationError) -> CommandError:
    lines = [exc.message]
    for field, messages in exc.details.items():
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append(f"  {field}: {message}")
    return CommandError("\n".join(lines))


def tenant_from_option(slug: str) -> Tenant:
    tenant = tenant_get_by_slug(slug=slug)
    if tenant is None:
        raise CommandError(f"No tenant with the slug {slug!r}. `manage.py list_tenants` lists them.")
    return tenant
