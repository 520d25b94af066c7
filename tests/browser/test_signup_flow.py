"""The whole path a new organisation takes, in a real browser against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from apps.tenants.db import connection
from tests.conftest import drop_tenant
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SLUG = "browser-water"
EMAIL = "chief@browser-water.example.com"
PASSWORD = "Reservoir-Level-88"


@pytest.fixture
def cleanup(django_db_blocker: object) -> Iterator[None]:
    """The server committed the tenant; drop it afterwards."""
    yield
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def test_sign_up_log_in_and_switch_language(browser: Browser, web_server: WebServer, cleanup: None) -> None:
    context = browser.new_context(locale="zh-CN")  # a Chinese browser
    page = context.new_page()

    page.goto(web_server.url("localhost", "/"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_test_id("plans")).to_contain_text("专业版")
    form = page.get_by_test_id("signup-form")
    form.locator("#id_name").fill("浏览器测试水务公司")
    form.locator("#id_slug").fill(SLUG)
    form.locator("#id_admin_email").fill(EMAIL)
    form.locator("#id_admin_password").fill(PASSWORD)
    form.locator("#id_plan").select_option("basic")
    form.locator("button[type=submit]").click()

    # Landed on the new workspace's own subdomain, at its login page.
    page.wait_for_url(f"http://{SLUG}.localhost:{web_server.port}/login/**")
    expect(page.get_by_test_id("tenant-name")).to_have_text("浏览器测试水务公司")
    login = page.get_by_test_id("login-form")
    expect(login.locator("#id_username")).to_have_value(EMAIL)
    login.locator("#id_password").fill(PASSWORD)
    login.locator("button[type=submit]").click()

    page.wait_for_url(f"http://{SLUG}.localhost:{web_server.port}/dashboard/")
    expect(page.get_by_test_id("dashboard-heading")).to_contain_text("欢迎")
    expect(page.locator("body")).to_contain_text("基础版")

    page.locator("form.lang-switch button[value=en]").click()
    expect(page.get_by_test_id("dashboard-heading")).to_contain_text("Welcome")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("body")).to_contain_text("Basic")
    expect(page).to_have_url(f"http://{SLUG}.localhost:{web_server.port}/dashboard/")
    context.close()
