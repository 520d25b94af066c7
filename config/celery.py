"""The Celery app. It is tenant-aware through tenant-schemas-celery.

A task published while the connection is in a tenant's schema carries that
schema in its headers, and the worker runs it there. Tasks come in two kinds:

* ``tenant_task`` (the default for ``@app.task`` and ``@shared_task``): runs in
  one tenant's schema. Queued with no tenant, it fails with TenantRequiredError
  instead of running on the public schema.
* ``platform_task``: always runs on the public schema, whatever schema it was
  queued from. A job "for every tenant" is a platform task that iterates over
  the tenants explicitly and queues a tenant task for each one.
"""

from __future__ import annotations

import os
from typing import Any

from tenant_schemas_celery.app import CeleryApp
from tenant_schemas_celery.task import TenantTask

from apps.tenants.db import connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")


def _public_schema() -> str:
    from django_tenants.utils import get_public_schema_name

    return get_public_schema_name()


class TenantRequiredError(RuntimeError):
    """A tenant task was asked to run without a tenant."""


class TenantScopedTask(TenantTask):
    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if connection.schema_name == _public_schema() and not self.name.startswith("celery."):
            raise TenantRequiredError(
                f"Task {self.name} runs inside a tenant's schema but was queued without a tenant. "
                "Queue it from a tenant context, or pass headers={'_schema_name': <schema>}."
            )
        return super().__call__(*args, **kwargs)


class PlatformTask(TenantTask):
    abstract = True

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options["headers"] = {**(options.get("headers") or {}), "_schema_name": _public_schema()}
        return super().apply_async(args, kwargs, **options)


app = CeleryApp("hydronet", task_cls=TenantScopedTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def tenant_task(**options: Any) -> Any:
    """Decorator for a task that runs in the schema of the tenant that queued it."""
    return app.task(base=TenantScopedTask, **options)


def platform_task(**options: Any) -> Any:
    """Decorator for a task that runs on the public schema."""
    return app.task(base=PlatformTask, **options)
