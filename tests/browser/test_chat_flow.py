"""Ask the demo question in the chat page; see the tool call and the streamed answer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import Browser, Dialog, Locator, Page, Route, expect

from apps.core.actors import Actor
from apps.mcp.services import mcp_service_create, mcp_service_test
from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
from tests.browser.conftest import log_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SLUG = "chat-flow"
ADMIN = "admin@chat-flow.example.com"


@pytest.fixture
def workspace(django_db_blocker: object, demo_mcp_url: str) -> Iterator[None]:
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        tenant = tenant_provision(
            name="Chat Flow Water", slug=SLUG, plan="pro", admin_email=ADMIN, admin_password=ADMIN_PASSWORD,
            actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        with schema_context(tenant.schema_name):
            service = mcp_service_create(
                actor=Actor(label="tests"), name="Hydrology", url=demo_mcp_url, slug="hydrology"
            )
            mcp_service_test(actor=Actor(label="tests"), service=service)
    yield
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def chat_page(browser: Browser, web_server: WebServer, locale: str, permissions: list[str] | None = None) -> Page:
    """The workspace's admin, logged in, on the chat page."""
    page = browser.new_context(locale=locale, permissions=permissions or []).new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.get_by_test_id("nav-chat").click()
    # Loaded, with chat.js run, before a test routes its requests: a route set while the click's navigation
    # was still under way was missed once (CI, stop 21), and the question went to the real model.
    page.wait_for_url("**/chat/")
    return page


def answer_turns_with(page: Page, body: str, *, status: int = 200, content_type: str = "text/event-stream") -> None:
    """Every chat turn the page asks for gets this answer instead of the server's."""
    page.context.route(
        "**/api/conversations/*/messages",
        lambda route: route.fulfill(status=status, content_type=content_type, body=body),
    )


def event_stream(events: list[tuple[str, object]]) -> str:
    """A chat turn's answer as the server streams it: one server-sent event per (kind, data)."""
    return "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events)


def long_reply_under_way(page: Page) -> Locator:
    """Ask for the demo model's long reply (200 chunks, 5 ms apart); its bubble, once it is streaming."""
    page.get_by_test_id("chat-input").fill("Tell me everything #long")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("chunk 3")
    return answer


def test_ask_the_demo_question_and_watch_the_tool_call(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    page = chat_page(browser, web_server, "zh-CN")

    page.get_by_test_id("chat-input").fill("站点 S001 最近的水位是多少?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-stop")).to_be_visible()  # while the reply streams

    panel = page.get_by_test_id("tool-panel").first
    expect(panel).to_contain_text("hydrology")
    expect(panel).to_contain_text("get_water_levels")
    panel.locator("summary").click()
    expect(panel).to_contain_text("S001")
    expect(panel).to_contain_text("level_m")
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("S001", timeout=15_000)
    expect(answer).not_to_have_class("bubble assistant streaming", timeout=15_000)
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    expect(page.get_by_test_id("chat-stop")).to_be_hidden()
    expect(page.get_by_test_id("conversations")).to_contain_text("站点 S001")  # added without a reload

    # The conversation is stored: reload and it is all still there, with the tool panel.
    expect(page).to_have_url(f"http://{SLUG}.localhost:{web_server.port}/chat/1/")
    page.reload()
    expect(page.get_by_test_id("tool-panel")).to_have_count(1)
    expect(page.get_by_test_id("assistant-reply")).to_contain_text("S001")  # the stored reply, as the live one was
    expect(page.locator("main .notice")).to_have_count(0)  # the messages are in the chat, not in notice bars
    expect(page.get_by_test_id("conversations")).to_contain_text("站点 S001")


def test_a_suggested_question_is_asked_with_one_click(browser: Browser, web_server: WebServer, workspace: None) -> None:
    page = chat_page(browser, web_server, "en")
    suggestions = page.get_by_test_id("chat-suggestion")
    expect(suggestions).to_have_count(3)
    suggestions.nth(1).click()  # the rainfall question
    expect(page.locator(".bubble.user")).to_have_text("How much rain fell at station S002 over the past week?")
    panel = page.get_by_test_id("tool-panel").first
    expect(panel).to_contain_text("get_rainfall")
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("S002", timeout=15_000)
    expect(page.get_by_test_id("chat-suggestion")).to_have_count(0)  # the empty state is gone


def test_escape_stops_the_reply(browser: Browser, web_server: WebServer, workspace: None) -> None:
    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    page.keyboard.press("Escape")  # wherever the focus is: the page hears it
    expect(answer).to_contain_text("Stopped. The partial reply is kept.")
    assert "chunk 199" not in answer.locator(".markdown").inner_text()
    expect(page.get_by_test_id("chat-send")).to_be_visible()


