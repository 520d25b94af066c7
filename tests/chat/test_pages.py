"""The chat, tools and model-server pages: who sees them, what their forms do, in both languages."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import Role
from apps.accounts.permissions import Perm, role_has
from apps.chat.models import Conversation, Message
from apps.core.crypto import decrypt
from apps.llm.models import ModelProvider
from apps.mcp.models import McpService
from apps.tenants.models import Tenant
from tests.accounts.test_pages import logged_in
from tests.conftest import ADMIN_PASSWORD, TenantFixture, make_member

pytestmark = pytest.mark.django_db

PAGES = {
    "/chat/": (Perm.VIEW_OWN_CONVERSATIONS, "nav-chat"),
    "/services/": (Perm.USE_MCP_SERVICES, "nav-services"),
    "/settings/model/": (Perm.MANAGE_SERVICES, "nav-model"),
}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER, Role.VIEWER])
@pytest.mark.parametrize("path", list(PAGES))
def test_pages_follow_the_permission_map(tenant_alpha: TenantFixture, role: str, path: str) -> None:
    permission, nav = PAGES[path]
    client = logged_in(tenant_alpha, role)
    response = client.get(path)
    dashboard = client.get("/dashboard/").content.decode()
    if role_has(role, permission):
        assert response.status_code == 200
        assert f'data-testid="{nav}"' in dashboard
    else:
        assert response.status_code == 403
        assert str(permission) in response.content.decode()
        assert f'data-testid="{nav}"' not in dashboard


@pytest.mark.parametrize("path", [*PAGES, "/chat/1/"])
def test_pages_need_a_login(tenant_alpha: TenantFixture, path: str) -> None:
    response = tenant_alpha.client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize(
    ("language", "expected"),
    [("zh-hans", ["新对话", "发送", "工具（MCP 服务）", "测试连接", "模型服务器", "搜索对话"]),
     ("en", ["New conversation", "Send", "Tools (MCP services)", "Test connection", "Model server",
             "Search conversations"])],
)  # fmt: skip
def test_the_pages_speak_both_languages(
    tenant_alpha: TenantFixture, hydrology: Any, language: str, expected: list[str]
) -> None:
    client = logged_in(tenant_alpha, Role.ADMIN)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = language
    text = "".join(client.get(path).content.decode() for path in PAGES)
    for phrase in expected:
        assert phrase in text


def member_and_client(tenant: TenantFixture) -> tuple[Any, Client]:
    """A new member (role user), and a client logged in as them."""
    member = make_member(tenant, Role.USER)
    client = tenant.client(HTTP_ACCEPT_LANGUAGE="en")
    assert client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD}).status_code == 302
    return member, client


class TestChatPage:
    def test_a_reply_that_stopped_early_says_so_on_the_page_and_in_the_download(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """Stopped by its member or left by its client, it is stored the same: words that fit both (the page,
        watching, says "Stopped" or "cut short" of what it saw happen)."""
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
            Message.objects.create(
                conversation=conversation, role="assistant", content="S001 is at", status="incomplete"
            )
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        assert "This reply stopped before it was complete." in page
        assert "was cut short" not in page.split('data-testid="messages"')[1]
        download = client.get(f"/api/conversations/{conversation.pk}/export").content.decode()
        assert "This reply stopped before it was complete." in download

    def test_an_empty_answer_says_so_and_a_round_that_only_called_tools_shows_nothing(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A model that answered nothing left its question unanswered on the page, with no word of why (and while
        the turn streamed, an empty bubble whose Copy button copied nothing)."""
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
            call = {"id": "c1", "name": "hydrology__get_water_levels", "arguments": "{}"}
            Message.objects.create(conversation=conversation, role="assistant", content="", tool_calls=[call])
            Message.objects.create(conversation=conversation, role="tool", service="hydrology",
                                   tool="get_water_levels", tool_call_id="c1", content="[]", arguments={})  # fmt: skip
            Message.objects.create(conversation=conversation, role="assistant", content="")
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        messages = page.split('data-testid="messages"')[1]
        assert messages.count('class="bubble assistant') == 1  # the answer; the round that called the tool is none
        assert messages.count('data-testid="empty-answer"') == 1
        assert ">The model's answer was empty.<" in messages
        assert 'data-i18n-empty-answer="The model\'s answer was empty."' in page  # for static/js/chat.js

    def test_a_failed_reply_reads_as_one_sentence_in_chinese(self, tenant_alpha: TenantFixture) -> None:
        """ "回复失败：…", not "回复失败： …": the error goes inside the translated sentence, on the page, in the
        download and in what the page's script writes for a turn that fails while it watches."""
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
            Message.objects.create(conversation=conversation, role="assistant", content="", status="error",
                                   error="模型服务器返回 500。")  # fmt: skip
        page = client.get(f"/chat/{conversation.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
        assert "回复失败：模型服务器返回 500。" in page
        assert 'data-i18n-error="回复失败：{error}"' in page
        download = client.get(f"/api/conversations/{conversation.pk}/export", HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert "*回复失败：模型服务器返回 500。*" in download.content.decode()

    def test_an_own_conversation_with_sanitized_markdown_and_tool_panels(self, tenant_alpha: TenantFixture) -> None:
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="<b>hi</b>")
            Message.objects.create(conversation=conversation, role="tool", service="hydrology",
                                   tool="get_water_levels", arguments={"station": "S001", "名": None},
                                   content="<img src=x onerror=alert(1)>")  # fmt: skip
            Message.objects.create(conversation=conversation, role="assistant",
                                   content="**S001** is at 2.1 m <script>alert(1)</script>")  # fmt: skip
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        assert "<strong>S001</strong>" in page
        assert "<script>alert(1)</script>" not in page
        assert "<img src=x" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "&lt;b&gt;hi&lt;/b&gt;" in page
        assert 'data-testid="tool-panel"' in page
        assert "get_water_levels" in page
        # The arguments as JSON, as the page shows them while the turn streams (JSON.stringify(..., null, 2)).
        shown = page.split('data-testid="tool-arguments">')[1].split("</pre>")[0]
        assert json.loads(html.unescape(shown)) == {"station": "S001", "名": None}
        assert "\n  &quot;station&quot;: &quot;S001&quot;" in shown  # indented, not a Python dict
        assert 'data-testid="chat-form"' in page
        assert 'data-testid="chat-rename"' in page  # one's own: rename and delete
        assert 'data-testid="chat-delete"' in page
        assert f'href="/api/conversations/{conversation.pk}/export" download' in page
        # The conversation's messages are not taken for the messages framework's notices (base.html).
        assert "&lt;Message:" not in page
        assert page.count("**S001**") == 0
        assert page.count("<strong>S001</strong>") == 1

    def test_the_sidebar_searches_titles_and_says_when_it_shows_only_the_latest(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from apps.chat import views

        monkeypatch.setattr(views, "SIDEBAR_CONVERSATIONS", 3)
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            for title in ("Flood 2024 review", "Pump station S003", "Rainfall June", "Reservoir levels"):
                Conversation.objects.create(user=member, title=title)
            Conversation.objects.create(user=make_member(tenant_alpha, Role.USER), title="Someone else's flood")

        def sidebar(query: str = "") -> str:
            page = client.get("/chat/", {"q": query} if query else {}).content.decode()
            return page.split('data-testid="conversations"')[1].split("</aside>")[0]

        latest = sidebar()
        assert "Reservoir levels" in latest
        assert "Flood 2024 review" not in latest  # the oldest of four, past the three shown
        assert "The 3 most recent are shown; search to find the others." in latest
        found = sidebar("FLOOD")
        assert "Flood 2024 review" in found
        assert "Someone else" not in found  # only one's own
        assert "Reservoir" not in found
        assert "most recent are shown" not in found
        assert "No conversation matches." in sidebar("nothing like this")
        assert client.get("/chat/", {"q": "x" * 5000}).status_code == 200
        assert client.get("/chat/", {"q": "flo\x00od"}).status_code == 200  # PostgreSQL refuses NUL in a pattern

    def test_a_conversation_opened_from_a_search_keeps_the_search(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each conversation opened from a search's results came back to the whole list, the search box empty: the
        search had to be typed again for the next one."""
        from apps.chat import views

        monkeypatch.setattr(views, "PAGE_MESSAGES", 1)
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            found = [Conversation.objects.create(user=member, title=f"S001 & levels {n}") for n in (1, 2)]
            other = Conversation.objects.create(user=member, title="Rainfall June")
            for content in ("levels at S001?", "more?"):
                Message.objects.create(conversation=found[0], role="user", content=content)
        query = "q=S001+%26+levels"
        results = client.get("/chat/", {"q": "S001 & levels"}).content.decode()
        for conversation in found:
            assert f'href="/chat/{conversation.pk}/?{query.replace("&", "&amp;")}"' in results
        opened = client.get(f"/chat/{found[0].pk}/?{query}").content.decode()
        sidebar = opened.split('data-testid="conversation-search"')[1].split("</aside>")[0]
        assert 'value="S001 &amp; levels"' in sidebar
        assert f'href="/chat/{found[1].pk}/?{query.replace("&", "&amp;")}"' in sidebar
        assert "Rainfall June" not in sidebar
        assert f"/chat/{other.pk}/" not in sidebar
        admin = logged_in(tenant_alpha, Role.ADMIN)  # everyone's conversations, searched: both are kept
        everyone = admin.get("/chat/", {"all": "1", "q": "S001 & levels"}).content.decode()
        assert f'href="/chat/{found[0].pk}/?all=1&amp;{query.replace("&", "&amp;")}"' in everyone
        assert f'href="/chat/{other.pk}/' not in everyone
        assert f'href="?show=2&amp;{query.replace("&", "&amp;")}"' in opened  # "show earlier messages"

    def test_an_edited_questions_answer_is_dimmed_when_the_question_is_not_shown(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A long conversation opens at its latest messages; the answer of an edited question that is cut off
        above still shows as replaced, and the model does not read it."""
        from apps.chat import views
        from apps.chat.selectors import model_history

        monkeypatch.setattr(views, "PAGE_MESSAGES", 3)
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            old = Message.objects.create(conversation=conversation, role="user", content="levels at S001")
            Message.objects.create(conversation=conversation, role="assistant", content="S001 is at 2.1 m")
            Message.objects.create(conversation=conversation, role="user", content="levels at S002", replaces=old)
            Message.objects.create(conversation=conversation, role="assistant", content="S002 is at 3.4 m")
            history = model_history(conversation, limit=3)  # from the new question on
            assert "S001" not in json.dumps(history)
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        assert "levels at S001" not in page  # cut off above
        dimmed = re.findall(
            r'class="bubble assistant replaced" data-testid="assistant-reply">\s*<div class="markdown">(.*?)</div>',
            page,
            re.S,
        )
        assert dimmed == ["<p>S001 is at 2.1 m</p>"]

    def test_the_sidebar_finds_what_was_said_and_shows_where(self, tenant_alpha: TenantFixture) -> None:
        """A search looks in the questions and answers too, and shows the words around the match, escaped."""
        member, client = member_and_client(tenant_alpha)
        long_answer = "Levels rose all week. " * 10 + "Rainfall at <S002> was 12 mm, " + "then it dried up. " * 10
        with schema_context(tenant_alpha.tenant.schema_name):
            answered = Conversation.objects.create(user=member, title="Weekly report")
            Message.objects.create(conversation=answered, role="user", content="How was the week?")
            Message.objects.create(conversation=answered, role="assistant", content=long_answer)
            titled = Conversation.objects.create(user=member, title="Rainfall June")
            Message.objects.create(conversation=titled, role="user", content="rainfall?")

        def sidebar(query: str) -> str:
            page = client.get("/chat/", {"q": query}).content.decode()
            return page.split('data-testid="conversations"')[1].split("</aside>")[0]

        found = sidebar("RAINFALL AT")
        assert "Weekly report" in found
        assert "…Levels rose all week. Rainfall at &lt;S002&gt;" not in found  # the window starts near the match
        match = found.split('data-testid="conversation-match">')[1].split("</span>")[0]
        assert match.startswith("…")
        assert match.endswith("…")
        assert "<mark>Rainfall at</mark> &lt;S002&gt; was 12 mm" in match
        assert len(found.split('data-testid="conversation-match"')) == 2  # the titled one shows no window
        assert "Rainfall June" not in found
        both = sidebar("rainfall")
        assert "Rainfall June" in both
        assert "Weekly report" in both
        assert sidebar("how was the WEEK").count('data-testid="conversation-match"') == 1  # a question too
        for nul in ("\x00", " \x00 ", "\x00\x00"):  # dropped, as the query drops it: every conversation
            listed = sidebar(nul)
            assert "Weekly report" in listed
            assert "Rainfall June" in listed
        assert "Weekly report" in sidebar("WEEK\x00")

    def test_an_admin_lists_everyones_conversations_read_only_and_a_user_cannot(
        self, tenant_alpha: TenantFixture
    ) -> None:
        owner = make_member(tenant_alpha, Role.USER, email="owner-of-levels@example.com")
        with schema_context(tenant_alpha.tenant.schema_name):
            theirs = Conversation.objects.create(user=owner, title="Their levels")

        admin = logged_in(tenant_alpha, Role.ADMIN)
        own = admin.get("/chat/").content.decode()
        assert 'data-testid="conversation-scope"' in own
        assert "Their levels" not in own
        everyone = admin.get("/chat/", {"all": "1"}).content.decode()
        assert "Their levels" in everyone
        assert "owner-of-levels@example.com" in everyone
        assert f"/chat/{theirs.pk}/?all=1" in everyone
        assert "Their levels" in admin.get("/chat/", {"all": "1", "q": "their"}).content.decode()
        assert "Their levels" not in admin.get("/chat/", {"all": "1", "q": "nothing"}).content.decode()
        opened = admin.get(f"/chat/{theirs.pk}/", {"all": "1"}).content.decode()
        assert 'data-testid="chat-form"' not in opened  # read-only
        assert 'data-testid="chat-rename"' not in opened
        assert 'data-testid="chat-delete"' not in opened
        assert f'href="/api/conversations/{theirs.pk}/export" download' in opened  # reading includes downloading
        assert admin.get(f"/api/conversations/{theirs.pk}/export").status_code == 200  # with the session

        user = logged_in(tenant_alpha, Role.USER)
        page = user.get("/chat/", {"all": "1"}).content.decode()
        assert 'data-testid="conversation-scope"' not in page
        assert "Their levels" not in page

    def test_a_long_conversation_opens_at_its_latest_messages(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from apps.chat import views

        monkeypatch.setattr(views, "PAGE_MESSAGES", 3)
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Long")
            for n in range(5):
                Message.objects.create(conversation=conversation, role="user", content=f"question number {n}")
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        assert [n for n in range(5) if f"question number {n}" in page] == [2, 3, 4]
        assert "2 earlier messages are not shown." in page
        assert 'href="?show=6"' in page  # "Show earlier messages"
        full = client.get(f"/chat/{conversation.pk}/", {"show": "6"}).content.decode()
        assert [n for n in range(5) if f"question number {n}" in full] == [0, 1, 2, 3, 4]
        assert 'data-testid="earlier-messages"' not in full

    def test_a_very_long_conversation_shows_at_most_so_many_messages(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The old "Show the whole conversation" rendered all of it: 62 MB of HTML and 2.3 s for 3,000 messages with
        tool results. "Show earlier messages" shows a page more each time, up to a bound; the download has the rest."""
        from apps.chat import views

        monkeypatch.setattr(views, "PAGE_MESSAGES", 3)
        monkeypatch.setattr(views, "SHOWN_MESSAGES_MAX", 6)
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Very long")
            Message.objects.bulk_create(
                Message(conversation=conversation, role="user", content=f"question number {n}.") for n in range(10)
            )

        def shown(query: dict[str, str]) -> tuple[list[int], str]:
            page = client.get(f"/chat/{conversation.pk}/", query).content.decode()
            return [n for n in range(10) if f"question number {n}." in page], page

        numbers, page = shown({})
        assert numbers == [7, 8, 9]
        assert 'href="?show=6"' in page
        numbers, page = shown({"show": "6"})
        assert numbers == [4, 5, 6, 7, 8, 9]
        assert "4 earlier messages are not shown." in page
        assert 'data-testid="show-earlier"' not in page  # the bound: no more on the page
        assert "The download has the whole conversation." in page
        for asked in ("7", "1000000", "99999999999"):  # beyond the bound
            assert shown({"show": asked})[0] == [4, 5, 6, 7, 8, 9]
        for asked in ("-5", "x", "", "６", "1"):  # not a number, or less than a page
            assert shown({"show": asked})[0] == [7, 8, 9]
        assert shown({"full": "1"})[0] == [7, 8, 9]  # the old "whole conversation" link shows the first page

    @pytest.mark.parametrize(
        ("turn", "offered", "replaced"),
        [
            ([("user", "complete")], "chat-retry", 0),  # the model server never answered
            ([("user", "complete"), ("assistant", "error")], "chat-retry", 0),
            ([("user", "complete"), ("assistant", "incomplete")], "chat-retry", 0),  # stopped
            ([("user", "complete"), ("assistant", "error"), ("assistant", "complete")], "chat-regenerate", 0),
            ([("user", "complete"), ("assistant", "complete")], "chat-regenerate", 0),
            ([("user", "complete"), ("assistant", "incomplete"), ("assistant", "complete")], "chat-regenerate", 1),
            ([("user", "complete"), ("assistant", "complete"), ("assistant", "complete")], "chat-regenerate", 1),
            ([("user", "complete"), ("assistant", "complete"), ("assistant", "error")], "chat-regenerate", 0),
            ([], None, 0),
        ],
    )
    def test_the_last_question_can_be_answered_again(
        self, tenant_alpha: TenantFixture, turn: list[tuple[str, str]], offered: str | None, replaced: int
    ) -> None:
        """ "Try again" after a turn without its answer, "Regenerate" after a complete one; a replaced answer
        is shown as such."""
        member, client = member_and_client(tenant_alpha)
        viewer = make_member(tenant_alpha, Role.VIEWER)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversations = [Conversation.objects.create(user=owner, title="Levels") for owner in (member, viewer)]
            for conversation in conversations:
                standing = None  # the last message that did not fail
                for role, status in turn:
                    # An assistant message after a reply is the turn answering it again: it names it, as
                    # conversation_retry stores it (a failed attempt names nothing).
                    again = role == "assistant" and status != "error" and standing and standing.role == "assistant"
                    message = Message.objects.create(conversation=conversation, role=role, status=status,
                                                     content="S001?", replaces=standing if again else None)  # fmt: skip
                    if status != "error":
                        standing = message
        own, viewers = conversations
        page = client.get(f"/chat/{own.pk}/").content.decode()
        for button in ("chat-retry", "chat-regenerate"):
            assert (f'data-testid="{button}"' in page) is (button == offered)
        assert page.count(' replaced" data-testid="assistant-reply">') == replaced
        # Only the owner, and only with create_conversation, as the API allows it.
        admin_view = logged_in(tenant_alpha, Role.ADMIN).get(f"/chat/{own.pk}/").content.decode()
        as_viewer = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
        as_viewer.post("/login/", {"username": viewer.email, "password": ADMIN_PASSWORD})
        for other in (admin_view, as_viewer.get(f"/chat/{viewers.pk}/").content.decode()):
            assert 'data-testid="chat-retry"' not in other
            assert 'data-testid="chat-regenerate"' not in other

    def test_another_members_conversation(self, tenant_alpha: TenantFixture) -> None:
        with schema_context(tenant_alpha.tenant.schema_name):
            owner = make_member(tenant_alpha, Role.USER)
            conversation = Conversation.objects.create(user=owner, title="Private")
        assert logged_in(tenant_alpha, Role.USER).get(f"/chat/{conversation.pk}/").status_code == 404
        admin_page = logged_in(tenant_alpha, Role.ADMIN).get(f"/chat/{conversation.pk}/")
        assert admin_page.status_code == 200  # all_conversations: read, not write
        assert 'data-testid="chat-form"' not in admin_page.content.decode()

    def test_another_tenants_conversation_is_a_404(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=make_member(tenant_alpha, Role.USER))
        assert logged_in(tenant_beta, Role.ADMIN).get(f"/chat/{conversation.pk}/").status_code == 404

    @pytest.mark.parametrize(
        ("language", "first"),
        [("zh-hans", "站点 S001 最近的水位是多少?"), ("en", "What are the latest water levels at station S001?")],
    )
    def test_a_new_chat_suggests_questions_in_the_pages_language(
        self, tenant_alpha: TenantFixture, language: str, first: str
    ) -> None:
        page = logged_in(tenant_alpha, Role.USER).get("/chat/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
        asked = re.findall(r'data-testid="chat-suggestion">([^<]+)<', page)
        assert len(asked) == 3
        assert asked[0] == first
        assert 'data-testid="chat-head" hidden' in page  # until the first question makes the conversation

    def test_a_new_chat_says_which_model_answers_and_that_no_tools_are_connected(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A new workspace's first chat answered the demo question from the model alone, with nothing on the page
        saying that no tools were connected, or where to connect them."""
        admin = logged_in(tenant_alpha, Role.ADMIN).get("/chat/").content.decode()
        setup = admin.split('data-testid="chat-setup">')[1].split("</p>")[0]
        assert "the platform's default model." in setup
        assert 'data-testid="chat-no-tools"' in setup
        assert 'href="/services/" data-testid="chat-tools-link"' in setup
        user = logged_in(tenant_alpha, Role.USER).get("/chat/").content.decode()
        assert 'data-testid="chat-no-tools"' in user
        assert 'data-testid="chat-tools-link"' not in user  # a user cannot connect one
        assert "An admin of your workspace can connect one." in user

    def test_a_new_chat_counts_the_tools_it_can_use(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        page = logged_in(tenant_alpha, Role.ADMIN).get("/chat/").content.decode()
        setup = page.split('data-testid="chat-setup">')[1].split("</p>")[0]
        assert f"It can use {len(hydrology.offered_tools)} tools of your connected services." in setup
        assert 'data-testid="chat-no-tools"' not in setup
        assert "Manage tools" in setup

    def test_a_viewer_reads_but_has_no_form(self, tenant_alpha: TenantFixture) -> None:
        page = logged_in(tenant_alpha, Role.VIEWER).get("/chat/").content.decode()
        assert 'data-testid="chat-form"' not in page
        assert 'data-testid="chat-suggestion"' not in page
        assert "Ask about your water network" not in page  # nothing offered that a viewer cannot do
        assert 'data-testid="new-conversation"' not in page
        assert 'data-testid="chat-head"' not in page
        # What a viewer may do (apps/accounts/permissions.py): read their own conversations, from before the role.
        assert "Your role can read your own earlier conversations but cannot start new ones." in page
        assert "Pick a conversation on the left to read it." in page  # not an empty box where the chat would be
        viewer = make_member(tenant_alpha, Role.VIEWER)
        with schema_context(tenant_alpha.tenant.schema_name):
            own = Conversation.objects.create(user=viewer, title="Kept from before")
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
        assert client.post("/login/", {"username": viewer.email, "password": ADMIN_PASSWORD}).status_code == 302
        opened = client.get(f"/chat/{own.pk}/").content.decode()
        assert "Kept from before" in opened
        assert 'data-testid="chat-rename"' not in opened  # the API refuses a viewer both (403)
        assert 'data-testid="chat-delete"' not in opened

    def test_a_failed_tool_call_and_its_arguments_read_as_while_the_turn_streamed(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """static/js/chat.js says "failed · 98 ms" and sorts the arguments' keys; so does the page after a reload
        (not "98 ms" alone, nor jsonb's order, which puts shorter keys first)."""
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
            Message.objects.create(conversation=conversation, role="tool", service="hydrology",
                                   tool="get_water_levels", arguments={"zz": 1, "aaa": 2}, content="boom",
                                   status="error", duration_ms=98)  # fmt: skip
        page = html.unescape(client.get(f"/chat/{conversation.pk}/").content.decode())
        assert '<span class="muted tool-state">failed · 98 ms</span>' in page
        assert '{\n  "aaa": 2,\n  "zz": 1\n}' in page

    def test_a_question_keeps_its_line_breaks_as_text(self, tenant_alpha: TenantFixture) -> None:
        """Shown as static/js/chat.js shows it while the turn streams: the text itself, its line breaks kept
        by CSS (white-space: pre-wrap), with nothing around it inside the bubble."""
        member, client = member_and_client(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at\nS001 <b>now</b>?")
        page = client.get(f"/chat/{conversation.pk}/").content.decode()
        assert '">Levels at\nS001 &lt;b&gt;now&lt;/b&gt;?</div>' in page
        assert "<br>" not in page.split('data-testid="messages"')[1]

    def test_the_message_limit_is_the_setting(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.CHAT_MAX_MESSAGE_CHARS = 1234
        assert 'maxlength="1234"' in logged_in(tenant_alpha, Role.USER).get("/chat/").content.decode()


class TestServicesPage:
    def test_add_test_disable_enable_remove(self, tenant_alpha: TenantFixture, demo_mcp_url: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        added = client.post("/services/", {"name": "Hydrology", "url": demo_mcp_url, "type": "streamable-http",
                                           "timeout_seconds": 10, "headers": "X-Token: s3cret"})  # fmt: skip
        assert added.status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            service = McpService.objects.get()
            assert "s3cret" not in service.secret_headers
            assert "s3cret" in decrypt(service.secret_headers)
        assert client.post(f"/services/{service.pk}/test/").status_code == 302
        page = client.get("/services/").content.decode()
        assert "answers with 4 tools" in page
        assert "get_water_levels" in page
        assert "s3cret" not in page
        said = client.post(f"/services/{service.pk}/disable/", follow=True).content.decode()
        assert "Hydrology is disabled: chats no longer use its tools." in said  # what was done, not "Done."
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get().is_active is False
        said = client.post(f"/services/{service.pk}/enable/", follow=True).content.decode()
        assert "Hydrology is enabled: chats may use its tools." in said
        said = client.post(f"/services/{service.pk}/delete/", follow=True).content.decode()
        assert "Hydrology is removed." in said
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not McpService.objects.exists()

    @pytest.mark.parametrize(
        ("url", "message"),
        [("http://10.0.0.5/mcp", "private network address"), ("ftp://mcp.example.com/", "use https or http")],
    )
    def test_a_bad_url_is_a_400_and_adds_nothing(
        self, tenant_alpha: TenantFixture, settings: Any, url: str, message: str
    ) -> None:
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post("/services/", {"name": "Bad", "url": url, "type": "streamable-http",
                                              "timeout_seconds": 10})  # fmt: skip
        assert response.status_code == 400
        assert message in response.content.decode()
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not McpService.objects.exists()

    def test_a_server_that_is_not_mcp_shows_why(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        client.post("/services/", {"name": "Model", "url": demo_model_url, "type": "streamable-http",
                                   "timeout_seconds": 5})  # fmt: skip
        with schema_context(tenant_alpha.tenant.schema_name):
            service = McpService.objects.get()
        page = client.post(f"/services/{service.pk}/test/", follow=True).content.decode()
        assert "Model did not pass the test: what went wrong is below." in card_of(page, service.pk)
        with schema_context(tenant_alpha.tenant.schema_name):
            service.refresh_from_db()
        assert service.last_error
        assert page.count(html.escape(service.last_error)) == 1  # on the card, not again in the page's message

    @pytest.mark.parametrize(
        ("language", "said"), [("en", "Hydrology answers with 4 tools."), ("zh-hans", "Hydrology 返回了 4 个工具。")]
    )
    def test_a_tests_result_is_on_its_services_card_not_atop_the_page(
        self, tenant_alpha: TenantFixture, hydrology: Any, language: str, said: str
    ) -> None:
        """On a long page the result of testing the last service was a message above the title, out of sight: the
        button seemed to do nothing. The page now opens at the card, which says it, for screen readers too."""
        with schema_context(tenant_alpha.tenant.schema_name):
            other = McpService.objects.create(name="Archive", slug="archive", url=hydrology.url)
        client = logged_in(tenant_alpha, Role.ADMIN)
        client.defaults["HTTP_ACCEPT_LANGUAGE"] = language
        response = client.post(f"/services/{hydrology.pk}/test/")
        assert response["Location"] == f"/services/#service-{hydrology.pk}"
        page = client.get(response["Location"]).content.decode()
        card = card_of(page, hydrology.pk)
        status = card.split('role="status"', 1)[1].split("</div></div>", 1)[0]
        assert said in status
        assert said not in page.split("<h1>", 1)[0]  # not atop the page as well
        assert said not in card_of(page, other.pk)
        assert said not in client.get("/services/").content.decode()  # said once
        delete = client.post(f"/services/{other.pk}/delete/")
        assert delete["Location"] == "/services/"  # a card gone: said atop the page
        assert "Archive" in client.get("/services/").content.decode().split("<h1>", 1)[0]

    @pytest.mark.parametrize(
        ("action", "active", "said"),
        [("disable", True, "Hydrology is disabled: chats no longer use its tools."),
         ("enable", False, "Hydrology is enabled: chats may use its tools.")],
    )  # fmt: skip
    def test_enabling_or_disabling_is_said_on_the_services_card(
        self, tenant_alpha: TenantFixture, hydrology: Any, action: str, active: bool, said: str
    ) -> None:
        """They said it atop the page, out of sight on a long page, as "Test connection" once did."""
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(pk=hydrology.pk).update(is_active=active)
            other = McpService.objects.create(name="Archive", slug="archive", url=hydrology.url)
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post(f"/services/{hydrology.pk}/{action}/")
        assert response["Location"] == f"/services/#service-{hydrology.pk}"
        page = client.get(response["Location"]).content.decode()
        status = card_of(page, hydrology.pk).split('role="status"', 1)[1].split("</div></div>", 1)[0]
        assert said in status
        assert said not in page.split("<h1>", 1)[0]
        assert said not in card_of(page, other.pk)

    def test_an_enable_refused_is_said_on_the_services_card(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        """Past the plan's limit of enabled services, the refusal is said where the admin clicked."""
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(pk=hydrology.pk).update(is_active=False)
        Tenant.objects.filter(pk=tenant_alpha.tenant.pk).update(max_mcp_services_override=0)
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post(f"/services/{hydrology.pk}/enable/")
        assert response["Location"] == f"/services/#service-{hydrology.pk}"
        page = client.get(response["Location"]).content.decode()
        status = card_of(page, hydrology.pk).split('role="status"', 1)[1].split("</div></div>", 1)[0]
        assert "The workspace allows 0 active MCP services." in status
        assert "The workspace allows" not in page.split("<h1>", 1)[0]

    @pytest.mark.parametrize(("count", "folded"), [(8, False), (9, True)])
    def test_a_services_tools_fold_when_there_are_many(
        self, tenant_alpha: TenantFixture, count: int, folded: bool
    ) -> None:
        """40 tools made a page long: past 8 they are folded, and the fold says how many the model is offered."""
        tools = [{"name": f"tool_{n}", "description": "A.", "inputSchema": {"type": "object"}} for n in range(count)]
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.create(name="Many", slug="many", url="http://127.0.0.1:9/mcp", tools=tools,
                                      tools_refreshed_at=timezone.now(),
                                      config={"disabled_tools": ["tool_0"]})  # fmt: skip
            McpService.objects.create(name="One", slug="one", url="http://127.0.0.1:9/mcp", tools=tools[:1],
                                      tools_refreshed_at=timezone.now())  # fmt: skip
        page = logged_in(tenant_alpha, Role.ADMIN).get("/services/").content.decode()
        fold = re.search(r'data-testid="tools-fold"( open)?>\s*<summary>(.*?)<', page)
        assert fold is not None
        assert (fold.group(1) is None, fold.group(2)) == (folded, f"{count} tools, {count - 1} offered to the model")
        assert "<summary>1 tool, 1 offered to the model</summary>" in page
        assert page.count('data-testid="tools"') == 2  # the tables the other tests read, inside the folds


def card_of(page: str, service_id: int) -> str:
    """The services page's card of one service."""
    return page.split(f'id="service-{service_id}"', 1)[1].split('<div class="card service', 1)[0]


def kept_reference(page: str) -> str:
    """The hidden field's reference to the secret kept in the session; "" if there is none."""
    found = re.search(r'<input type="hidden" name="kept_secret"(?: value="([^"]*)")?', page)
    assert found is not None
    return found.group(1) or ""


class TestSecretsTypedIntoAFormWithErrors:
    """An API key or auth headers typed into a form that came back with an error were dropped silently (the key) or
    shown in the page again (the headers): the next save stored no key. Now they are kept for the form's next
    submission, in the session, encrypted, never in the page, and the field says so."""

    def test_the_model_servers_key(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"base_url": "ftp://models.example.com/v1", "model_ids": "m1", "is_active": "on"}
        refused = client.post("/settings/model/", {**form, "api_key": "sk-typed-once"})
        assert refused.status_code == 400
        page = html.unescape(refused.content.decode())
        assert "sk-typed-once" not in page
        assert "The key you typed is kept for this form but not shown" in page
        reference = kept_reference(page)
        assert reference
        assert "Leave empty to keep the stored key." not in page  # none is stored
        again = client.post("/settings/model/", {**form, "base_url": "not a url", "kept_secret": reference})
        assert again.status_code == 400  # wrong twice: still kept
        fixed = {**form, "base_url": demo_model_url, "kept_secret": kept_reference(again.content.decode())}
        assert client.post("/settings/model/", fixed).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert decrypt(ModelProvider.objects.get().api_key_encrypted) == "sk-typed-once"
        assert "An API key is stored (encrypted)." in client.get("/settings/model/").content.decode()

    def test_a_stored_key_is_kept_through_an_error_and_only_the_form_kept_for_gets_a_typed_one(
        self, tenant_alpha: TenantFixture, demo_model_url: str
    ) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"base_url": demo_model_url, "model_ids": "m1", "is_active": "on"}
        assert client.post("/settings/model/", {**form, "api_key": "sk-stored"}).status_code == 302
        assert "Leave empty to keep the stored key." in client.get("/settings/model/").content.decode()
        refused = client.post("/settings/model/", {**form, "model_ids": ""})  # no key typed: nothing kept
        assert refused.status_code == 400
        assert kept_reference(refused.content.decode()) == ""
        assert "Leave empty to keep the stored key." in refused.content.decode()
        assert client.post("/settings/model/", {**form, "name": "Ours"}).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert decrypt(ModelProvider.objects.get().api_key_encrypted) == "sk-stored"
        refused = client.post("/settings/model/", {**form, "model_ids": "", "api_key": "sk-abandoned"})
        assert kept_reference(refused.content.decode())
        assert client.post("/settings/model/", {**form, "kept_secret": "forged"}).status_code == 302
        assert client.post("/settings/model/", form).status_code == 302  # the page opened afresh
        with schema_context(tenant_alpha.tenant.schema_name):
            assert decrypt(ModelProvider.objects.get().api_key_encrypted) == "sk-stored"

    @pytest.mark.parametrize("path", ["/services/", "edit"])
    def test_an_mcp_services_headers(self, tenant_alpha: TenantFixture, hydrology: Any, path: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        path = f"/services/{hydrology.pk}/edit/" if path == "edit" else path
        form = {"name": "Gauges", "url": "ftp://mcp.example.com/", "type": "streamable-http", "timeout_seconds": 10}
        refused = client.post(path, {**form, "headers": "Authorization: Bearer typed-token"})
        assert refused.status_code == 400
        page = html.unescape(refused.content.decode())
        assert "typed-token" not in page
        assert "The headers you typed are kept for this form but not shown" in page
        fixed = {**form, "url": hydrology.url, "kept_secret": kept_reference(page)}
        assert client.post(path, fixed).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            saved = McpService.objects.get(name="Gauges")
        assert json.loads(decrypt(saved.secret_headers)) == {"Authorization": "Bearer typed-token"}

    def test_headers_that_are_the_error_are_not_kept(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"name": "Gauges", "url": hydrology.url, "type": "streamable-http", "timeout_seconds": 10}
        refused = client.post("/services/", {**form, "headers": "Authorization Bearer typed-token"})
        assert refused.status_code == 400
        assert "typed-token" not in refused.content.decode()
        assert kept_reference(refused.content.decode()) == ""

    def test_members_see_the_tools_but_cannot_change_them(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        user = logged_in(tenant_alpha, Role.USER)
        page = user.get("/services/").content.decode()
        assert "get_water_levels" in page
        loaded = timezone.localtime(hydrology.tools_refreshed_at).strftime("%Y-%m-%d %H:%M")
        assert f"{loaded} UTC+8" in page  # the settings' Asia/Shanghai, named
        assert 'data-testid="service-form"' not in page
        assert 'data-testid="test-service"' not in page
        user.post("/services/", {"name": "Sneaky", "url": "http://127.0.0.1:9/", "type": "sse", "timeout_seconds": 5})
        for action in ("disable", "delete", "test"):
            assert user.post(f"/services/{hydrology.pk}/{action}/").status_code == 403
        with schema_context(tenant_alpha.tenant.schema_name):
            assert list(McpService.objects.values_list("name", "is_active")) == [("Hydrology", True)]

    def test_past_the_plans_service_limit_the_page_says_so(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        from tests.usage.conftest import set_limits

        set_limits(Tenant.objects.get(pk=tenant_alpha.tenant.pk), plan="pro", max_mcp_services_override=1)
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post("/services/", {"name": "Second", "url": hydrology.url, "type": "streamable-http",
                                              "timeout_seconds": 10})  # fmt: skip
        assert response.status_code == 402
        page = response.content.decode()
        assert "The workspace allows 1 active MCP service." in page
        assert "<li>mcp_services</li>" not in page  # the quota's figures are not shown as problems
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.count() == 1

    def test_the_tools_tab_is_marked_on_each_of_its_pages(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        for path in ("/services/", f"/services/{hydrology.pk}/edit/"):
            page = client.get(path).content.decode()
            assert re.search(r'data-testid="nav-services" class="active"', page), path
            assert not re.search(r'data-testid="nav-chat" class="active"', page)

    def test_choose_the_tools_offered_to_the_model(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        edit = f"/services/{hydrology.pk}/edit/"
        page = client.get(edit).content.decode()
        assert 'data-testid="offered-tools"' in page

        def boxes(page: str) -> list[bool]:
            return [" checked" in box for box in re.findall(r'<input[^>]*name="offered_tools"[^>]*>', page)]

        assert boxes(page) == [True] * 4  # all offered
        base = {"name": "Hydrology", "url": hydrology.url, "type": "streamable-http", "timeout_seconds": 10}
        kept = ["list_stations", "get_rainfall", "get_flood_warning_levels"]
        assert client.post(edit, {**base, "offered_tools": kept}).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).disabled_tools == ["get_water_levels"]
        listed = client.get("/services/").content.decode()
        assert listed.count('data-testid="tool-off"') == 1
        assert "(not offered)" in listed
        assert sorted(boxes(client.get(edit).content.decode())) == [False, True, True, True]
        bad = client.post(edit, {**base, "offered_tools": [*kept, "drop_database"]})
        assert bad.status_code == 400  # not one of the choices
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).disabled_tools == ["get_water_levels"]

    def test_a_service_with_no_tool_offered_says_so(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        """Enabled, but with every tool unticked it offers the model nothing: its card says so."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert 'data-testid="no-tool-offered"' not in client.get("/services/").content.decode()
        base = {"name": "Hydrology", "url": hydrology.url, "type": "streamable-http", "timeout_seconds": 10}
        assert client.post(f"/services/{hydrology.pk}/edit/", base).status_code == 302  # none ticked
        page = client.get("/services/").content.decode()
        assert 'data-testid="no-tool-offered"' in page
        assert "None of this service's tools is offered to the model" in html.unescape(page)

    @pytest.mark.parametrize("path", ["/services/", "edit"])
    def test_every_refused_field_is_named_at_once(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any, path: str
    ) -> None:
        """A URL that is not one and a timeout of 0: both named on the first submit, not one per submit."""
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        client = logged_in(tenant_alpha, Role.ADMIN)
        path = f"/services/{hydrology.pk}/edit/" if path == "edit" else path
        response = client.post(path, {"name": "Bad", "url": "not a url", "type": "streamable-http",
                                      "timeout_seconds": 0})  # fmt: skip
        assert response.status_code == 400
        form = response.context["form"]
        assert set(form.errors) == {"url", "timeout_seconds"}
        with schema_context(tenant_alpha.tenant.schema_name):
            assert list(McpService.objects.values_list("name", flat=True)) == ["Hydrology"]

    def test_edit_a_service_rotating_its_headers(self, tenant_alpha: TenantFixture, demo_mcp_url: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        base = {"name": "Hydrology", "url": demo_mcp_url, "type": "streamable-http", "timeout_seconds": 10}
        client.post("/services/", {**base, "headers": "Authorization: Bearer old-token"})
        with schema_context(tenant_alpha.tenant.schema_name):
            service = McpService.objects.get()
        edit = f"/services/{service.pk}/edit/"
        page = client.get(edit).content.decode()
        assert 'data-testid="service-edit-form"' in page
        assert "old-token" not in page
        assert 'href="' + edit + '"' in client.get("/services/").content.decode()

        def stored() -> McpService:
            with schema_context(tenant_alpha.tenant.schema_name):
                return McpService.objects.get(pk=service.pk)

        assert client.post(edit, {**base, "name": "Hydrology 2", "timeout_seconds": 20}).status_code == 302
        assert (stored().name, stored().timeout_seconds) == ("Hydrology 2", 20)
        assert json.loads(decrypt(stored().secret_headers)) == {"Authorization": "Bearer old-token"}  # kept
        assert client.post(edit, {**base, "headers": "Authorization: Bearer new-token"}).status_code == 302
        assert json.loads(decrypt(stored().secret_headers)) == {"Authorization": "Bearer new-token"}
        assert client.post(edit, {**base, "clear_headers": "on"}).status_code == 302
        assert stored().secret_headers == ""

    def test_an_edit_with_a_bad_url_is_a_400_and_changes_nothing(
        self, tenant_alpha: TenantFixture, settings: Any, hydrology: Any
    ) -> None:
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post(f"/services/{hydrology.pk}/edit/", {"name": "Renamed", "url": "http://10.0.0.5/mcp",
                                                                    "type": "sse", "timeout_seconds": 10})  # fmt: skip
        assert response.status_code == 400
        assert "private network address" in response.content.decode()
        with schema_context(tenant_alpha.tenant.schema_name):
            unchanged = McpService.objects.get(pk=hydrology.pk)
        assert (unchanged.name, unchanged.url, unchanged.type) == (hydrology.name, hydrology.url, hydrology.type)
        assert unchanged.tools == hydrology.tools

    def test_only_admins_edit_and_only_their_own_tenants_services(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, hydrology: Any
    ) -> None:
        edit = f"/services/{hydrology.pk}/edit/"
        body = {"name": "Sneaky", "url": "http://127.0.0.1:9/", "type": "sse", "timeout_seconds": 5}
        assert logged_in(tenant_alpha, Role.USER).post(edit, body).status_code == 403
        assert logged_in(tenant_alpha, Role.USER).get(edit).status_code == 403
        assert logged_in(tenant_beta, Role.ADMIN).post(edit, body).status_code == 404
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).name == "Hydrology"

    def test_another_tenants_service_is_a_404(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, hydrology: Any
    ) -> None:
        beta = logged_in(tenant_beta, Role.ADMIN)
        assert beta.post(f"/services/{hydrology.pk}/delete/").status_code == 404
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.filter(pk=hydrology.pk).exists()


class TestModelServerPage:
    def test_save_keep_the_key_and_go_back(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"name": "Ours", "base_url": demo_model_url, "model_ids": "m1\nm2", "is_active": "on"}
        assert client.post("/settings/model/", {**form, "api_key": "sk-page-secret"}).status_code == 302
        page = client.get("/settings/model/").content.decode()
        assert "sk-page-secret" not in page
        assert "An API key is stored (encrypted)." in page
        assert client.post("/settings/model/", form).status_code == 302  # an empty key field keeps the key
        with schema_context(tenant_alpha.tenant.schema_name):
            provider = ModelProvider.objects.get()
            assert provider.model_ids == ["m1", "m2"]
            assert decrypt(provider.api_key_encrypted) == "sk-page-secret"
        assert client.post("/settings/model/", {"action": "delete"}).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()

    def test_test_connection_says_what_the_server_offers(
        self, tenant_alpha: TenantFixture, demo_model_url: str
    ) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert 'data-testid="provider-test"' not in client.get("/settings/model/").content.decode()
        form = {"base_url": demo_model_url, "model_ids": "hydronet-demo\ngpt-nope", "is_active": "on"}
        assert client.post("/settings/model/", form).status_code == 302
        assert 'data-testid="provider-test"' in client.get("/settings/model/").content.decode()
        tested = client.post("/settings/model/", {"action": "test"})
        assert tested["Location"] == "/settings/model/#provider-status"  # the page opens at the button's card
        page = client.get(tested["Location"]).content.decode()
        result = page.split('id="provider-status"', 1)[1].split('role="status"', 1)[1].split("</div></div>", 1)[0]
        assert "Connected: the server offers 1 model." in result  # next to the button, not atop the page
        assert "It does not list these models: gpt-nope." in result
        assert "Connected" not in page.split("<h1>", 1)[0]
        client.post("/settings/model/", {**form, "base_url": "http://127.0.0.1:9/v1"})
        page = client.post("/settings/model/", {"action": "test"}, follow=True).content.decode()
        assert "The model server could not be reached" in page.split('id="provider-status"', 1)[1]
        client.defaults["HTTP_ACCEPT_LANGUAGE"] = "zh-hans"
        client.post("/settings/model/", form)
        page = client.post("/settings/model/", {"action": "test"}, follow=True).content.decode()
        assert "连接成功：该服务器提供 1 个模型。" in page.split('id="provider-status"', 1)[1]

    def test_a_model_name_too_long_is_named_as_such(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        """Not "list 1 to 50 names" for two names, one of them too long."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        long_name = "m" * 300
        response = client.post("/settings/model/", {"base_url": demo_model_url, "model_ids": f"m1\n{long_name}"})
        assert response.status_code == 400
        page = response.content.decode()
        assert "A model name may be at most 100 characters: " + "m" * 40 in page
        assert "List 1 to 50 model names" not in page
        assert long_name in page  # what was typed stays in the form

    def test_an_unsafe_base_url_is_a_400(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post("/settings/model/", {"base_url": "http://169.254.169.254/v1", "model_ids": "m"})
        assert response.status_code == 400
        assert "cloud metadata" in response.content.decode()
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()

    def test_only_admins(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        user: Client = logged_in(tenant_alpha, Role.USER)
        response = user.post("/settings/model/", {"base_url": demo_model_url, "model_ids": "m"})
        assert response.status_code == 403
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()
