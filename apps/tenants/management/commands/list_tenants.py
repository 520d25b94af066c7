from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser, no_translations
from django.utils import timezone

from apps.tenants.models import TenantStatus
from apps.tenants.selectors import tenant_list


class Command(BaseCommand):
    help = "List tenants with their plan, status and URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", choices=TenantStatus.values, help="Only tenants with this status.")
        parser.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")

    @no_translations  # one language on the command line: English, as its progress lines, help and docs
    def handle(self, *args: Any, **options: Any) -> None:
        tenants = tenant_list().order_by("created_at")
        if options["status"]:
            tenants = tenants.filter(status=options["status"])
        rows = [
            {
                "slug": t.slug,
                "name": t.name,
                "plan": t.plan.code if t.plan else "",
                "status": t.status,
                "schema": t.schema_name,
                "url": t.url,
                "created_at": timezone.localtime(t.created_at).isoformat(timespec="seconds"),
            }
            for t in tenants
        ]
        if options["json"]:
            for row in rows:
                self.stdout.write(json.dumps(row, ensure_ascii=False))
            return
        columns = ("slug", "name", "plan", "status", "url", "created_at")
        widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
        self.stdout.write("  ".join(c.upper().ljust(widths[c]) for c in columns))
        for row in rows:
            self.stdout.write("  ".join(row[c].ljust(widths[c]) for c in columns))
        self.stdout.write(f"{len(rows)} tenant(s)")
