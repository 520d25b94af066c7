from __future__ import annotations

from typing import Any

from apps.tenants.selectors import tenant_list_serving
from config.celery import platform_task


def queue_for_each_tenant(task: Any, *args: Any, **kwargs: Any) -> int:
    """Queue ``task`` once in every serving tenant's schema; return how many were queued.

    This is how a job runs "for every tenant": by naming each tenant, never by
    relying on whatever schema the worker's connection happens to be in.
    """
    schemas = list(tenant_list_serving().values_list("schema_name", flat=True))
    for schema_name in schemas:
        task.apply_async(args=args, kwargs=kwargs, headers={"_schema_name": schema_name})
    return len(schemas)


@platform_task()
def run_for_each_tenant(task_name: str) -> int:
    """Platform task: queue the registered tenant task ``task_name`` for every serving tenant."""
    from config.celery import app

    return queue_for_each_tenant(app.tasks[task_name])
