from django.contrib import admin

from apps.plans.models import Plan
from apps.tenants.admin_audit import PlatformAuditedAdmin


@admin.register(Plan)
class PlanAdmin(PlatformAuditedAdmin):
    list_display = (
        "code",
        "name_en",
        "name_zh",
        "price_fen_per_month",
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
