from __future__ import annotations

from typing import Any

from django.db import models

from apps.audit.models import AuditEvent
from apps.core.actors import Actor


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the current tenant's audit trail, in the caller's transaction.

    ``target`` fills ``target_type`` (its model name) and ``target_id``.
    """
    if target is not None:
        target_type, target_id = target._meta.model_name or "", target.pk
    return AuditEvent.objects.create(
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.display,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        ip=actor.ip,
        user_agent=actor.user_agent[:512],
        metadata=metadata or {},
    )
