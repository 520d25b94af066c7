"""Real AI calls through /v1, then the admin's usage page: Chart.js draws them, the quota bars show."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import Browser, expect

from apps.accounts.services import api_key_create
from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
from tests.browser.conftest import log_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SLUG = "usage-dash"
ADMIN = "admin@usage-dash.example.com"
CALLS = 3


@pytest.fixture
def api_key(django_db_blocker: object) -> Iterator[str]:
    """A committed pro tenant and one of its API keys."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        tenant = tenant_provision(
            name="Usage Dash Water", slug=SLUG, plan="pro", admin_email=ADMIN, admin_password=ADMIN_PASSWORD,
            actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        with schema_context(tenant.schema_name):
            _key, secret = api_key_create(actor=TEST_ACTOR, name="pipeline", role="user")
    yield str(secret)
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def test_the_admin_sees_real_calls_charted_and_the_quota_bars(
    browser: Browser, web_server: WebServer, api_key: str
) -> None:
    host = f"{SLUG}.localhost:{web_server.port}"
    with httpx2.Client(timeout=30) as client:
        for n in range(CALLS):
            response = client.post(
                f"http://127.0.0.1:{web_server.port}/v1/chat/completions",
                json={"model": "hydronet-demo", "messages": [{"role": "user", "content": f"hello {n}"}]},
                headers={"Host": host, "Authorization": f"Bearer {api_key}"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["total_tokens"] > 0

    page = browser.new_context(locale="en-US").new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.get_by_test_id("nav-usage").click()

    expect(page.get_by_test_id("usage-scope")).to_have_attribute("data-scope", "tenant")
    expect(page.get_by_test_id("total-calls")).to_have_text(str(CALLS))
    for chart in ("chart-calls", "chart-tokens"):
        # Chart.js made a chart on the canvas, gave it a size, and its data has the calls in it.
        page.wait_for_function(
            """(id) => {
                const canvas = document.getElementById(id);
                const chart = window.Chart && window.Chart.getChart(canvas);
                return chart && canvas.width > 0 && canvas.height > 0
                    && chart.data.datasets[0].data.some((value) => value > 0);
            }""",
            arg=chart,
            timeout=10_000,
        )
    total = page.evaluate("window.Chart.getChart('chart-calls').data.datasets[0].data.reduce((a, b) => a + b, 0)")
    assert total == CALLS
    drawn = page.evaluate("window.Chart.getChart('chart-calls').getDatasetMeta(0).data.length")
    assert drawn >= 1

    quotas = page.get_by_test_id("quotas")
    expect(quotas.locator("progress.quota-bar")).to_have_count(4)  # pro: every quota has a limit
    expect(page.get_by_test_id("quota-api_calls")).to_have_attribute("data-level", "ok")
    expect(page.get_by_test_id("quota-api_calls").locator("progress")).to_have_attribute("value", str(CALLS))
    expect(page.get_by_test_id("per-user")).to_contain_text("API keys")
    expect(page.get_by_test_id("spending-cap-form")).to_be_visible()
