"""Every change staff make in the Django admin also lands in the platform audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from apps.core.actors import request_actor
from apps.tenants.services import platform_audit_record


class PlatformAuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose adds, changes and deletions write a PlatformAuditEvent.

    Django's admin already calls these hooks for every save and delete it makes
    (LogEntry); the platform trail adds the IP address and user agent, and it
    is append-only.
    """

    def _record(self, request: HttpRequest, obj: models.Model, verb: str, message: Any) -> None:
        platform_audit_record(
            actor=request_actor(request, label="admin"),
            action=f"admin.{obj._meta.model_name}.{verb}",
            target_type=obj._meta.label_lower,
            target_id=obj.pk if obj.pk is not None else "",
            metadata={"object": str(obj)[:200], "message": str(message)[:2000]},
        )

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._record(request, obj, "added", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._record(request, obj, "changed", message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            self._record(request, obj, "deleted", "")
        return super().log_deletions(request, queryset)
