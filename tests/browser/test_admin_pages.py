"""The admin pages at a phone's width and a desktop's, measured in the browser: what a customer sees, not by eye."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context
from playwright.sync_api import Browser

from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
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
    table = page.get_by_test_id("tools")
    widths = table.locator("td").evaluate_all("cells => cells.map(c => c.getBoundingClientRect().width)")
    assert len(widths) == len(TOOLS)
    card = page.get_by_test_id("service").evaluate("e => e.getBoundingClientRect().width")
    assert min(widths) > card * 0.7, (widths, card)  # each description about as wide as its card
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert table.evaluate("t => t.scrollWidth <= t.clientWidth")  # nothing hidden to its right either
