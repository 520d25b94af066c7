"""The admin pages at a phone's width and a desktop's, measured in the browser: what a customer sees, not by eye."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context
from playwright.sync_api import Browser, Dialog, expect

from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
from apps.tenants.slugs import schema_name_for_slug
from tests.browser.conftest import log_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SLUG = "admin-pages"
ADMIN = "admin@admin-pages.example.com"
#: A server with many tools, each with a long name (no break in it) and a long Chinese description.
TOOLS = [
    {
        "name": f"query_reservoir_water_level_history_with_a_long_name_{n}",
        "description": "返回指定水库在给定时间范围内的逐小时水位、入库流量和出库流量记录，包括数据质量标志。" * 2,
        "inputSchema": {"type": "object"},
    }
    for n in range(40)
]


@pytest.fixture(scope="module")
def workspace(django_db_blocker: object) -> Iterator[None]:
    """A pro workspace with one MCP service of 40 tools, loaded."""
    from apps.mcp.models import McpService

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        tenant = tenant_provision(
            name="Admin Pages Water", slug=SLUG, plan="pro", admin_email=ADMIN, admin_password=ADMIN_PASSWORD,
            actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        with schema_context(tenant.schema_name):
            McpService.objects.create(
                name="水文数据服务（省级平台）", slug="bigtools", url="http://127.0.0.1:9/mcp", tools=TOOLS,
                tools_refreshed_at=timezone.now(),
            )  # fmt: skip
    yield
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def test_a_tools_long_name_leaves_its_description_readable_on_a_phone(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A long tool name squeezed its description to one character a line: 40 tools made a page 46,000 px tall."""
    page = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844}).new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto(web_server.url(f"{SLUG}.localhost", "/services/"))
    fold = page.get_by_test_id("tools-fold")
    expect(fold).not_to_have_attribute("open", "")  # 40 tools: folded, the summary counts them
    expect(fold.locator("summary")).to_contain_text("40")
    fold.locator("summary").click()
    table = page.get_by_test_id("tools")
    widths = table.locator("td").evaluate_all("cells => cells.map(c => c.getBoundingClientRect().width)")
    assert len(widths) == len(TOOLS)
    card = page.get_by_test_id("service").evaluate("e => e.getBoundingClientRect().width")
    assert min(widths) > card * 0.7, (widths, card)  # each description about as wide as its card
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert table.evaluate("t => t.scrollWidth <= t.clientWidth")  # nothing hidden to its right either


@pytest.fixture
def fillers(django_db_blocker: object, workspace: None) -> Iterator[None]:
    """Six services of eight tools (shown unfolded) listed before the workspace's: a long page."""
    from apps.mcp.models import McpService

    tools = [
        {"name": f"tool_{n}", "description": "Hourly levels.", "inputSchema": {"type": "object"}} for n in range(8)
    ]
    with django_db_blocker.unblock(), schema_context(schema_name_for_slug(SLUG)):  # type: ignore[attr-defined]
        for n in range(6):
            McpService.objects.create(name=f"Filler {n}", slug=f"filler{n}", url="http://127.0.0.1:9/mcp", tools=tools,
                                      tools_refreshed_at=timezone.now())  # fmt: skip
    yield
    with django_db_blocker.unblock(), schema_context(schema_name_for_slug(SLUG)):  # type: ignore[attr-defined]
        McpService.objects.filter(slug__startswith="filler").delete()


def test_test_connection_says_what_it_found_next_to_its_button(
    browser: Browser, web_server: WebServer, fillers: None
) -> None:
    """Testing the last service of a long page put its result above the title, out of sight: the button seemed to
    do nothing. The page now opens at the service's card, with the result in it."""
    page = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 720}).new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto(web_server.url(f"{SLUG}.localhost", "/services/"))
    card = page.locator('[data-service="bigtools"]')
    button = card.get_by_test_id("test-service")
    button.scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * 720  # a long page
    button.click()
    result = card.get_by_test_id("test-result")
    expect(result).to_contain_text("did not pass the test")
    expect(result).to_be_in_viewport()
    expect(result).to_have_attribute("role", "status")
    assert page.evaluate("window.scrollY") > 720  # not back at the top


def test_the_pages_run_under_the_content_security_policy(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Under the policy (script-src 'self'), removing a service still asks first, as the onsubmit attribute it
    blocks used to, and no page breaks one of its rules."""
    page = browser.new_context(locale="en-US").new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    for path in ("/chat/", "/usage/", "/team/", "/api-keys/", "/api/docs/"):
        page.goto(web_server.url(f"{SLUG}.localhost", path))
        page.wait_for_load_state("networkidle")
    expect(page.locator(".swagger-ui .info")).to_be_visible()  # Swagger UI started: its script is a file now
    page.goto(web_server.url(f"{SLUG}.localhost", "/services/"))
    asked: list[str] = []

    def keep(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", keep)
    page.get_by_test_id("service").first.get_by_role("button", name="Remove").click()
    expect(page.get_by_test_id("service")).to_have_count(1)
    assert asked == ["Remove this service?"]
    assert violations == []
