from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser, no_translations

from apps.core.exceptions import ApplicationError
from apps.tenants.management.commands._common import CLI_ACTOR, command_error
from apps.tenants.services import tenant_provision


class Command(BaseCommand):
    help = "Create a tenant: its schema (cloned from the base schema), its domain and its first admin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="The organisation's display name.")
        parser.add_argument("--slug", required=True, help="Subdomain and schema name: a DNS label.")
        parser.add_argument("--plan", default="free", help="Plan code: free, basic, pro or enterprise.")
        parser.add_argument("--admin-email", required=True, help="Email of the tenant's first admin.")
        parser.add_argument(
            "--admin-password-stdin",
            action="store_true",
            help="Read the admin's password from standard input; otherwise one is generated and printed.",
        )

    @no_translations  # one language on the command line: English, as its progress lines, help and docs
    def handle(self, *args: Any, **options: Any) -> None:
        password = sys.stdin.readline().rstrip("\n") if options["admin_password_stdin"] else None
        try:
            result = tenant_provision(
                name=options["name"],
                slug=options["slug"],
                plan=options["plan"],
                admin_email=options["admin_email"],
                admin_password=password,
                actor=CLI_ACTOR,
                on_progress=lambda line: self.stdout.write(f"  {line}"),
            )
        except ApplicationError as exc:
            raise command_error(exc) from exc
        tenant = result.tenant
        self.stdout.write(self.style.SUCCESS(f"Tenant {tenant.slug} is ready: {tenant.url}"))
        self.stdout.write(f"  admin login: {result.admin.email}")
        if result.generated_password:
            self.stdout.write(f"  admin password (shown once): {result.generated_password}")
