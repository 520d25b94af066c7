from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser, no_translations

from apps.core.exceptions import ApplicationError
from apps.tenants.management.commands._common import CLI_ACTOR, command_error, tenant_from_option
from apps.tenants.services import tenant_suspend


class Command(BaseCommand):
    help = "Suspend a tenant: its hosts answer 403 tenant_suspended until it is reactivated. Data is kept."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")
        parser.add_argument("--reason", default="", help="Why, for the audit trail.")

    @no_translations  # one language on the command line: English, as its progress lines, help and docs
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_from_option(options["tenant"])
        try:
            tenant = tenant_suspend(tenant=tenant, actor=CLI_ACTOR, reason=options["reason"])
        except ApplicationError as exc:
            raise command_error(exc) from exc
        self.stdout.write(self.style.SUCCESS(f"Tenant {tenant.slug} is suspended."))