def test_escape_that_ends_an_input_methods_composition_leaves_the_reply(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Typing pinyin meanwhile, Escape cancels the composition: the input method's, not the reply's."""
    page = chat_page(browser, web_server, "zh-CN")
    answer = long_reply_under_way(page)
    page.get_by_test_id("chat-input").dispatch_event(
        "keydown", {"key": "Escape", "code": "Escape", "isComposing": True, "bubbles": True}
    )
    expect(answer).to_contain_text("chunk 199", timeout=15_000)
    expect(answer).not_to_contain_text("已停止")
    expect(page.get_by_test_id("chat-send")).to_be_visible()


def test_leaving_while_a_reply_streams_asks_first(browser: Browser, web_server: WebServer, workspace: None) -> None:
    """Leaving stops the reply (the server cancels the model's work when the page goes): not without asking."""
    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    asked: list[str] = []

    def stay(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", stay)
    page.get_by_test_id("new-conversation").click()
    expect(answer).to_contain_text("chunk 199", timeout=15_000)  # stayed: the reply ran to its end
    assert asked == ["A reply is still being written. Leave this page and stop it? What came so far is kept."]
    assert page.url.rstrip("/").split("/")[-1].isdigit()  # still on the conversation the question made
    page.get_by_test_id("new-conversation").click()  # no reply streams now: no question asked
    page.wait_for_url(lambda url: url.endswith("/chat/"))
    assert len(asked) == 1


def test_a_title_given_while_the_first_reply_streams_is_kept(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    page = chat_page(browser, web_server, "en")
    long_reply_under_way(page)
    page.once("dialog", lambda dialog: dialog.accept("Renamed mid-reply"))
    page.get_by_test_id("chat-rename").click()
    expect(page.get_by_test_id("chat-title")).to_have_text("Renamed mid-reply")
    expect(page.get_by_test_id("chat-send")).to_be_visible(timeout=15_000)  # the reply is done
    expect(page.get_by_test_id("chat-title")).to_have_text("Renamed mid-reply")  # not the first exchange's
    page.reload()
    expect(page.get_by_test_id("chat-title")).to_have_text("Renamed mid-reply")


def test_stop_ends_the_reply_and_keeps_what_came(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    from apps.chat.models import Message

    page = chat_page(browser, web_server, "en")

    answer = long_reply_under_way(page)
    page.get_by_test_id("chat-stop").click()
    expect(answer).to_contain_text("Stopped. The partial reply is kept.")
    expect(answer).to_have_class("bubble assistant incomplete")
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    expect(page.get_by_test_id("chat-input")).to_be_enabled()
    shown = answer.locator(".markdown").inner_text()
    assert "chunk 199" not in shown

    # The server saw the client go, cancelled the model's stream and kept the partial reply.
    def stored() -> Message | None:
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            reply = Message.objects.filter(role="assistant").order_by("-id").first()
        connection.set_schema_to_public()
        return reply

    for _ in range(50):
        if (reply := stored()) is not None:
            break
        page.wait_for_timeout(100)
    assert reply is not None
    assert reply.status == "incomplete"
    assert reply.content.startswith(shown[:40])
    assert "chunk 199" not in reply.content
    page.reload()  # stored as stopped early: not "cut short", which the page says of a connection it lost
    expect(page.get_by_test_id("messages")).to_contain_text("This reply stopped before it was complete.")

    # The page opens on the unanswered turn and offers to answer it again, in full this time.
    page.get_by_test_id("chat-retry").click()
    expect(page.get_by_test_id("chat-retry")).to_have_count(0)
    retried = page.get_by_test_id("assistant-reply").last
    expect(retried).to_contain_text("chunk 199", timeout=15_000)
    expect(retried).not_to_have_class("bubble assistant streaming", timeout=15_000)
    page.reload()
    expect(page.get_by_test_id("chat-retry")).to_have_count(0)  # answered
    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        turn = [(m.role, m.status) for m in Message.objects.order_by("id")]
    connection.set_schema_to_public()
    assert turn == [("user", "complete"), ("assistant", "incomplete"), ("assistant", "complete")]


def test_asked_again_right_after_a_stop_the_page_waits_for_the_stopped_turn(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """The server frees the conversation once it notices the client left (at the next token, or after a running
    tool call); until then a turn is 409 conversation_busy, which the page waits out instead of failing."""
    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    page.get_by_test_id("chat-stop").click()
    expect(answer).to_contain_text("Stopped. The partial reply is kept.")
    busy = {"error": {"code": "conversation_busy", "message": "A reply is still being written.", "details": {}}}
    refused: list[str] = []

    def still_busy(route: Route) -> None:  # as a server that has not yet noticed the stop answers
        if len(refused) < 2:
            refused.append(route.request.url)
            route.fulfill(status=409, content_type="application/json", body=json.dumps(busy))
        else:
            route.continue_()

    page.context.route("**/api/conversations/*/retry", still_busy)
    page.get_by_test_id("chat-retry").click()
    retried = page.get_by_test_id("assistant-reply").last
    expect(retried).to_contain_text("chunk 199", timeout=15_000)
    expect(retried).not_to_contain_text("The reply failed")
    assert len(refused) == 2


def test_logged_out_in_another_tab_the_question_comes_back_with_a_way_to_log_in(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Not DRF's "credentials were not provided", nor a "Try again" that cannot work."""
    page = chat_page(browser, web_server, "en")
    other_tab = page.context.new_page()
    other_tab.goto(web_server.url(f"{SLUG}.localhost", "/dashboard/"))
    other_tab.get_by_role("button", name="Log out").click()
    other_tab.wait_for_url(lambda url: "/login/" in url)
    page.get_by_test_id("chat-input").fill("What is the water level at S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("Your session has ended, so nothing was sent.")
    expect(answer).not_to_contain_text("credentials")
    expect(page.get_by_test_id("chat-input")).to_have_value("What is the water level at S001?")
    expect(page.get_by_test_id("chat-retry")).to_have_count(0)
    page.get_by_test_id("chat-log-in").click()
    page.wait_for_url(lambda url: "/login/?next=%2Fchat%2F" in url)
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.wait_for_url("**/chat/**")


def test_a_failed_reply_offers_to_try_again(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object, demo_model_url: str
) -> None:
    from apps.llm.services import model_provider_save

    def model_server_at(url: str) -> None:  # the workspace's own model server, as its admin sets it
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            model_provider_save(actor=TEST_ACTOR, base_url=url, model_ids=["hydronet-demo"], api_key="test")
        connection.set_schema_to_public()

    model_server_at("http://127.0.0.1:9/v1")  # down
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text(
        "The reply failed: The model server could not be reached"
    )
    model_server_at(demo_model_url)  # back
    page.get_by_test_id("chat-retry").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("offline demo model", timeout=15_000)
    expect(answer).not_to_have_class("bubble assistant streaming", timeout=15_000)
    expect(page.get_by_test_id("chat-retry")).to_have_count(0)
    expect(page.get_by_test_id("messages").locator(".bubble.user")).to_have_count(1)  # asked once

    # Another answer to the same question: the first stands replaced, on the page and after a reload.
    first_answer = page.get_by_test_id("assistant-reply").nth(1)  # after the failed one
    page.get_by_test_id("chat-regenerate").click()
    expect(first_answer).to_have_class("bubble assistant replaced")
    expect(first_answer).to_contain_text("Answered again below.")
    regenerated = page.get_by_test_id("assistant-reply").last
    expect(regenerated).to_contain_text("offline demo model", timeout=15_000)
    expect(regenerated).to_have_class("bubble assistant", timeout=15_000)
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("messages").locator(".bubble.assistant.replaced")).to_have_count(1)
    expect(page.get_by_test_id("messages").locator(".bubble.user")).to_have_count(1)


def test_edit_the_last_question(browser: Browser, web_server: WebServer, workspace: None) -> None:
    """ "Edit" puts the last question in the input; sent, it is asked anew and the old turn stands replaced.
    Escape (or Cancel) leaves the question as it was."""
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("levels at S001")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)  # the reply is done
    page.get_by_test_id("chat-edit").click()
    expect(page.get_by_test_id("chat-input")).to_have_value("levels at S001")
    expect(page.get_by_test_id("chat-editing")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("chat-editing")).to_be_hidden()
    expect(page.get_by_test_id("chat-input")).to_have_value("")

    page.get_by_test_id("chat-edit").click()
    page.get_by_test_id("chat-input").fill("levels at S002")
    page.get_by_test_id("chat-send").click()
    questions = page.get_by_test_id("user-question")
    expect(questions.nth(0)).to_have_class("bubble user replaced")
    expect(questions.nth(0)).to_contain_text("Edited and asked again below.")
    expect(page.get_by_test_id("assistant-reply").nth(0)).to_have_class(re.compile(r"\breplaced\b"))
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("Station S002")  # answered the edit
    page.reload()  # as stored
    expect(page.get_by_test_id("messages").locator(".bubble.user.replaced")).to_have_count(1)
    expect(page.get_by_test_id("messages").locator(".bubble.user:not(.replaced)")).to_have_text("levels at S002")
    old_answer = page.get_by_test_id("messages").locator(".bubble.assistant").nth(0)
    expect(old_answer).to_have_class(re.compile(r"\breplaced\b"))
    expect(old_answer).not_to_contain_text("Answered again below.")  # the question's mark says why
    expect(page.get_by_test_id("chat-edit")).to_have_count(1)


def test_a_question_being_drafted_waits_while_the_last_one_is_edited(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """ "Edit" put the last question in the input over what was being drafted there, which was lost; a refused
    edit then put the edit and what was typed meanwhile together, to be sent as one edited question."""
    page = chat_page(browser, web_server, "en")
    question, send = page.get_by_test_id("chat-input"), page.get_by_test_id("chat-send")
    question.fill("levels at S001")
    send.click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    question.fill("and the rain at S002?")
    page.get_by_test_id("chat-edit").click()
    expect(question).to_have_value("levels at S001")
    page.keyboard.press("Escape")
    expect(question).to_have_value("and the rain at S002?")  # back, as it was

    page.get_by_test_id("chat-edit").click()
    question.fill("levels at S003")
    refusal = {"error": {"code": "rate_limited", "message": "Too many requests.", "details": {}}}
    page.context.route(
        "**/api/conversations/*/edit",
        lambda route: route.fulfill(status=429, content_type="application/json", body=json.dumps(refusal)),
    )
    send.click()
    expect(page.get_by_test_id("chat-refusal")).to_have_text("Too many requests.")
    expect(question).to_have_value("levels at S003")  # the edit alone, still an edit
    expect(page.get_by_test_id("chat-editing")).to_be_visible()
    page.context.unroute("**/api/conversations/*/edit")
    send.click()
    expect(question).to_have_value("and the rain at S002?")  # the edit went: the draft is back
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("Station S003", timeout=15_000)
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    expect(question).to_have_value("and the rain at S002?")


def test_a_refused_first_question_leaves_no_empty_conversation(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """The page makes a conversation for a new chat's first question; refused (here the member's daily limit),
    the question is shown with the reason, the empty conversation is deleted again, and the question goes
    back into the input."""
    from apps.chat.models import Conversation

    def count() -> int:
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            return Conversation.objects.count()

    before = count()
    page = chat_page(browser, web_server, "en")
    refusal = {"error": {"code": "quota_exceeded", "message": "You have made the 5 AI calls a day.", "details": {}}}
    answer_turns_with(page, json.dumps(refusal), status=402, content_type="application/json")
    sidebar = page.get_by_test_id("conversations").inner_text()
    page.get_by_test_id("chat-input").fill("levels at S001")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-refusal")).to_have_text("You have made the 5 AI calls a day.")
    expect(page.get_by_test_id("chat-input")).to_have_value("levels at S001")
    expect(page.get_by_test_id("messages").locator(".bubble")).to_have_count(0)  # nothing was asked
    expect(page.get_by_test_id("chat-suggestion")).to_have_count(3)  # the new chat, as it was
    expect(page).to_have_url(f"http://{SLUG}.localhost:{web_server.port}/chat/")
    expect(page.get_by_test_id("chat-head")).to_be_hidden()
    expect(page.get_by_test_id("conversations")).to_have_text(sidebar)
    expect(page.get_by_test_id("chat-edit")).to_have_count(0)
    deadline = 50
    while count() != before and deadline:  # the DELETE goes out after the page shows the refusal
        page.wait_for_timeout(100)
        deadline -= 1
    assert count() == before
    connection.set_schema_to_public()


def test_a_refused_question_edit_or_regenerate_leaves_the_exchange_before_as_it_was(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """Refused (here the conversation busy with another turn, as the server says), a question is taken off the
    page and goes back into the input: left there, its "Try again" answered the question before it again, and
    its "Edit" replaced that question and its answer. A refused edit or Regenerate marks nothing replaced."""
    from django.conf import settings
    from django_redis import get_redis_connection

    from apps.chat.models import Message

    page = chat_page(browser, web_server, "en")
    question, send = page.get_by_test_id("chat-input"), page.get_by_test_id("chat-send")
    question.fill("levels at S001")
    send.click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)  # the reply is done
    conversation = page.url.rstrip("/").rsplit("/", 1)[1]
    messages, refusal = page.get_by_test_id("messages"), page.get_by_test_id("chat-refusal")
    busy_key = f"{settings.CACHE_KEY_PREFIX}:turn:t_chat_flow:{conversation}"
    redis = get_redis_connection("default")
    redis.set(busy_key, "another-turn", px=60_000)  # another turn holds the conversation
    try:
        question.fill("and at S002?")
        send.click()
        expect(refusal).to_contain_text("A reply is still being written in this conversation.")
        expect(question).to_have_value("and at S002?")
        expect(messages.locator(".bubble.user")).to_have_text(["levels at S001"])
        expect(messages.locator(".bubble")).to_have_count(2)
        expect(page.get_by_test_id("chat-regenerate")).to_have_count(1)  # as before, for the answer there
        expect(page.get_by_test_id("chat-retry")).to_have_count(0)
        expect(messages.locator(".replaced")).to_have_count(0)

        question.fill("")
        page.get_by_test_id("chat-regenerate").click()
        expect(refusal).to_contain_text("A reply is still being written in this conversation.")
        expect(messages.locator(".bubble")).to_have_count(2)
        expect(page.get_by_test_id("chat-regenerate")).to_have_count(1)
        expect(messages.locator(".replaced")).to_have_count(0)  # the answer still stands

        page.get_by_test_id("chat-edit").click()
        expect(question).to_have_value("levels at S001")
        question.fill("levels at S003")
        send.click()
        expect(refusal).to_contain_text("A reply is still being written in this conversation.")
        expect(question).to_have_value("levels at S003")
        expect(page.get_by_test_id("chat-editing")).to_be_visible()  # still an edit: sent again, it edits
        expect(messages.locator(".bubble")).to_have_count(2)
        expect(messages.locator(".replaced")).to_have_count(0)
    finally:
        redis.delete(busy_key)
    send.click()
    expect(refusal).to_be_hidden()
    expect(messages.locator(".bubble.user.replaced")).to_have_text(["levels at S001Edited and asked again below."])
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("Station S003")
    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        asked = list(Message.objects.filter(role="user").order_by("id").values_list("content", flat=True))
    connection.set_schema_to_public()
    assert asked == ["levels at S001", "levels at S003"]


def test_a_regenerate_stopped_before_any_word_leaves_the_answer_standing(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Stopped before the server answered, a Regenerate stored nothing that replaces the answer: it stays as it
    was, not dimmed as "answered again below"."""
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    page.context.route("**/api/conversations/*/retry", lambda route: None)  # no answer yet
    page.get_by_test_id("chat-regenerate").click()
    expect(page.get_by_test_id("chat-stop")).to_be_visible()
    page.get_by_test_id("chat-stop").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("Stopped.")
    expect(page.get_by_test_id("messages").locator(".replaced")).to_have_count(0)


def test_failures_are_said_in_the_pages_words_not_the_browsers(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Not the status text (English, and empty over HTTP/2), nor "Failed to fetch" or a JSON.parse message."""
    page = chat_page(browser, web_server, "en")
    question, refusal = page.get_by_test_id("chat-input"), page.get_by_test_id("chat-refusal")
    answer_turns_with(page, "<html><body>Bad gateway</body></html>", status=502, content_type="text/html")
    question.fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(refusal).to_have_text("The server answered with status 502.")
    expect(question).to_have_value("hello")

    page.context.unroute("**/api/conversations/*/messages")
    page.context.route("**/api/conversations/*/messages", lambda route: route.abort())
    page.get_by_test_id("chat-send").click()
    expect(refusal).to_have_text("The connection to the server failed.")
    expect(question).to_have_value("hello")

    page.context.unroute("**/api/conversations/*/messages")
    answer_turns_with(page, 'event: token\ndata: {"text":"S001 is"}\n\nevent: done\ndata: {not json\n\n')
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text(
        "The reply failed: The server's answer could not be read."
    )
    expect(refusal).to_be_hidden()


def test_send_waits_for_the_script(browser: Browser, web_server: WebServer, workspace: None) -> None:
    """Until chat.js runs (slow network, blocked script), Send is disabled: clicked, the form would go out
    natively, a GET with the question and the CSRF token in the address, and the question would be lost."""
    context = browser.new_context(locale="en-US")
    context.route("**/js/chat.js", lambda route: route.abort())
    page = context.new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    expect(page.get_by_test_id("chat-send")).to_be_disabled()
    context.unroute("**/js/chat.js")
    page.reload()
    expect(page.get_by_test_id("chat-send")).to_be_enabled()
    context.close()


def test_a_stream_that_ends_without_done_is_marked_cut_short(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A connection closed mid-reply (a proxy's timeout, a restart) ends the stream with no done or error
    event: the page says the reply was cut short instead of showing it as still streaming."""
    page = chat_page(browser, web_server, "en")
    truncated = 'event: token\ndata: {"text":"The level at S001 is"}\n\n'
    answer_turns_with(page, truncated)
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("The level at S001 is")
    expect(answer).to_contain_text("This reply was cut short.")
    expect(answer).to_have_class("bubble assistant incomplete")
    expect(page.get_by_test_id("chat-send")).to_be_visible()


def test_a_conversation_opens_at_its_latest_messages(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    from apps.accounts.models import User
    from apps.chat.models import Conversation, Message

    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        conversation = Conversation.objects.create(user=User.objects.get(email=ADMIN), title="A long one")
        for n in range(30):
            Message.objects.create(conversation=conversation, role="user", content=f"Question {n}")
            Message.objects.create(conversation=conversation, role="assistant", content=f"Answer {n}\n\n" * 3)
    connection.set_schema_to_public()
    page = chat_page(browser, web_server, "en")
    page.goto(web_server.url(f"{SLUG}.localhost", f"/chat/{conversation.pk}/"))
    expect(page.get_by_test_id("chat-send")).to_be_enabled()  # chat.js has run
    expect(page.get_by_test_id("chat-regenerate")).to_be_in_viewport()
    expect(page.get_by_text("Question 0", exact=True)).not_to_be_in_viewport()


def test_a_long_question_shows_its_count_and_a_cut_paste_says_so(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    page = chat_page(browser, web_server, "en", permissions=["clipboard-read", "clipboard-write"])
    question, count = page.get_by_test_id("chat-input"), page.get_by_test_id("field-count")
    limit = int(question.get_attribute("maxlength") or 0)
    question.fill("a" * (limit // 2))
    expect(count).to_be_hidden()  # far from the limit: nothing to say
    question.fill("a" * (limit - 10))
    expect(count).to_have_text(f"{limit - 10:,} / {limit:,}")
    question.fill("")
    page.evaluate("text => navigator.clipboard.writeText(text)", "b" * (limit + 500))
    question.focus()
    page.keyboard.press("Control+V")
    expect(count).to_have_text(f"{limit:,} / {limit:,} · the pasted text was cut to fit")
    expect(count).to_have_class(re.compile("full"))
    assert len(question.input_value()) == limit
    page.keyboard.press("Backspace")  # typing: the note goes, the count stays
    expect(count).to_have_text(f"{limit - 1:,} / {limit:,}")
    page.get_by_test_id("chat-send").click()  # sent: the page empties the input, and the count goes
    expect(page.get_by_test_id("assistant-reply")).to_be_visible()
    expect(count).to_be_hidden()


def test_rename_and_delete_a_conversation_from_the_page(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    from apps.chat.models import Conversation

    page = chat_page(browser, web_server, "en")
    expect(page.get_by_test_id("chat-head")).to_be_hidden()  # no conversation yet
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-send")).to_be_visible(timeout=15_000)  # the reply is done
    # The first question made the conversation: its header, titled by the exchange, without a reload.
    expect(page.get_by_test_id("chat-title")).to_have_text("hello")
    conversation = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.get_by_test_id("chat-export")).to_have_attribute("href", f"/api/conversations/{conversation}/export")

    # The language switch returns to the conversation the first question made, not to a new chat.
    page.get_by_role("button", name="简体中文").click()
    expect(page).to_have_url(re.compile(f"/chat/{conversation}/$"))
    expect(page.get_by_test_id("chat-title")).to_have_text("hello")
    page.get_by_role("button", name="English").click()
    expect(page.get_by_test_id("chat-rename")).to_have_text("Rename")

    # A refused title: the alert says why, not only "Invalid input.", and the title stays.
    # Each dialog answered at once: an alert left open blocks the page, and the click waited on it (CI, once).
    said: list[str] = []

    def answer(dialog: Dialog) -> None:
        if dialog.type == "prompt":
            dialog.accept("x" * 201)
        else:
            said.append(dialog.message)
            dialog.accept()

    page.on("dialog", answer)
    page.get_by_test_id("chat-rename").click()
    for _ in range(100):
        if said:
            break
        page.wait_for_timeout(50)
    page.remove_listener("dialog", answer)
    assert said == ["The input is not valid. Ensure this field has no more than 200 characters."]
    expect(page.get_by_test_id("chat-title")).to_have_text("hello")

    page.once("dialog", lambda dialog: dialog.accept("Reservoir S003 levels"))
    page.get_by_test_id("chat-rename").click()
    expect(page.get_by_test_id("chat-title")).to_have_text("Reservoir S003 levels")
    expect(page.get_by_test_id("conversations")).to_contain_text("Reservoir S003 levels")
    page.reload()
    expect(page.get_by_test_id("chat-title")).to_have_text("Reservoir S003 levels")

    page.once("dialog", lambda dialog: dialog.dismiss())  # changed one's mind: nothing happens
    page.get_by_test_id("chat-delete").click()
    expect(page.get_by_test_id("chat-title")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("chat-delete").click()
    expect(page).to_have_url(f"http://{SLUG}.localhost:{web_server.port}/chat/")
    expect(page.get_by_test_id("conversations")).not_to_contain_text("Reservoir S003 levels")
    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        assert not Conversation.objects.exists()
    connection.set_schema_to_public()


def test_text_before_a_tool_call_stops_streaming_and_replies_are_read_once_complete(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Some models say something before they call a tool: that bubble ends there (no cursor left blinking),
    and screen readers, told of changes to the messages, wait until each reply is complete (aria-busy)."""
    page = chat_page(browser, web_server, "en")
    call = {"id": "c1", "name": "hydrology__get_water_levels", "service": "hydrology", "tool": "get_water_levels",
            "arguments": {"station": "S001"}}  # fmt: skip
    events = [
        ("token", {"text": "Let me look that up."}),
        ("tool_call", call),
        ("tool_result", {**call, "result": "{}", "is_error": False, "duration_ms": 9, "truncated": False}),
        ("token", {"text": "S001 is at 2.1 m."}),
        (
            "done",
            {
                "message_id": 9,
                "conversation_id": 1,
                "title": "t",
                "tokens": 5,
                "latency_ms": 9,
                "html": "<p>S001 is at 2.1 m.</p>",
            },
        ),
    ]
    answer_turns_with(page, event_stream(events))
    expect(page.get_by_test_id("messages")).to_have_attribute("aria-live", "polite")
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    before, after = page.get_by_test_id("assistant-reply").nth(0), page.get_by_test_id("assistant-reply").nth(1)
    expect(after).to_contain_text("S001 is at 2.1 m.")
    expect(before).to_have_text("Let me look that up.")
    for reply in (before, after):
        expect(reply).to_have_class("bubble assistant")
        expect(reply).to_have_attribute("aria-busy", "false")


def test_copy_a_reply(browser: Browser, web_server: WebServer, workspace: None) -> None:
    page = chat_page(browser, web_server, "en", permissions=["clipboard-read", "clipboard-write"])
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer.get_by_test_id("copy-reply")).to_be_visible(timeout=15_000)  # once the reply is done
    answer.get_by_test_id("copy-reply").click()
    expect(answer.get_by_test_id("copy-reply")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "offline demo model" in copied
    assert copied == answer.locator(".markdown").inner_text().strip()
    page.reload()  # stored replies have it too
    expect(page.get_by_test_id("copy-reply")).to_have_count(1)


# Every page an admin reaches from the navigation, with content that is wide on a phone: a long
# conversation title, and the tables of API keys and the audit trail.
PHONE_PAGES = ["/dashboard/", "/chat/", "/services/", "/usage/", "/settings/model/", "/team/", "/api-keys/", "/audit/"]


def test_on_a_phone_no_page_is_wider_than_the_screen(browser: Browser, web_server: WebServer, workspace: None) -> None:
    """A page wider than a phone's screen scrolls sideways as a whole; wide tables scroll on their own instead."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto(web_server.url(f"{SLUG}.localhost", "/api-keys/"))
    page.get_by_test_id("api-key-form").locator("input[name=name]").fill("a key for the nightly sync job")
    page.get_by_test_id("api-key-form").locator("button").click()
    expect(page.get_by_test_id("keys")).to_contain_text("a key for the nightly sync job")
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    page.get_by_test_id("chat-input").fill("站点 S001 的水位" + "，以及上游各站的降雨与警戒水位" * 4)
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-send")).to_be_visible(timeout=15_000)
    pages = [*PHONE_PAGES, page.url.split(f":{web_server.port}", 1)[1]]  # the conversation itself
    for path in pages:
        page.goto(web_server.url(f"{SLUG}.localhost", path))
        widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"{path} is {widths[0]} px wide on a {widths[1]} px screen"
    context.close()


def test_a_failed_tool_call_and_a_failed_reply_read_as_after_a_reload(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A failed call says "failed · 98 ms" and its arguments' keys come sorted, as the page shows a stored call
    (templates/chat/chat.html); a reply that failed after some text has its Copy button, as after a reload."""
    page = chat_page(browser, web_server, "en", permissions=["clipboard-read", "clipboard-write"])
    call = {"id": "c1", "name": "hydrology__get_water_levels", "service": "hydrology", "tool": "get_water_levels",
            "arguments": {"station": "S001", "days": 7}}  # fmt: skip
    events = [
        ("tool_call", call),
        (
            "tool_result",
            {**call, "result": "boom", "is_error": True, "duration_ms": 98, "truncated": False, "message_id": 3},
        ),
        ("token", {"text": "S001 was at"}),
        ("error", {"code": "upstream_error", "message": "The model server went away.", "message_id": 4}),
    ]
    answer_turns_with(page, event_stream(events))
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("The reply failed: The model server went away.")
    panel = page.get_by_test_id("tool-panel")
    expect(panel.locator(".tool-state")).to_have_text("failed · 98 ms")
    assert panel.locator("pre").first.text_content() == '{\n  "days": 7,\n  "station": "S001"\n}'
    expect(answer.get_by_test_id("copy-reply")).to_be_visible()
    answer.get_by_test_id("copy-reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == "S001 was at"


def test_a_question_title_and_rename_read_the_same_live_and_after_a_reload(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """A question's line breaks show as it streams; the tab's title follows the conversation's; a rename
    starts from the real title, and from nothing (not the "New conversation" placeholder) when it has none."""
    from apps.chat.models import Conversation

    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("levels at S001\nand S002")
    page.get_by_test_id("chat-send").click()
    question = page.get_by_test_id("user-question")
    assert question.evaluate("node => node.innerText") == "levels at S001\nand S002"
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)  # the reply is done
    heading = page.get_by_test_id("chat-title")
    expect(heading).not_to_have_text("New conversation")
    title = heading.inner_text()
    expect(page).to_have_title(f"{title} · Chat Flow Water")  # titled by the first exchange

    offered: list[str] = []

    def rename_to(new: str | None) -> None:
        def answer(dialog: Dialog) -> None:
            offered.append(dialog.default_value)
            dialog.accept(*(() if new is None else (new,)))

        page.once("dialog", answer)
        page.get_by_test_id("chat-rename").click()

    rename_to("Reservoir levels")
    expect(heading).to_have_text("Reservoir levels")
    expect(page).to_have_title("Reservoir levels · Chat Flow Water")
    assert offered == [title]
    rename_to("")  # untitled
    expect(heading).to_have_text("New conversation")
    expect(page).to_have_title("New conversation · Chat Flow Water")
    rename_to(None)  # OK without editing: still untitled
    page.wait_for_timeout(300)
    assert offered == [title, "Reservoir levels", ""]
    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        assert list(Conversation.objects.values_list("title", flat=True)) == [""]
    connection.set_schema_to_public()

    page.reload()  # the question as stored reads as it did
    assert page.get_by_test_id("user-question").evaluate("node => node.innerText") == "levels at S001\nand S002"
    rename_to(None)
    page.wait_for_timeout(300)
    assert offered[-1] == ""


def test_a_new_conversation_whose_first_reply_fails_is_titled_by_its_question(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """The server titled it from the question (the sidebar shows it): the heading and the tab follow."""
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("Levels at S001 #error500")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("The reply failed", timeout=15_000)
    expect(page.get_by_test_id("chat-title")).to_have_text("Levels at S001 #error500")
    expect(page).to_have_title("Levels at S001 #error500 · Chat Flow Water")
    page.reload()
    expect(page.get_by_test_id("chat-title")).to_have_text("Levels at S001 #error500")


def test_after_stop_the_reply_shows_what_was_kept(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """The server keeps the partial reply it had when it noticed the stop, a few chunks past what the page had
    shown: the page then shows the stored reply, rendered, with its Copy button."""
    from apps.chat.models import Message

    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    page.get_by_test_id("chat-stop").click()
    expect(answer).to_contain_text("Stopped. The partial reply is kept.")
    expect(answer.locator(".markdown p")).to_have_count(1)  # the stored reply, Markdown rendered
    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        kept = Message.objects.get(role="assistant")
    connection.set_schema_to_public()
    assert kept.status == "incomplete"
    assert answer.locator(".markdown").inner_text().strip() == kept.content.strip()
    expect(answer.get_by_test_id("copy-reply")).to_be_visible()


def test_leaving_by_a_form_while_a_reply_streams_asks_first(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Log out and the language switch leave the page as a link does: not without asking."""
    page = chat_page(browser, web_server, "en")
    asked: list[str] = []

    def stay(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", stay)
    # One reply for each (it streams for about a second): both clicks in one could find it ended.
    for button in ("Log out", "简体中文"):
        answer = long_reply_under_way(page)
        page.get_by_role("button", name=button).click()
        expect(answer).to_contain_text("chunk 199", timeout=15_000)  # stayed: the reply ran to its end
        expect(page.get_by_test_id("chat-send")).to_be_visible(timeout=15_000)
    assert asked == ["A reply is still being written. Leave this page and stop it? What came so far is kept."] * 2
    assert page.url.rstrip("/").split("/")[-1].isdigit()
    expect(page.get_by_test_id("chat-rename")).to_have_text("Rename")  # still in English


def test_on_a_phone_the_question_takes_its_row_and_the_list_stays_short(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object, demo_model_url: str
) -> None:
    """With a choice of models the question still takes the whole row (the model and Send go under it, on the
    right; a long model name is cut short); and a long conversation list does not push the open conversation
    below the screen."""
    from apps.accounts.models import User
    from apps.chat.models import Conversation
    from apps.llm.services import model_provider_save

    def offer(models: list[str]) -> None:
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            model_provider_save(actor=TEST_ACTOR, base_url=demo_model_url, model_ids=models, api_key="test")
        connection.set_schema_to_public()

    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        admin = User.objects.get(email=ADMIN)
        conversations = [Conversation.objects.create(user=admin, title=f"Levels at S{n:03}") for n in range(30)]
    connection.set_schema_to_public()
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    long_model = "hydronet-demo-with-a-rather-long-model-name-2026-12-instruct-preview"
    for models in (["hydronet-demo", "qwen2.5-7b"], ["hydronet-demo", long_model]):
        offer(models)
        page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
        question, send = page.get_by_test_id("chat-input"), page.get_by_test_id("chat-send")
        expect(send).to_be_enabled()
        page.locator("select[name=model]").select_option(models[-1])
        form = page.get_by_test_id("chat-form").bounding_box()
        typed, sent = question.bounding_box(), send.bounding_box()
        chosen = page.locator("select[name=model]").bounding_box()
        assert form is not None
        assert typed is not None
        assert sent is not None
        assert chosen is not None
        assert typed["width"] >= form["width"] - 30, models  # the whole row but the form's padding
        assert sent["y"] >= typed["y"] + typed["height"], models  # under it
        assert form["x"] + form["width"] - 20 <= sent["x"] + sent["width"] <= form["x"] + form["width"], models
        assert sent["height"] < 56, models  # "Send" on one line
        assert form["x"] <= chosen["x"], models  # the model's name cut short, not past the screen
        assert chosen["x"] + chosen["width"] <= sent["x"], models
    expect(page.locator(".chat-main")).to_be_in_viewport()  # the conversation starts on the first screen
    page.goto(web_server.url(f"{SLUG}.localhost", f"/chat/{conversations[0].pk}/"))
    expect(page.get_by_test_id("chat-title")).to_be_in_viewport()
    context.close()


def test_the_admins_navigation_is_one_line_and_chinese_labels_keep_their_case(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """At 1366 px and wider, in both languages, the admin's eight links stay on one line; and "本月 Token 数"
    is not upper-cased to "本月 TOKEN 数" (English labels are, as the design has them)."""
    for locale in ("en-US", "zh-CN"):
        context = browser.new_context(locale=locale, viewport={"width": 1366, "height": 900})
        page = context.new_page()
        page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
        log_in(page, ADMIN, ADMIN_PASSWORD)
        page.goto(web_server.url(f"{SLUG}.localhost", "/usage/"))
        links = page.locator(".site-nav a")
        expect(links).to_have_count(8)
        for width in (1366, 1920):
            page.set_viewport_size({"width": width, "height": 900})
            tops = links.evaluate_all("links => links.map(link => Math.round(link.getBoundingClientRect().top))")
            assert len(set(tops)) == 1, f"{locale} at {width} px: the links are on {len(set(tops))} lines"
        labels = page.locator(".stat-label")
        transforms = set(labels.evaluate_all("labels => labels.map(label => getComputedStyle(label).textTransform)"))
        if locale == "zh-CN":
            assert transforms == {"none"}
            expect(labels.filter(has_text="本月 Token 数")).to_have_count(1)
        else:
            assert transforms == {"uppercase"}
        context.close()


def test_scrolled_up_while_a_reply_streams_the_messages_stay_where_the_reader_put_them(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Each token pulled the messages back to their end: what came earlier could not be read while a reply
    streamed. Scrolled up, they stay (at its end too); a new question brings them back to the end, to follow."""
    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    messages = page.get_by_test_id("messages")
    page.wait_for_function("list => list.scrollHeight > list.clientHeight + 100", arg=messages.element_handle())
    messages.hover()
    page.mouse.wheel(0, -10_000)  # the reader scrolls up, to the question
    # Near the top, not always at it: Chromium takes the wheel's distance from where its compositor last saw the
    # messages, which a token may just have moved 25 px further down (CI, 2026-12-07).
    page.wait_for_function("list => list.scrollTop < 40", arg=messages.element_handle())
    put = messages.evaluate("list => list.scrollTop")
    expect(answer).to_contain_text("chunk 199", timeout=15_000)
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()  # the turn is over
    assert messages.evaluate("list => list.scrollTop") == put

    page.get_by_test_id("chat-input").fill("And again #long")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("chunk 199", timeout=15_000)
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()
    assert messages.evaluate("list => list.scrollHeight - list.scrollTop - list.clientHeight") < 4


# Per cell of a reply's tables: how many lines its text takes, and whether the table ends within its reply.
TABLE_LAYOUT = """() => [...document.querySelectorAll(".bubble.assistant .markdown table")].map((table) => {
  const reply = table.closest(".bubble").getBoundingClientRect();
  const lines = [...table.querySelectorAll("td")].map((cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    return [cell.textContent, new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size];
  });
  return {within: table.getBoundingClientRect().right <= reply.right + 0.5, lines: lines};
})"""


def test_a_wide_table_in_a_reply_keeps_its_readings_whole_and_scrolls_within_the_reply(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """The reply's break-anywhere rule broke a reading of 165.06 over two lines and a station's name one
    character a line, and a wider table spilled out of its reply; it scrolls sideways within it now."""
    from apps.chat.markdown import render

    page = chat_page(browser, web_server, "zh-CN")
    rows = "".join(
        f"| 2026-12-07T0{n}:00:00Z | S00{n} | 长江·寸滩站 | 165.0{n} | 166.50 | 168.00 | 正常 | "
        f"https://hydro.example.com/stations/S00{n}/readings |\n"
        for n in range(1, 6)
    )
    text = "| 时间 | 站点 | 名称 | 水位 (m) | 警戒水位 (m) | 保证水位 (m) | 状态 | 来源 |\n" + "|---" * 8 + "|\n" + rows
    done = {"message_id": 2, "html": render(text)}
    answer_turns_with(page, event_stream([("token", {"text": text}), ("done", done)]))
    page.get_by_test_id("chat-input").fill("S001 到 S005 的水位")
    page.get_by_test_id("chat-send").click()
    expect(page.locator(".bubble.assistant .markdown table")).to_have_count(1)
    for width, height in [(1280, 720), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        (table,) = page.evaluate(TABLE_LAYOUT)
        assert table["within"], f"the table spills out of its reply {width} px wide"
        # A reading or a station id on one line; a name on at most two (broken at its "·", not one character a
        # line); a time may break after a hyphen, as any text does.
        broken = [text for text, lines in table["lines"] if lines > (1 if re.fullmatch(r"[\d.]+|S\d+", text) else 2)]
        assert not broken, f"broken over lines {width} px wide: {broken}"


def test_what_a_failed_reply_said_is_shown_rendered_as_after_a_reload(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A reply that failed after some text kept showing that text's Markdown source (asterisks, rows of pipes)
    until a reload rendered it."""
    page = chat_page(browser, web_server, "en")
    said = "**S001** was at\n\n| time | level |\n|---|---|\n| 08:00 | 165.06 |"
    rendered = "<p><strong>S001</strong> was at</p><table><tr><td>08:00</td><td>165.06</td></tr></table>"
    failed = {"code": "upstream_error", "message": "The model server went away.", "message_id": 2, "html": rendered}
    answer_turns_with(page, event_stream([("token", {"text": said}), ("error", failed)]))
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("The reply failed: The model server went away.")
    expect(answer.locator(".markdown strong")).to_have_text("S001")
    expect(answer.locator(".markdown table td").last).to_have_text("165.06")
    expect(answer.locator(".markdown")).not_to_contain_text("**")


def test_an_empty_answer_says_so_and_offers_nothing_to_copy(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """It showed an empty bubble whose Copy button copied nothing (and after a reload, nothing at all)."""
    page = chat_page(browser, web_server, "en")
    answer_turns_with(page, event_stream([("done", {"message_id": 2, "html": "", "title": "S001?"})]))
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer.get_by_test_id("empty-answer")).to_have_text("The model's answer was empty.")
    expect(answer.get_by_test_id("copy-reply")).to_have_count(0)
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()


def test_an_answer_the_model_stopped_at_its_length_limit_says_it_was_cut_short(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Stopped at ``max_tokens`` (``finish_reason: "length"``), it read as a finished answer, cut off mid-sentence."""
    page = chat_page(browser, web_server, "en")
    done = {"message_id": 2, "html": "<p>The level is</p>", "title": "S001?", "status": "incomplete"}
    answer_turns_with(page, event_stream([("token", {"text": "The level is"}), ("done", done)]))
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("This reply was cut short.")
    expect(answer).to_have_class(re.compile(r"\bincomplete\b"))
    expect(answer.get_by_test_id("copy-reply")).to_have_count(1)


def test_an_answer_the_model_servers_content_filter_stopped_says_so_in_its_own_words(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Stopped by the filter (``finish_reason: "content_filter"``), it read as a finished answer, or as the model's
    answer being empty; ``done`` says why, and the page says it rather than "cut short"."""
    page = chat_page(browser, web_server, "en")
    done = {"message_id": 2, "html": "<p>The level is</p>", "title": "S001?", "status": "incomplete",
            "error": "The model server's content filter stopped this reply."}  # fmt: skip
    answer_turns_with(page, event_stream([("token", {"text": "The level is"}), ("done", done)]))
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("The model server's content filter stopped this reply.")
    expect(answer).not_to_contain_text("This reply was cut short.")
    expect(answer).to_have_class(re.compile(r"\bincomplete\b"))


def test_a_reasoning_model_is_said_to_be_thinking_until_its_answer_comes(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A reasoning model (DeepSeek-R1, Qwen3) reasons for a minute or more before it answers: the reply showed
    nothing meanwhile."""
    page = chat_page(browser, web_server, "en")
    page.evaluate(SEEN_THINKING)
    done = {"message_id": 2, "html": "<p>165.7 m</p>", "title": "S001?"}
    answer_turns_with(page, event_stream([("thinking", {}), ("thinking", {}), ("token", {"text": "165.7 m"}),
                                          ("done", done)]))  # fmt: skip
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("165.7 m")
    assert page.evaluate("window.seenThinking") == ["The model is thinking…"]  # shown once, then gone
    expect(page.get_by_test_id("thinking")).to_have_count(0)


# Records the text of every "thinking" note added to the page, though it is gone again at once.
SEEN_THINKING = """() => {
  window.seenThinking = [];
  new MutationObserver((records) => records.forEach((record) => record.addedNodes.forEach((node) => {
    if (node.dataset && node.dataset.testid === "thinking") window.seenThinking.push(node.textContent);
  }))).observe(document.body, { childList: true, subtree: true });
}"""


def test_a_tab_that_missed_a_newer_question_cannot_edit_or_regenerate_in_its_place(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Asked in another tab, a question a page had not seen was the one its Edit replaced and its Regenerate
    answered again, not the one the page showed: now the page is refused, says why and keeps the edit."""
    page = chat_page(browser, web_server, "en")
    for question in ("hello", "hello again"):  # asked live: the page learns each question's id as its turn ends
        page.get_by_test_id("chat-input").fill(question)
        page.get_by_test_id("chat-send").click()
        expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    stale = page.context.new_page()
    stale.goto(page.url)
    page.get_by_test_id("chat-input").fill("one more thing")  # asked in the first tab: the second has not seen it
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)

    stale.get_by_test_id("chat-edit").click()
    stale.get_by_test_id("chat-input").fill("hello again, corrected")
    stale.get_by_test_id("chat-send").click()
    refusal = stale.get_by_test_id("chat-refusal")
    expect(refusal).to_contain_text("A newer question has been asked in this conversation")
    expect(stale.get_by_test_id("chat-input")).to_have_value("hello again, corrected")  # still an edit
    expect(stale.get_by_test_id("chat-editing")).to_be_visible()
    stale.get_by_test_id("chat-edit-cancel").click()
    stale.get_by_test_id("chat-regenerate").click()
    expect(refusal).to_contain_text("A newer question has been asked in this conversation")
    expect(stale.locator(".bubble.assistant")).to_have_count(2)  # no new one, nothing marked replaced
    expect(stale.locator(".replaced")).to_have_count(0)
    stale.reload()  # nothing was replaced
    expect(stale.get_by_test_id("user-question")).to_have_text(["hello", "hello again", "one more thing"])
    expect(stale.locator(".replaced")).to_have_count(0)

    page.get_by_test_id("chat-edit").click()  # the tab that asked it edits its last question
    page.get_by_test_id("chat-input").fill("one more thing, corrected")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    page.get_by_test_id("chat-regenerate").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("one more thing, corrected", timeout=15_000)
    expect(page.get_by_test_id("chat-refusal")).to_be_hidden()
    page.reload()
    expect(page.locator(".bubble.user.replaced")).to_have_text(["one more thing" + "Edited and asked again below."])


def test_stopped_while_a_new_chat_is_being_made_the_question_goes_back_into_the_input(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Stopped before its conversation was made (a slow connection), the question stayed on the page marked
    "Stopped. The partial reply is kept." with nothing kept, and nothing to ask it again with: it was lost."""
    page = chat_page(browser, web_server, "en")
    held: list[Route] = []

    def hold(route: Route) -> None:  # the conversation is not made before the stop
        held.append(route)

    page.route("**/api/conversations", hold)
    page.get_by_test_id("chat-input").fill("S001 levels, with a typo")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-stop")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("chat-input")).to_have_value("S001 levels, with a typo")
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    expect(page.get_by_test_id("chat-suggestion")).to_have_count(3)  # the new chat, as it was
    expect(page.get_by_test_id("user-question")).to_have_count(0)
    expect(page.get_by_test_id("assistant-reply")).to_have_count(0)
    expect(page.get_by_test_id("chat-refusal")).to_be_hidden()
    assert len(held) == 1


def test_a_conversation_deleted_in_another_tab_says_so(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Asking, renaming or answering again in a conversation deleted meanwhile said only "Not found." """
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    other = page.context.new_page()
    other.goto(page.url)
    other.once("dialog", lambda dialog: dialog.accept())
    other.get_by_test_id("chat-delete").click()
    other.wait_for_url(lambda url: url.endswith("/chat/"))
    gone = "This conversation no longer exists: it was deleted, perhaps in another tab or window."
    page.get_by_test_id("chat-input").fill("hello again")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-refusal")).to_have_text(gone)
    expect(page.get_by_test_id("chat-input")).to_have_value("hello again")
    said: list[str] = []

    def rename(dialog: Dialog) -> None:  # the new title, then what the page says of it
        said.append(dialog.message)
        if dialog.type == "prompt":
            dialog.accept("Levels")
        else:
            dialog.dismiss()

    page.on("dialog", rename)
    page.get_by_test_id("chat-rename").click()
    for _ in range(50):
        if len(said) == 2:
            break
        page.wait_for_timeout(100)
    assert said == ["A new title for this conversation:", gone]
    expect(page.get_by_test_id("chat-title")).to_have_text("hello")


def test_the_next_question_is_drafted_while_a_reply_streams_and_sent_once_it_ends(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """The input was disabled while a reply streamed: the next question could not be drafted meanwhile. Enter
    then does not send it (the server refuses a second turn while one runs); it waits in the input."""
    page = chat_page(browser, web_server, "en")
    answer = long_reply_under_way(page)
    question = page.get_by_test_id("chat-input")
    expect(question).to_be_enabled()
    question.fill("And at S002?")
    question.press("Enter")
    expect(question).to_have_value("And at S002?")  # neither sent nor a line break
    expect(page.get_by_test_id("user-question")).to_have_count(1)
    expect(page.get_by_test_id("chat-send")).to_be_hidden()
    expect(answer).not_to_have_class("bubble assistant streaming", timeout=15_000)
    expect(answer).to_contain_text("chunk 199")
    expect(question).to_have_value("And at S002?")  # kept when the turn ends
    question.press("Enter")
    expect(page.get_by_test_id("user-question")).to_have_count(2)
    expect(page.get_by_test_id("user-question").last).to_have_text("And at S002?")
    expect(question).to_have_value("")


def test_the_enter_that_confirms_an_input_methods_composition_sends_nothing(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """Typing pinyin, Enter picks the characters: during the composition, and in Safari the keydown right after it
    (keyCode 229, isComposing false). Neither sends the question."""
    page = chat_page(browser, web_server, "zh-CN")
    question = page.get_by_test_id("chat-input")
    question.fill("站点")
    question.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "isComposing": True, "bubbles": True})
    question.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "keyCode": 229, "bubbles": True})
    question.press("End")
    page.keyboard.type(" S001")
    expect(question).to_have_value("站点 S001")
    expect(page.get_by_test_id("user-question")).to_have_count(0)
    question.press("Enter")  # Enter itself, with the composition over: sends
    expect(page.get_by_test_id("user-question")).to_have_text("站点 S001")


def test_on_a_touch_screen_enter_breaks_the_line_and_send_sends(
    browser: Browser, web_server: WebServer, workspace: None
) -> None:
    """A phone's keyboard has no Shift: Enter sent the question, and a line break could not be typed."""
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)  # fmt: skip
    page = context.new_page()
    page.goto(web_server.url(f"{SLUG}.localhost", "/login/"))
    log_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto(web_server.url(f"{SLUG}.localhost", "/chat/"))
    assert page.evaluate("matchMedia('(pointer: coarse)').matches")
    question = page.get_by_test_id("chat-input")
    question.click()
    page.keyboard.type("Levels at S001")
    page.keyboard.press("Enter")
    page.keyboard.type("and S002?")
    expect(question).to_have_value("Levels at S001\nand S002?")
    expect(page.get_by_test_id("user-question")).to_have_count(0)
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("user-question")).to_have_text("Levels at S001\nand S002?")
    context.close()


def test_opened_while_a_reply_is_written_the_page_shows_it_once_stored(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """Opened (or reloaded) while a reply was still being written, the page said to reload in a moment and stayed
    as it was; now it looks again by itself and shows the reply once it is stored, keeping what was drafted."""
    from apps.accounts.models import User
    from apps.chat import selectors
    from apps.chat.models import Conversation, Message
    from apps.usage.scripts import redis_client

    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        conversation = Conversation.objects.create(user=User.objects.get(email=ADMIN), title="Levels")
        Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
    connection.set_schema_to_public()
    hold = selectors.turn_hold_key("t_chat_flow", conversation.pk)
    redis_client().set(hold, "the streaming request", px=60_000)  # as a turn under way holds it
    try:
        page = chat_page(browser, web_server, "en")
        page.goto(web_server.url(f"{SLUG}.localhost", f"/chat/{conversation.pk}/"))
        expect(page.get_by_test_id("chat-writing")).to_contain_text("it will show here once it is done")
        page.get_by_test_id("chat-input").fill("And at S002?")
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            Message.objects.create(conversation=conversation, role="assistant", content="S001 stands at **2.31 m**.")
        connection.set_schema_to_public()
        redis_client().delete(hold)  # the turn ends
        messages = page.get_by_test_id("messages")
        expect(messages.locator(".bubble.assistant strong")).to_have_text("2.31 m", timeout=10_000)
        expect(page.get_by_test_id("chat-writing")).to_have_count(0)
        expect(page.get_by_test_id("chat-regenerate")).to_be_visible()
        expect(page.get_by_test_id("chat-input")).to_have_value("And at S002?")
    finally:
        redis_client().delete(hold)


def test_scrolled_up_while_a_reply_is_written_elsewhere_the_page_shows_it_where_the_reader_was(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object
) -> None:
    """The page reloads itself to show a reply written elsewhere: it opened at the end again, losing the reader's
    place in the earlier messages."""
    from apps.accounts.models import User
    from apps.chat import selectors
    from apps.chat.models import Conversation, Message
    from apps.usage.scripts import redis_client

    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        conversation = Conversation.objects.create(user=User.objects.get(email=ADMIN), title="Long")
        for number in range(12):
            Message.objects.create(conversation=conversation, role="user", content=f"Question {number}")
            Message.objects.create(conversation=conversation, role="assistant", content="An answer.\n\n" * 6)
        Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
    connection.set_schema_to_public()
    hold = selectors.turn_hold_key("t_chat_flow", conversation.pk)
    redis_client().set(hold, "the streaming request", px=60_000)
    try:
        page = chat_page(browser, web_server, "en")
        page.goto(web_server.url(f"{SLUG}.localhost", f"/chat/{conversation.pk}/"))
        expect(page.get_by_test_id("chat-writing")).to_be_visible()
        messages = page.get_by_test_id("messages")
        assert messages.evaluate("list => list.scrollTop") > 0  # opened at the end
        messages.hover()
        page.mouse.wheel(0, -10_000)  # up to the first question
        page.wait_for_function("list => list.scrollTop === 0", arg=messages.element_handle())
        with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
            Message.objects.create(conversation=conversation, role="assistant", content="S001 stands at **2.31 m**.")
        connection.set_schema_to_public()
        redis_client().delete(hold)
        expect(messages.locator(".bubble.assistant strong")).to_have_text("2.31 m", timeout=10_000)
        expect(page.get_by_test_id("chat-send")).to_be_enabled()  # the reloaded page's script has run
        assert messages.evaluate("list => list.scrollTop") == 0
        page.reload()  # a reload of the reader's own opens at the end, as before
        page.wait_for_function("list => list.scrollTop > 0", arg=page.get_by_test_id("messages").element_handle())
    finally:
        redis_client().delete(hold)


def offer_models(django_db_blocker: object, url: str, models: list[str]) -> None:
    """The workspace's own model server at ``url`` offers ``models``, as its admin sets them (the first the default)."""
    from apps.llm.services import model_provider_save

    with django_db_blocker.unblock(), schema_context("t_chat_flow"):  # type: ignore[attr-defined]
        model_provider_save(actor=TEST_ACTOR, base_url=url, model_ids=models, api_key="test")
    connection.set_schema_to_public()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("access_changed", "Your access to this workspace changed while this reply was being written"),
        ("tenant_suspended", "This workspace is suspended. Contact its administrator."),
        ("tenant_cancelled", "This workspace has been cancelled."),
    ],
)
def test_a_turn_stopped_because_the_member_or_workspace_changed_offers_nothing_more_to_ask(
    browser: Browser, web_server: WebServer, workspace: None, code: str, words: str
) -> None:
    """Demoted to viewer, deactivated, or the workspace suspended or cancelled while a reply was written: the page
    offered "Try again" and "Edit" and kept the input, each refused with a 403 and the question handed back."""
    page = chat_page(browser, web_server, "en")
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible(timeout=15_000)
    stopped = {"code": code, "message": words, "message_id": 3, "question_id": 1, "title": "hello", "html": ""}
    page.context.route(  # the Regenerate's turn stops between two calls
        "**/api/conversations/*/retry",
        lambda route: route.fulfill(content_type="text/event-stream", body=event_stream([("error", stopped)])),
    )
    page.get_by_test_id("chat-regenerate").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("The reply failed: " + words)
    expect(page.get_by_test_id("chat-retry")).to_have_count(0)
    expect(page.get_by_test_id("chat-regenerate")).to_have_count(0)
    expect(page.get_by_test_id("chat-edit")).to_have_count(0)
    expect(page.get_by_test_id("chat-input")).to_be_disabled()
    expect(page.get_by_test_id("chat-send")).to_be_disabled()
    refusal = page.get_by_test_id("chat-refusal")
    expect(refusal).to_contain_text(words)  # why, over the input
    reload = code == "access_changed"  # to the page the member's role now gets (a viewer's, or the login page)
    expect(page.get_by_test_id("chat-reload")).to_have_count(1 if reload else 0)
    if reload:
        page.get_by_test_id("chat-reload").click()
        expect(page.get_by_test_id("chat-send")).to_be_enabled()  # an admin still, here
        expect(page.get_by_test_id("chat-refusal")).to_be_hidden()


def test_a_model_taken_off_the_list_mid_turn_is_no_longer_offered(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object, demo_model_url: str
) -> None:
    """The picker offered the withdrawn model still, and sent it with the next question or "Try again": refused,
    unknown_model. It offers what the workspace offers now, its default chosen, and none for a single model."""
    offer_models(django_db_blocker, demo_model_url, ["hydronet-demo", "qwen2.5-7b"])
    page = chat_page(browser, web_server, "en")
    picker = page.locator("select[name=model]")
    picker.select_option("qwen2.5-7b")
    withdrawn = "The model “qwen2.5-7b” was taken off this workspace's list while this reply was being written"
    stopped = {"code": "model_unavailable", "message": withdrawn, "message_id": 2, "question_id": 1, "html": ""}
    answer_turns_with(page, event_stream([("token", {"text": "S001 is"}), ("error", stopped)]))
    offer_models(django_db_blocker, demo_model_url, ["hydronet-demo", "llama3-8b"])  # while the turn runs
    page.get_by_test_id("chat-input").fill("S001?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text(withdrawn)
    expect(picker.locator("option")).to_have_text(["hydronet-demo", "llama3-8b"])
    expect(picker).to_have_value("hydronet-demo")
    expect(page.get_by_test_id("chat-retry")).to_be_visible()  # asked again, another model answers
    expect(page.get_by_test_id("chat-input")).to_be_enabled()

    offer_models(django_db_blocker, demo_model_url, ["hydronet-demo"])  # one model left: no choice to offer
    page.get_by_test_id("chat-input").fill("S002?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply")).to_have_count(2)
    expect(picker).to_have_count(0)
    expect(page.get_by_test_id("chat-send")).to_be_enabled()
    page.context.unroute("**/api/conversations/*/messages")
    page.get_by_test_id("chat-input").fill("hello")
    with page.expect_request("**/api/conversations/*/messages") as asked:
        page.get_by_test_id("chat-send").click()
    assert "model" not in (asked.value.post_data_json or {})  # the conversation's model, else the default
    answer = page.get_by_test_id("assistant-reply").last
    expect(answer).to_contain_text("offline demo model", timeout=15_000)
    expect(page.get_by_test_id("chat-refusal")).to_be_hidden()


def test_a_model_taken_off_the_list_since_the_page_opened_is_no_longer_offered(
    browser: Browser, web_server: WebServer, workspace: None, django_db_blocker: object, demo_model_url: str
) -> None:
    """Refused for its model (unknown_model), the question came back with a picker that still chose that model."""
    offer_models(django_db_blocker, demo_model_url, ["hydronet-demo", "qwen2.5-7b"])
    page = chat_page(browser, web_server, "en")
    picker = page.locator("select[name=model]")
    picker.select_option("qwen2.5-7b")
    offer_models(django_db_blocker, demo_model_url, ["hydronet-demo", "llama3-8b"])
    page.get_by_test_id("chat-input").fill("hello")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-refusal")).to_contain_text("qwen2.5-7b")
    expect(page.get_by_test_id("chat-input")).to_have_value("hello")
    expect(picker.locator("option")).to_have_text(["hydronet-demo", "llama3-8b"])
    expect(picker).to_have_value("hydronet-demo")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-reply").last).to_contain_text("offline demo model", timeout=15_000)
    expect(page.get_by_test_id("chat-refusal")).to_be_hidden()
