from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from apps.plans.models import Plan
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

    @admin.display(description=_("price per month (¥)"), ordering="price_fen_per_month")
    def price(self, plan: Plan) -> str:
        # In yuan to the fen, as every page shows money (the form still edits it in fen).
        return "—" if plan.price_yuan is None else f"¥{plan.price_yuan}"
