from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from apps.core.actors import request_actor
from apps.plans.models import Plan
from apps.plans.services import PLAN_EDITABLE_FIELDS, plan_update
from apps.tenants.admin_audit import PlatformAuditedAdmin


@admin.register(Plan)
class PlanAdmin(PlatformAuditedAdmin):
    list_display = (
        "code",
        "name_en",
        "name_zh",
        "price",
        "api_calls_per_month",
        "storage_mb",
        "max_users",
        "max_mcp_services",
        "rate_limit_per_minute",
        "hard_stop",
        "self_serve",
        "is_active",
    )
    list_editable = ("is_active",)
    ordering = ("sort_order", "id")
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: Plan, form: Any, change: bool) -> None:
        if not change:  # a new plan has no tenants yet
            super().save_model(request, obj, form, change)
            return
        # Through the service, as a tenant's change goes through tenant_update: a lower limit applies to every tenant
        # on the plan at once, and those now past a threshold are told. The list's forms carry "active" only.
        values = {field: form.cleaned_data[field] for field in form.fields if field in PLAN_EDITABLE_FIELDS}
        plan_update(plan=obj, actor=request_actor(request, label="admin"), values=values)

    @admin.display(description=_("price per month (¥)"), ordering="price_fen_per_month")
    def price(self, plan: Plan) -> str:
        # In yuan to the fen, as every page shows money (the form still edits it in fen).
        return "—" if plan.price_yuan is None else f"¥{plan.price_yuan}"
