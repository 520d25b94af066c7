"""Seed the four plans of DESIGN.md. Money is integer fen; NULL limits are unlimited."""

from django.db import migrations

PLANS = [
    {
        "code": "free",
        "name_en": "Free",
        "name_zh": "免费版",
        "price_fen_per_month": 0,
        "api_calls_per_month": 1_000,
        "storage_mb": 100,
        "max_users": 1,
        "max_mcp_services": 1,
        "rate_limit_per_minute": 100,
        "overage_fen_per_1000_calls": None,
        "overage_fen_per_gb_month": None,
        "hard_stop": True,
        "self_serve": True,
        "sort_order": 10,
    },
    {
        "code": "basic",
        "name_en": "Basic",
        "name_zh": "基础版",
        "price_fen_per_month": 9_900,
        "api_calls_per_month": 10_000,
        "storage_mb": 1_000,
        "max_users": 5,
        "max_mcp_services": 5,
        "rate_limit_per_minute": 300,
        "overage_fen_per_1000_calls": 1_500,
        "overage_fen_per_gb_month": 200,
        "hard_stop": False,
        "self_serve": True,
        "sort_order": 20,
    },
    {
        "code": "pro",
        "name_en": "Pro",
        "name_zh": "专业版",
        "price_fen_per_month": 49_900,
        "api_calls_per_month": 100_000,
        "storage_mb": 10_000,
        "max_users": 20,
        "max_mcp_services": 20,
        "rate_limit_per_minute": 1_000,
        "overage_fen_per_1000_calls": 1_000,
        "overage_fen_per_gb_month": 200,
        "hard_stop": False,
        "self_serve": True,
        "sort_order": 30,
    },
    {
        "code": "enterprise",
        "name_en": "Enterprise",
        "name_zh": "企业版",
        "price_fen_per_month": None,
        "api_calls_per_month": None,
        "storage_mb": None,
        "max_users": None,
        "max_mcp_services": None,
        "rate_limit_per_minute": 5_000,
        "overage_fen_per_1000_calls": None,
        "overage_fen_per_gb_month": None,
        "hard_stop": False,
        "self_serve": False,
        "sort_order": 40,
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("plans", "Plan")
    for plan in PLANS:
        Plan.objects.update_or_create(code=plan["code"], defaults=plan)


def unseed(apps, schema_editor):
    apps.get_model("plans", "Plan").objects.filter(code__in=[p["code"] for p in PLANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("plans", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
