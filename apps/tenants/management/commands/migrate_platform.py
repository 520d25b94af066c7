from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser, no_translations

from apps.tenants.schemas import base_schema_ensure, migrate_schemas
from apps.tenants.selectors import tenant_list
from apps.tenants.services import platform_ensure_public_tenant


class Command(BaseCommand):
    help = (
        "Bring the whole database up to date: the public schema, the platform's own tenant row, "
        "the base schema new tenants are cloned from, then every tenant schema that is behind."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--parallel",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="Processes that migrate tenant schemas side by side.",
        )

    @no_translations  # one language on the command line: English, as its progress lines, help and docs
    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])

        def progress(line: str) -> None:
            self.stdout.write(f"  {line}")

        self.stdout.write("Migrating the public schema")
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=max(0, verbosity - 1))
        tenant = platform_ensure_public_tenant()
        self.stdout.write(f"Platform host: {settings.BASE_DOMAIN} ({tenant.name})")
        self.stdout.write("Checking the base schema")
        base_schema_ensure(verbosity=max(0, verbosity - 1), progress=progress)
        schemas = list(tenant_list().values_list("schema_name", flat=True))
        self.stdout.write(f"Checking {len(schemas)} tenant schema(s)")
        migrated = migrate_schemas(
            schemas, parallel=options["parallel"], verbosity=max(0, verbosity - 1), progress=progress
        )
        self.stdout.write(self.style.SUCCESS(f"Up to date ({len(migrated)} tenant schema(s) migrated)."))
