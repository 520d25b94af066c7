from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.accounts.services import staff_user_create
from apps.tenants.management.commands._common import CLI_ACTOR
from apps.tenants.selectors import tenant_get_by_slug
from apps.tenants.services import tenant_provision

STAFF_EMAIL = "staff@hydronet.localhost"
DEMO_SLUG = "demo"
DEMO_ADMIN_EMAIL = "admin@demo.localhost"


class Command(BaseCommand):
    help = (
        "Development only: make sure a platform staff user and the `demo` tenant exist, and print their "
        "logins. Passwords are generated once and kept in the credentials file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credentials-file", required=True, type=Path)
        parser.add_argument(
            "--demo-mcp-url", default="", help="Register this MCP server in the demo tenant (the offline demo server)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["credentials_file"]
        creds: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}

        staff = creds.get("staff", {})
        user = User.objects.filter(email=STAFF_EMAIL).first()
        if user is None or not staff.get("password"):
            staff = {"email": STAFF_EMAIL, "password": secrets.token_urlsafe(12)}
            if user is None:
                staff_user_create(email=STAFF_EMAIL, password=staff["password"])
            else:
                user.set_password(staff["password"])
                user.save(update_fields=["password"])
            self.stdout.write(f"Created the platform staff login {STAFF_EMAIL}")
        creds["staff"] = staff

        demo = creds.get("demo", {})
        tenant = tenant_get_by_slug(slug=DEMO_SLUG)
        if tenant is None:
            result = tenant_provision(
                name="Demo Water Utility",
                slug=DEMO_SLUG,
                plan="pro",
                admin_email=DEMO_ADMIN_EMAIL,
                actor=CLI_ACTOR,
                on_progress=lambda line: self.stdout.write(f"  {line}"),
            )
            demo = {"email": DEMO_ADMIN_EMAIL, "password": result.generated_password or ""}
            self.stdout.write(f"Provisioned the demo tenant at {result.tenant.url}")
        elif not demo.get("password"):
            with schema_context(tenant.schema_name):
                admin = User.objects.get(email=DEMO_ADMIN_EMAIL)
                demo = {"email": DEMO_ADMIN_EMAIL, "password": secrets.token_urlsafe(12)}
                admin.set_password(demo["password"])
                admin.save(update_fields=["password"])
        creds["demo"] = demo
        if options["demo_mcp_url"]:
            self._register_demo_tools(options["demo_mcp_url"])

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(creds, indent=2))
        os.chmod(path, 0o600)
        self.stdout.write(
            f"Logins are kept in {path}; the admin is at {settings.SITE_SCHEME}://{settings.BASE_DOMAIN}/admin/"
        )

    def _register_demo_tools(self, url: str) -> None:
        """The demo tenant gets the demo hydrology MCP server, tested so its tools are loaded."""
        from apps.mcp.models import McpService
        from apps.mcp.services import mcp_service_create, mcp_service_test, mcp_service_update

        tenant = tenant_get_by_slug(slug=DEMO_SLUG)
        assert tenant is not None
        with schema_context(tenant.schema_name):
            service = McpService.objects.filter(slug="hydrology").first()
            if service is None:
                service = mcp_service_create(actor=CLI_ACTOR, name="Hydrology (demo)", url=url, slug="hydrology")
            elif service.url != url:  # the demo server gets a new port on every run
                service = mcp_service_update(actor=CLI_ACTOR, service=service, url=url)
            listing = mcp_service_test(actor=CLI_ACTOR, service=service)
        self.stdout.write(f"Demo MCP service at {url} with {len(listing.tools)} tools")
