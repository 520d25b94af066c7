from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, no_translations
from django.db import transaction
from django_tenants.utils import schema_context

from apps.core.crypto import SecretUnreadable, reencrypt
from apps.llm.models import ModelProvider
from apps.mcp.models import McpService
from apps.tenants.selectors import tenant_list

# The tenant tables' encrypted columns: (model, column, what a row is called in the output).
ENCRYPTED = ((ModelProvider, "api_key_encrypted", "model server key"), (McpService, "secret_headers", "MCP service"))


class Command(BaseCommand):
    help = (
        "Encrypt every tenant's stored secrets (model server keys, MCP auth headers) anew under the first key of "
        "FIELD_ENCRYPTION_KEYS, so that the keys after it can be removed. Run it after putting a new key first."
    )

    @no_translations  # one language on the command line: English, as its progress lines, help and docs
    def handle(self, *args: Any, **options: Any) -> None:
        done, unreadable = 0, []
        for tenant in tenant_list().order_by("created_at"):
            with schema_context(tenant.schema_name), transaction.atomic():
                for model, column, called in ENCRYPTED:
                    rows = model.objects.exclude(**{column: ""}).select_for_update().values_list("pk", column)
                    for pk, token in rows:
                        try:
                            model.objects.filter(pk=pk).update(**{column: reencrypt(token)})
                        except SecretUnreadable:
                            unreadable.append(f"{tenant.slug}: {called} {pk}")
                            continue
                        done += 1
        self.stdout.write(f"{done} stored secrets encrypted under the first key.")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} stored secrets could not be read with any key, and were left as they are (keep "
                "the old keys until they are given anew):\n  " + "\n  ".join(unreadable)
            )
        self.stdout.write(self.style.SUCCESS("Every stored secret is readable with the first key alone."))
