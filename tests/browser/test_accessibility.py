"""Deque's axe (WCAG 2.1 A and AA) on the pages members and admins use every day, in both languages.

One workspace, prepared through the services and the database; the pages are then only opened. A "serious" or
"critical" violation fails the test with the rule and the elements it found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.utils import timezone
from django_tenants.utils import schema_context
from playwright.sync_api import Browser, Page, expect

from apps.accounts.services import api_key_create
from apps.core.actors import Actor
from apps.mcp.services import mcp_service_create, mcp_service_test
from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
from apps.usage.services import quota_alerts_catch_up
from tests.browser.conftest import log_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SLUG = "a11y"
ADMIN = "admin@a11y.example.com"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}
LOCALES = {"zh-hans": "zh-CN", "en": "en-US"}
#: A tool result longer than its box's height: the box scrolls.
READINGS = json.dumps([{"station": "S001", "hour": hour, "level_m": 2.31} for hour in range(48)], indent=2)
#: An answer with a code block wider than the reply: it scrolls sideways.
ANSWER = "S001 stands at **2.31 m**.\n\n```\nlevels = [" + "2.31, " * 80 + "]\n```"


@dataclass(frozen=True)
class Workspace:
    conversation: int
    service: int


@pytest.fixture(scope="module")
def workspace(django_db_blocker: object, demo_mcp_url: str) -> Iterator[Workspace]:
    """A pro workspace with a tested MCP service, a conversation (tool panel, an answer, a failed reply), an API
    key, and its members' quota crossed: the quota banner shows on every page."""
    from apps.accounts.models import User
    from apps.chat.models import Conversation, Message
    from apps.mcp.models import McpService

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        tenant = tenant_provision(
            name="A11y Water", slug=SLUG, plan="pro", admin_email=ADMIN, admin_password=ADMIN_PASSWORD,
            actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        tenant.max_users_override = 1
        tenant.save(update_fields=["max_users_override"])
        with schema_context(tenant.schema_name):
            actor = Actor(label="tests")
            service = mcp_service_create(actor=actor, name="Hydrology", url=demo_mcp_url, slug="hydrology")
            mcp_service_test(actor=actor, service=service)
            McpService.objects.create(  # more tools than are shown unfolded: its card shows them folded
                name="Archive", slug="archive", url=demo_mcp_url, is_active=False, tools_refreshed_at=timezone.now(),
                tools=[{"name": f"archive_{n}", "description": "Old levels.", "inputSchema": {"type": "object"}}
                       for n in range(9)],
                config={"disabled_tools": ["archive_0"]},  # a tool kept from the model: shown "not offered"
            )  # fmt: skip
            api_key_create(actor=TEST_ACTOR, name="pipeline", role="user")
            quota_alerts_catch_up(tenant=tenant, quotas=["users"])
            conversation = Conversation.objects.create(user=User.objects.get(email=ADMIN), title="Levels at S001")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
            function = {"name": "hydrology__get_water_levels", "arguments": '{"station": "S001"}'}
            call = {"id": "call_1", "type": "function", "function": function}
            Message.objects.create(conversation=conversation, role="assistant", tool_calls=[call])
            Message.objects.create(
                conversation=conversation,
                role="tool",
                tool_call_id="call_1",
                service="hydrology",
                tool="get_water_levels",
                arguments={"station": "S001"},
                content=READINGS,
                duration_ms=42,
            )
            Message.objects.create(conversation=conversation, role="assistant", content=ANSWER)
            Message.objects.create(conversation=conversation, role="user", content="And at S002?")
            Message.objects.create(conversation=conversation, role="assistant", content="", status="error",
                                   error="The model server answered 500.")  # fmt: skip
    yield Workspace(conversation=conversation.pk, service=service.pk)
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def violations(page: Page) -> list[str]:
    """The serious and critical WCAG 2.1 A/AA violations on the page: each rule with the elements it found."""
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}})
    found: list[dict[str, Any]] = results.response["violations"]
    serious = [
        f"{rule['id']} ({rule['impact']}): {[node['target'] for node in rule['nodes']]}"
        for rule in found
        if rule["impact"] in BLOCKING
    ]
    return serious + dangling_references(page)


