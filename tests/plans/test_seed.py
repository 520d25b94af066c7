import pytest

from apps.plans.models import Plan

pytestmark = pytest.mark.django_db

# DESIGN.md's plans table. Money is fen; None is unlimited (or "by contract").
FIELDS = (
    "price_fen_per_month",
    "api_calls_per_month",
    "storage_mb",
    "max_users",
    "max_mcp_services",
    "rate_limit_per_minute",
    "overage_fen_per_1000_calls",
    "overage_fen_per_gb_month",
    "hard_stop",
    "self_serve",
)
EXPECTED = {
    "free":       (0,      1_000,   100,    1,    1,    100,   None,  None, True,  True),
    "basic":      (9_900,  10_000,  1_000,  5,    5,    300,   1_500, 200,  False, True),
    "pro":        (49_900, 100_000, 10_000, 20,   20,   1_000, 1_000, 200,  False, True),
    "enterprise": (None,   None,    None,   None, None, 5_000, None,  None, False, False),
}  # fmt: skip


def test_exactly_the_four_design_plans_are_seeded() -> None:
    plans = {p.code: p for p in Plan.objects.all()}
    assert list(plans) == ["free", "basic", "pro", "enterprise"]
    for code, values in EXPECTED.items():
        actual = {field: getattr(plans[code], field) for field in FIELDS}
        assert actual == dict(zip(FIELDS, values, strict=True)), code


def test_prices_display_in_yuan() -> None:
    """Always to the fen: "¥99" next to "¥10.50" did not line up in a list of amounts."""
    assert Plan.objects.get(code="basic").price_yuan == "99.00"
    assert Plan.objects.get(code="free").price_yuan == "0.00"
    assert Plan.objects.get(code="basic").overage_yuan_per_1000_calls == "15.00"
    assert Plan.objects.get(code="enterprise").price_yuan is None