def dangling_references(page: Page) -> list[str]:
    """Descriptions and labels that name an element the page does not have: a screen reader reads nothing for them
    (axe lets a list pass if one of its ids is there; a field's help text was never read)."""
    missing: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('[aria-describedby], [aria-labelledby]')].flatMap((node) =>
            ['aria-describedby', 'aria-labelledby'].flatMap((name) =>
                (node.getAttribute(name) || '').split(/\\s+/).filter((id) => id && !document.getElementById(id))
                    .map((id) => `${name} of ${node.tagName.toLowerCase()}#${node.id}: no #${id}`)))"""
    )
    return missing


def logged_in(browser: Browser, web_server: WebServer, language: str) -> Page:
    page = browser.new_context(locale=LOCALES[language]).new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    expect(page.get_by_test_id("nav-profile")).to_be_visible()
    return page


def path_of(name: str, workspace: Workspace) -> str:
    return {
        "chat-empty": "/chat/",
        "chat-conversation": f"/chat/{workspace.conversation}/",
        "mcp-services": "/services/",
        "mcp-service-edit": f"/services/{workspace.service}/edit/",
        "model-provider": "/settings/model/",
        "usage": "/usage/",
        "api-keys": "/api-keys/",
    }[name]


@pytest.mark.parametrize("language", list(LOCALES))
def test_the_login_page_has_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    page = browser.new_context(locale=LOCALES[language]).new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    expect(page.locator("html")).to_have_attribute("lang", language)
    found = violations(page)
    assert not found, "\n".join(found)
    page.context.close()


PAGES = ["chat-empty", "chat-conversation", "mcp-services", "mcp-service-edit", "model-provider", "usage", "api-keys"]


@pytest.mark.parametrize("language", list(LOCALES))
@pytest.mark.parametrize("name", PAGES)
def test_the_members_and_admins_pages_have_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str, name: str
) -> None:
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", path_of(name, workspace)))
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.get_by_test_id("quota-banner")).to_be_visible()
    if name == "chat-conversation":
        page.get_by_test_id("tool-panel").locator("summary").click()  # open: its arguments and result are checked too
        expect(page.get_by_test_id("tool-arguments")).to_be_visible()
    if name == "usage":
        page.wait_for_function("window.Chart && window.Chart.getChart('chart-calls')")
        page.locator(".usage-daily summary").click()
    found = violations(page)
    assert not found, "\n".join(found)
    page.context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_a_tests_result_on_its_card_and_the_folded_tools_have_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    """The services page after "Test connection" (its result in the card, a status region), with a service's many
    tools folded and then unfolded, one of them kept from the model (dimmed to .55 opacity, it failed
    color-contrast)."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", "/services/"))
    page.locator('[data-service="hydrology"]').get_by_test_id("test-service").click()
    expect(page.locator('[data-service="hydrology"]').get_by_test_id("test-result").locator(".notice")).to_be_visible()
    fold = page.locator('[data-service="archive"]').get_by_test_id("tools-fold")
    expect(fold).not_to_have_attribute("open", "")
    found = violations(page)
    fold.locator("summary").click()
    expect(fold.get_by_test_id("tool-off")).to_be_visible()
    found += violations(page)
    assert not found, "\n".join(found)
    page.context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_the_model_server_form_with_errors_and_a_kept_key_has_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    """Sent with a bad base URL and a key: the errors, and the key field saying the key is kept."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", "/settings/model/"))
    form = page.get_by_test_id("provider-form")
    form.locator("#id_base_url").fill("ftp://models.example.com/v1")
    form.locator("#id_model_ids").fill("m1")
    form.locator("#id_api_key").fill("sk-typed")
    form.locator("button[type=submit]").click()
    expect(form.locator("#id_base_url_helptext ~ .errorlist, .errorlist").first).to_be_visible()
    assert page.locator("input[name=kept_secret]").get_attribute("value")
    found = violations(page)
    assert not found, "\n".join(found)
    page.context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_a_streamed_reply_and_a_failed_one_asked_with_the_keyboard_have_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    """What static/js/chat.js draws: the demo model's streamed answer with its tool panel, then a reply that failed
    after a failed tool call. Asked, and the tool panel opened, with the keyboard alone."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    page.get_by_test_id("chat-input").focus()
    page.keyboard.type("站点 S001 最近的水位是多少?")
    page.keyboard.press("Enter")
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("S001", timeout=15_000)
    expect(answer).to_have_attribute("aria-busy", "false", timeout=15_000)  # read once, when it is complete
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    summary = page.get_by_test_id("tool-panel").first.locator("summary")
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("tool-panel").first).to_have_attribute("open", "")
    found = violations(page)
    assert not found, "\n".join(found)

    call = {"id": "c1", "name": "hydrology__get_water_levels", "service": "hydrology", "tool": "get_water_levels",
            "arguments": {"station": "S001"}}  # fmt: skip
    events = [
        ("tool_call", call),
        ("tool_result", {**call, "result": "boom", "is_error": True, "duration_ms": 98, "truncated": False}),
        ("token", {"text": "S001 was at"}),
        ("error", {"code": "upstream_error", "message": "The model server went away.", "message_id": 99}),
    ]
    body = "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events)
    page.context.route(
        "**/api/conversations/*/messages",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.get_by_test_id("chat-input").focus()
    page.keyboard.type("And S002?")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("The model server went away.")
    found = violations(page)
    assert not found, "\n".join(found)

    # A turn stopped because the member's access changed: the input disabled, the reason and a reload link over it.
    stopped = {"code": "access_changed", "message": "Your access changed.", "message_id": 100}
    stream = f"event: error\ndata: {json.dumps(stopped)}\n\n"
    page.context.unroute("**/api/conversations/*/messages")
    page.context.route(
        "**/api/conversations/*/messages",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=stream),
    )
    page.get_by_test_id("chat-input").focus()
    page.keyboard.type("And S003?")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("chat-reload")).to_be_visible()
    found = violations(page)
    assert not found, "\n".join(found)
    page.context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_a_question_asked_after_logging_out_elsewhere_has_no_serious_violations(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    """The reply's note that the session ended, with its link to log in again, inside running text."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    other_tab = page.context.new_page()
    other_tab.goto(web_server.url(f"{SLUG}.localhost", "/dashboard/"))
    other_tab.locator("form[action$='/logout/'] button").click()
    other_tab.wait_for_url(lambda url: "/login/" in url)
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-log-in")).to_be_visible()
    found = violations(page)
    assert not found, "\n".join(found)
    page.context.close()


#: The focused element's ring, or its border for a text box: "" when it is seen, else what it is.
UNSEEN_FOCUS = """() => {
    const node = document.activeElement;
    const style = getComputedStyle(node);
    const solid = !style.outlineColor.startsWith("rgba");
    const ring = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2 && solid;
    const border = style.borderTopColor === "rgb(11, 106, 162)" && parseFloat(style.borderTopWidth) >= 1;
    return ring || border ? "" : `${node.tagName.toLowerCase()}[name=${node.name}] ${style.outlineColor}`;
}"""


@pytest.mark.parametrize("language", list(LOCALES))
def test_the_keyboard_skips_the_header_and_its_focus_is_always_seen(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str
) -> None:
    """The first Tab offers to skip the header's dozen links; every control of the service's edit page then shows
    where the focus is (the offered tools' checkboxes had only a ring at a quarter of the brand's opacity)."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", path_of("mcp-service-edit", workspace)))
    page.keyboard.press("Tab")
    skip = page.get_by_test_id("skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    unseen: list[str] = []
    reached: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.name || document.activeElement.textContent"))
        unseen.append(page.evaluate(UNSEEN_FOCUS))
    assert "offered_tools" in reached, reached  # the header was skipped: the form's controls come first
    assert not [what for what in unseen if what], unseen
    page.context.close()


@pytest.mark.parametrize(("language", "name"), [("zh-hans", "您的问题"), ("en", "Your question")])
def test_the_question_box_is_named_by_more_than_its_placeholder(
    browser: Browser, web_server: WebServer, workspace: Workspace, language: str, name: str
) -> None:
    """Its placeholder was its only name: gone once something is typed, and read by some screen readers as a
    hint rather than a name."""
    page = logged_in(browser, web_server, language)
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    expect(page.get_by_role("textbox", name=name, exact=True)).to_have_attribute("data-testid", "chat-input")
    page.context.close()
