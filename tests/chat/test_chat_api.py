"""Conversations and chat turns against the real demo model and MCP servers over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection
from django.http import Http404
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.chat import engine, services
from apps.chat.markdown import render
from apps.chat.models import Conversation, Message
from apps.chat.selectors import model_history
from apps.chat.services import TITLE_LENGTH, _store_assistant, _store_tool_result, _store_user_message
from apps.core.actors import Actor
from apps.usage.models import UsageEvent
from tests.chat.conftest import charged_tool_calls, many_calls_model, member_client
from tests.conftest import TenantFixture, admin_of, bearer, jwt_pair
from tests.processes import canned_server, sse_body

pytestmark = pytest.mark.django_db

QUESTION = "站点 S001 最近的水位是多少?"


def post(client: Client, path: str, data: dict[str, Any] | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def new_conversation(client: Client) -> int:
    response = post(client, "/api/conversations")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def sse(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """The events of a streamed reply, in order, read as strictly as the browser's JSON.parse reads them."""
    assert response["Content-Type"].startswith("text/event-stream")
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"], parse_constant=_not_json)))
    return events


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def stored(tenant: TenantFixture, conversation_id: int) -> list[Message]:
    with schema_context(tenant.tenant.schema_name):
        return list(Message.objects.filter(conversation_id=conversation_id).order_by("id"))


class TestConversations:
    def test_create_list_search_rename_delete(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        first, second = new_conversation(client), new_conversation(client)
        assert client.patch(f"/api/conversations/{first}", {"title": "Flood season"},
                            content_type="application/json").status_code == 200  # fmt: skip
        listed = client.get("/api/conversations?search=flood").json()
        assert [c["id"] for c in listed["results"]] == [first]
        assert client.get("/api/conversations").json()["count"] == 2
        assert client.delete(f"/api/conversations/{second}").status_code == 204
        assert client.get(f"/api/conversations/{second}").status_code == 404

    def test_a_title_is_one_line_of_text(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)

        def rename(title: Any) -> Any:
            return client.patch(f"/api/conversations/{conversation}", {"title": title}, content_type="application/json")

        assert rename("Flood\nseason \t 2026 ").json()["title"] == "Flood season 2026"
        for bad in (5, True, ["Flood"], "Flood\x00season", "Flood\x07"):
            response = rename(bad)
            assert response.status_code == 400, bad
            assert list(response.json()["error"]["details"]) == ["title"]
        assert client.get(f"/api/conversations/{conversation}").json()["title"] == "Flood season 2026"
        created = client.post("/api/conversations", {"title": 7}, content_type="application/json")
        assert created.status_code == 400
        assert client.get("/api/conversations").json()["count"] == 1

    def test_a_conversation_deleted_meanwhile_is_a_404_to_rename_and_delete(self, tenant_alpha: TenantFixture) -> None:
        """Read by one request, deleted by another (a second tab) before the first writes."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            actor = Actor(user=Conversation.objects.get(pk=conversation).user)
            read = Conversation.objects.get(pk=conversation)
            services.conversation_delete(actor=actor, conversation=read)
            with pytest.raises(Http404):
                services.conversation_rename(actor=actor, conversation=read, title="Renamed")
            with pytest.raises(Http404):
                services.conversation_delete(actor=actor, conversation=read)
            assert AuditEvent.objects.filter(action="conversation.deleted", target_id=str(conversation)).count() == 1

    def test_what_a_turn_and_the_download_answer_in_may_be_asked_for(self, tenant_alpha: TenantFixture) -> None:
        """SSE clients send ``Accept: text/event-stream``: it was a 406, JSON being DRF's only renderer."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        path = f"/api/conversations/{conversation}"
        streamed = client.post(f"{path}/messages", {"content": "hi", "stream": True}, content_type="application/json",
                               HTTP_ACCEPT="text/event-stream")  # fmt: skip
        assert streamed.status_code == 200
        assert streamed["Content-Type"].startswith("text/event-stream")
        assert sse(streamed)[-1][0] == "done"
        refused = client.post(f"{path}/messages", {"content": ""}, content_type="application/json",
                              HTTP_ACCEPT="text/event-stream")  # fmt: skip
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_input"  # errors stay JSON
        exported = client.get(f"{path}/export", HTTP_ACCEPT="text/markdown")
        assert exported.status_code == 200
        assert exported["Content-Type"].startswith("text/markdown")
        assert client.get(f"{path}/export", HTTP_ACCEPT="image/png").status_code == 406
        assert client.get(path, HTTP_ACCEPT="text/event-stream").status_code == 406  # it answers JSON only

    def test_a_title_from_the_first_question_is_one_line_too(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        asked = post(client, f"/api/conversations/{conversation}/messages", {"content": "line one\n\n\tline  two\x07"})
        assert asked.status_code == 200, asked.content
        assert client.get(f"/api/conversations/{conversation}").json()["title"] == "line one line two"

    def test_a_rename_while_the_model_server_starts_on_the_first_question_is_kept(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first question titles the conversation only if its stored title is still empty: the turn wrote
        the title of the copy it read at its start, over a rename made while the model server had not yet
        answered."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        real_open_stream = engine.open_stream

        def renamed_meanwhile(*args: Any, **kwargs: Any) -> Any:
            stream = real_open_stream(*args, **kwargs)  # the question is stored once the model server answers
            services.conversation_rename(actor=Actor(user=client.member), title="Renamed meanwhile",
                                         conversation=Conversation.objects.get(pk=conversation))  # fmt: skip
            return stream

        monkeypatch.setattr(engine, "open_stream", renamed_meanwhile)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True}))
        assert events[-1][0] == "done"
        assert events[-1][1]["title"] == "Renamed meanwhile"
        assert client.get(f"/api/conversations/{conversation}").json()["title"] == "Renamed meanwhile"

    def test_search_finds_what_was_said_but_not_tool_output_errors_or_others_conversations(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = member_client(tenant_alpha)
        said, tool_only, failed = new_conversation(client), new_conversation(client), new_conversation(client)
        theirs = new_conversation(member_client(tenant_alpha))
        with schema_context(tenant_alpha.tenant.schema_name):
            Message.objects.create(conversation_id=said, role="assistant", content="The spillway at S004 is open.")
            Message.objects.create(conversation_id=tool_only, role="tool", service="hydrology", tool="levels",
                                   arguments={}, content='{"note": "spillway"}')  # fmt: skip
            Message.objects.create(conversation_id=failed, role="assistant", status="error",
                                   content="The spillway server could not be reached")  # fmt: skip
            Message.objects.create(conversation_id=theirs, role="user", content="spillway?")

        def found(query: str, **params: str) -> list[int]:
            response = client.get("/api/conversations", {"search": query, **params})
            assert response.status_code == 200, response.content
            return [c["id"] for c in response.json()["results"]]

        assert found("SPILLWAY") == [said]
        matched = client.get("/api/conversations", {"search": "s004"}).json()["results"]
        assert [c["match"] for c in matched] == ["The spillway at S004 is open."]
        assert client.get("/api/conversations").json()["results"][0]["match"] == ""  # no search
        assert found("spillway at s004") == [said]
        assert found("100%") == []  # a LIKE wildcard is a character like any other
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        everyone = admin.get("/api/conversations", {"search": "spillway", "all": "true"}).json()["results"]
        assert sorted(c["id"] for c in everyone) == sorted([said, theirs])

    def test_members_see_only_their_own(self, tenant_alpha: TenantFixture) -> None:
        alice, bob = member_client(tenant_alpha), member_client(tenant_alpha)
        conversation = new_conversation(alice)
        assert bob.get(f"/api/conversations/{conversation}").status_code == 404
        assert post(bob, f"/api/conversations/{conversation}/messages", {"content": "hi"}).status_code == 404
        assert bob.get("/api/conversations").json()["count"] == 0
        refused = bob.get("/api/conversations?all=true")  # needs all_conversations: said, not answered with bob's
        assert (refused.status_code, refused.json()["error"]["details"]) == (403, {"permission": "all_conversations"})
        assert bob.get("/api/conversations?all=false").status_code == 200

    def test_admins_read_everyones_conversations_but_cannot_write_to_them(self, tenant_alpha: TenantFixture) -> None:
        alice = member_client(tenant_alpha)
        conversation = new_conversation(alice)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        assert admin.get("/api/conversations").json()["count"] == 0
        everyone = admin.get("/api/conversations?all=true").json()
        assert [c["id"] for c in everyone["results"]] == [conversation]
        assert admin.get(f"/api/conversations/{conversation}").status_code == 200
        refused = post(admin, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert refused.status_code == 403
        assert stored(tenant_alpha, conversation) == []

    def test_a_viewer_reads_but_cannot_create_or_post(self, tenant_alpha: TenantFixture) -> None:
        viewer = member_client(tenant_alpha, "viewer")
        assert viewer.get("/api/conversations").status_code == 200
        created = post(viewer, "/api/conversations")
        assert created.status_code == 403
        assert created.json()["error"]["details"] == {"permission": "create_conversation"}
        with schema_context(tenant_alpha.tenant.schema_name):
            own = Conversation.objects.create(user=viewer.member)
        assert viewer.get(f"/api/conversations/{own.pk}").status_code == 200
        assert post(viewer, f"/api/conversations/{own.pk}/messages", {"content": "hi"}).status_code == 403

    def test_another_tenants_conversation_is_a_404(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        conversation = new_conversation(member_client(tenant_alpha))
        beta = member_client(tenant_beta)
        assert beta.get(f"/api/conversations/{conversation}").status_code == 404
        assert post(beta, f"/api/conversations/{conversation}/messages", {"content": "hi"}).status_code == 404

    def test_deleting_a_conversation_takes_as_many_queries_however_long_it_is(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """Django's delete read every message first, 64 KB tool results and all, and cleared ``replaces`` 100 at a
        time: 3,000 messages took 40 queries, 0.4 s and 36 MB. The messages go in one statement, replaced ones
        with what replaces them."""
        client = member_client(tenant_alpha)
        queries = []
        for total in (0, 3, 300):  # the first warms what the host's first requests cache
            conversation = new_conversation(client)
            with schema_context(tenant_alpha.tenant.schema_name):
                made = Message.objects.bulk_create(
                    Message(conversation_id=conversation, role=("user", "assistant")[n % 2], content=f"m {n}")
                    for n in range(total)
                )
                Message.objects.create(conversation_id=conversation, role="assistant", content="again",
                                       replaces=made[-1] if made else None)  # fmt: skip
            with CaptureQueriesContext(connection) as captured:
                assert client.delete(f"/api/conversations/{conversation}").status_code == 204
            queries.append(len(captured))
            assert stored(tenant_alpha, conversation) == []
            assert client.get(f"/api/conversations/{conversation}").status_code == 404
            with schema_context(tenant_alpha.tenant.schema_name):
                event = AuditEvent.objects.filter(action="conversation.deleted", target_id=str(conversation)).get()
                assert event.metadata == {"messages": total + 1}
        assert queries[1] == queries[2]

    def test_a_long_conversation_comes_with_its_latest_messages_only(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """GET /api/conversations/{id} sent every message: 38 MB of JSON for 3,000 messages with tool results. It
        brings the latest along, says how many come before them, and reads them in as many queries however many."""
        from apps.chat import apis

        monkeypatch.setattr(apis, "DETAIL_MESSAGES", 5)
        client = member_client(tenant_alpha)
        queries = []
        for total in (3, 30):
            conversation = new_conversation(client)
            with schema_context(tenant_alpha.tenant.schema_name):
                Message.objects.bulk_create(
                    Message(conversation_id=conversation, role="user", content=f"question {n}") for n in range(total)
                )
            with CaptureQueriesContext(connection) as captured:
                body = client.get(f"/api/conversations/{conversation}").json()
            queries.append(len(captured))
            shown = [m["content"] for m in body["messages"]]
            assert shown == [f"question {n}" for n in range(max(0, total - 5), total)]  # the latest, oldest first
            assert body["earlier_messages"] == max(0, total - 5)
        assert queries[0] == queries[1]
        paged = client.get(f"/api/conversations/{conversation}/messages?page_size=100").json()
        assert paged["count"] == 30  # the earlier ones are paged there


class TestReplies:
    def test_a_whole_reply(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": "Hello there"})
        assert response.status_code == 200, response.content
        body = response.json()
        assert "offline demo model" in body["message"]["content"]
        assert body["tokens"] > 0
        assert body["message"]["tokens_used"] == body["tokens"]
        as_stored = client.get(f"/api/conversations/{conversation}/messages").json()["results"][-1]
        assert body["message"] == as_stored  # the reply the turn holds, as a read of it shows it
        messages = stored(tenant_alpha, conversation)
        assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete")]
        with schema_context(tenant_alpha.tenant.schema_name):
            saved = Conversation.objects.get(pk=conversation)
            assert saved.title == "Hello there"  # from the first exchange
            assert saved.tokens_used == body["tokens"]

    def test_a_whole_reply_whose_conversation_is_deleted_as_it_ends_is_still_answered(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The answer is the reply the turn stored; it read the reply again, and a DELETE of the conversation
        (another tab) that came in between was a 500 (Message.DoesNotExist)."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        real_render = services.render

        def deleted_meanwhile(text: str) -> str:  # the done event is built once the reply is stored
            services.conversation_delete(actor=Actor(user=client.member),
                                         conversation=Conversation.objects.get(pk=conversation))  # fmt: skip
            return real_render(text)

        monkeypatch.setattr(services, "render", deleted_meanwhile)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": "Hello there"})
        assert response.status_code == 200, response.content
        message = response.json()["message"]
        assert "offline demo model" in message["content"]
        assert (message["role"], message["status"], message["replaced"]) == ("assistant", "complete", False)
        assert message["id"] > 0
        assert message["created_at"]
        assert stored(tenant_alpha, conversation) == []  # deleted, with its messages

    def test_the_users_message_and_the_conversation_are_written_in_one_statement(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        content = "How high is the Yangtze at Wuhan today, and is it rising faster than last week?"
        with schema_context(tenant_alpha.tenant.schema_name):
            row = Conversation.objects.get(pk=conversation)
            before = row.updated_at
            with CaptureQueriesContext(connection) as queries:
                _store_user_message(row, content)
            assert len(queries) == 1  # it was an INSERT and an UPDATE, in a transaction
            message = Message.objects.get(conversation_id=conversation)
            assert (message.role, message.content, message.status, message.tokens_used) == (
                "user", content, "complete", 0)  # fmt: skip
            assert message.tool_calls == []
            assert message.arguments is None
            assert message.created_at >= before
            saved = Conversation.objects.get(pk=conversation)
            assert saved.title == content[:TITLE_LENGTH] == row.title
            assert saved.updated_at == row.updated_at > before
            _store_user_message(saved, "A second question")
            assert Conversation.objects.get(pk=conversation).title == content[:TITLE_LENGTH]  # a title stays
            assert Message.objects.filter(conversation_id=conversation).count() == 2

    def test_a_reply_and_its_tokens_in_the_conversation_are_written_in_one_statement(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            row = Conversation.objects.get(pk=conversation)
            with CaptureQueriesContext(connection) as queries:
                reply = _store_assistant(row, "hydronet-demo", "The Yangtze is at 27.3 m.", 42, [],
                                         started=time.monotonic())  # fmt: skip
            assert len(queries) == 1  # it was an INSERT, then an UPDATE at the end of the turn
            saved = Message.objects.get(conversation_id=conversation)
            assert saved.pk == reply.pk
            assert (saved.role, saved.content, saved.status, saved.tokens_used, saved.model) == (
                "assistant", "The Yangtze is at 27.3 m.", "complete", 42, "hydronet-demo")  # fmt: skip
            assert saved.tool_calls == []
            assert saved.latency_ms is not None
            assert Conversation.objects.get(pk=conversation).tokens_used == 42
            _store_assistant(row, "hydronet-demo", "Another answer.", 5, [])
            assert Conversation.objects.get(pk=conversation).tokens_used == 47  # added, not set

    def test_a_streamed_reply(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True}))
        kinds = [kind for kind, _data in events]
        assert kinds.count("token") > 3
        assert kinds[-1] == "done"
        done = events[-1][1]
        text = "".join(data["text"] for kind, data in events if kind == "token")
        assert stored(tenant_alpha, conversation)[-1].content == text
        assert done["message_id"] == stored(tenant_alpha, conversation)[-1].pk
        assert done["tokens"] > 0
        assert done["latency_ms"] >= 0
        assert "<p>" in done["html"]

    def test_the_tool_loop_is_streamed_and_stored(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION, "stream": True}))
        kinds = [kind for kind, _data in events]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("done")
        call = dict(events)["tool_call"]
        assert (call["service"], call["tool"]) == ("hydrology", "get_water_levels")
        assert call["arguments"]["station"] == "S001"
        result = dict(events)["tool_result"]
        assert result["is_error"] is False
        assert "level_m" in result["result"]
        answer = "".join(data["text"] for kind, data in events[kinds.index("tool_result") :] if kind == "token")
        assert "S001" in answer

        user, asked, tool, final = stored(tenant_alpha, conversation)
        assert (user.role, asked.role, tool.role, final.role) == ("user", "assistant", "tool", "assistant")
        assert asked.tool_calls[0]["name"] == "hydrology__get_water_levels"
        assert tool.arguments is not None
        assert (tool.service, tool.tool, tool.arguments["station"]) == ("hydrology", "get_water_levels", "S001")
        assert tool.tool_call_id == asked.tool_calls[0]["id"]
        assert tool.duration_ms is not None
        assert tool.error == ""
        assert final.content == answer
        with schema_context(tenant_alpha.tenant.schema_name):  # both model rounds' tokens, counted once
            assert Conversation.objects.get(pk=conversation).tokens_used == asked.tokens_used + final.tokens_used > 0

    def test_a_large_tool_result_is_truncated_for_the_model_and_the_store(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        settings.MCP_RESULT_MAX_CHARS = 300  # 72 hourly readings are about 3,000 characters
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION, "stream": True}))
        result = dict(events)["tool_result"]
        assert result["result"].endswith("…[truncated]")
        assert len(result["result"]) == 300 + len("\n…[truncated]")
        tool = stored(tenant_alpha, conversation)[2]
        assert tool.role == "tool"
        assert tool.result_truncated is True
        assert tool.content == result["result"]
        assert events[-1][0] == "done"  # the model answered from what it got

    def test_a_tool_error_goes_back_to_the_model(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages",
                          {"content": "站点 S999 最近的水位是多少?", "stream": True}))  # fmt: skip
        result = dict(events)["tool_result"]
        assert result["is_error"] is True
        assert events[-1][0] == "done"
        assert stored(tenant_alpha, conversation)[2].error

    def test_a_conversation_continues_with_its_history(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION})
        again = post(client, f"/api/conversations/{conversation}/messages", {"content": "谢谢"})
        assert again.status_code == 200
        assert len(stored(tenant_alpha, conversation)) == 6

    def test_the_history_comes_with_the_conversation_in_one_query(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from apps.chat.selectors import access_conversation, model_history
        from apps.core.actors import Actor

        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION})
        with schema_context(tenant_alpha.tenant.schema_name):
            Message.objects.create(conversation_id=conversation, role="assistant", content="lost", status="error")
            actor = Actor(user=client.member)
            plain = Conversation.objects.get(pk=conversation)
            for limit in (40, 4, 2):
                with CaptureQueriesContext(connection) as queries:
                    read = access_conversation(actor, conversation, write=True, with_history=limit)
                    history = model_history(read, limit=limit)
                assert len(queries) == 1, [q["sql"] for q in queries]
                assert history == model_history(plain, limit=limit)
            history = model_history(access_conversation(actor, conversation, with_history=40), limit=40)
        assert [message["role"] for message in history] == ["user", "assistant", "tool", "assistant"]
        assert history[0]["content"] == QUESTION
        assert history[1]["tool_calls"][0]["function"]["name"] == "hydrology__get_water_levels"
        assert history[2]["tool_call_id"] == history[1]["tool_calls"][0]["id"]

    def test_a_viewer_role_gets_no_tools(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        from apps.accounts.models import Role
        from apps.chat.services import tools_for
        from apps.core.actors import Actor
        from tests.conftest import make_member

        with schema_context(tenant_alpha.tenant.schema_name):
            assert tools_for(Actor(user=make_member(tenant_alpha, Role.VIEWER))) == []
            assert len(tools_for(Actor(user=make_member(tenant_alpha, Role.USER)))) == 4

    def test_no_tool_rounds_means_no_tools_offered(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        settings.CHAT_MAX_TOOL_ROUNDS = 0
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION, "stream": True}))
        kinds = [kind for kind, _data in events]
        assert "tool_call" not in kinds
        assert kinds[-1] == "done"


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({"content": ""}, "invalid_input"),
            ({"content": "   "}, "invalid_input"),
            ({"content": "x" * 101}, "message_too_long"),
            ({"content": "hi", "model": "gpt-imaginary"}, "unknown_model"),
            ({}, "invalid_input"),
            ({"content": "hi", "role": "system"}, "invalid_input"),
            ({"content": "hi", "stream": "yes"}, "invalid_input"),  # a JSON boolean, not what a form sends
            ({"content": "hi", "stream": 1}, "invalid_input"),
            ({"content": 5}, "invalid_input"),  # a JSON string, not a number made one
            ({"content": "hi", "model": 5}, "invalid_input"),
        ],
    )
    @override_settings(CHAT_MAX_MESSAGE_CHARS=100)
    def test_refused_before_anything_is_stored(
        self, tenant_alpha: TenantFixture, body: dict[str, Any], code: str
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code
        assert stored(tenant_alpha, conversation) == []

    def test_a_conversations_model_taken_off_the_list_gives_way_to_the_default(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """Only a model the client asks for must be offered: the admins' change would leave the conversation
        unusable to a client that names none, as the chat page does with one model."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            Conversation.objects.filter(pk=conversation).update(model="a-retired-model")
        answered = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert answered.status_code == 200, answered.content
        assert answered.json()["message"]["status"] == "complete"
        asked = post(
            client, f"/api/conversations/{conversation}/messages", {"content": "hi", "model": "a-retired-model"}
        )
        assert (asked.status_code, asked.json()["error"]["code"]) == (400, "unknown_model")

    def test_the_model_a_turn_names_becomes_the_conversations(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        """So a reload shows it chosen, and "Try again" (which sends the page's choice) asks the model that failed."""
        settings.LLM_MODELS = ["hydronet-demo", "org/model-2"]
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        path = f"/api/conversations/{conversation}"

        def kept() -> str:
            return str(client.get(path).json()["model"])

        # The demo model server knows only hydronet-demo: a turn on org/model-2 fails, as with a real server.
        assert post(client, f"{path}/messages", {"content": "hi", "model": "org/model-2"}).status_code == 502
        assert kept() == "org/model-2"
        assert post(client, f"{path}/messages", {"content": "and then"}).status_code == 502  # the kept one asked
        assert kept() == "org/model-2"
        refused = post(client, f"{path}/messages", {"content": "hi", "model": "gpt-imaginary"})
        assert refused.status_code == 400
        assert kept() == "org/model-2"
        assert post(client, f"{path}/retry", {"model": "hydronet-demo"}).status_code == 200
        assert kept() == "hydronet-demo"
        assert post(client, f"{path}/edit", {"content": "hi again", "model": "org/model-2"}).status_code == 502
        assert kept() == "org/model-2"


class TestModelServerFaults:
    """A failing model server gives a clean error, never a 500, and the user's message is kept."""

    @pytest.mark.parametrize("marker", ["#error500", "#ratelimit", "#malformed", "#broken"])
    def test_streamed(self, tenant_alpha: TenantFixture, marker: str) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": f"hi {marker}",
                                                                                 "stream": True})  # fmt: skip
        assert response.status_code == 200
        events = sse(response)
        assert events[-1][0] == "error"
        assert events[-1][1]["code"] == "upstream_error"
        assert events[-1][1]["title"] == f"hi {marker}"  # the question titled the conversation, as with done
        user, failed = stored(tenant_alpha, conversation)
        assert (user.role, user.content) == ("user", f"hi {marker}")
        assert (failed.role, failed.status) == ("assistant", "error")
        assert failed.error

    def test_a_stream_cut_off_is_said_in_words(self, tenant_alpha: TenantFixture) -> None:
        """It read "The model server's answer broke off: Connection error." (openai's words), in Chinese too."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(
            client, f"/api/conversations/{conversation}/messages", {"content": "hi #broken", "stream": True}
        )
        assert sse(response)[-1][1]["message"] == (
            "The model server's answer broke off: the connection closed before it was complete."
        )

    @pytest.mark.parametrize("marker", ["#error500", "#malformed", "#broken"])
    def test_whole(self, tenant_alpha: TenantFixture, marker: str) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": f"hi {marker}"})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
        assert stored(tenant_alpha, conversation)[0].content == f"hi {marker}"

    def test_a_slow_model_server_times_out_cleanly(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_TIMEOUT_SECONDS = 1
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi #slow"})
        assert response.status_code == 502
        assert stored(tenant_alpha, conversation)[0].role == "user"

    def test_a_model_server_that_is_down(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True}))
        assert events == [("error", {**events[0][1], "code": "upstream_error"})]
        assert [m.role for m in stored(tenant_alpha, conversation)] == ["user", "assistant"]

    @pytest.mark.parametrize("stream", [True, False])
    def test_a_turn_past_its_most_seconds_is_stopped_keeping_what_came(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        """A model server that trickles held the turn, its web thread and one of the workspace's places for as long
        as it went on; a client that had left a whole answer's request never knew (QA: 33 minutes)."""
        settings.CHAT_TURN_MAX_SECONDS = 1
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        started = time.monotonic()
        response = post(
            client, f"/api/conversations/{conversation}/messages", {"content": "hi #long", "stream": stream}
        )
        if stream:
            kind, data = sse(response)[-1]
            assert kind == "error"
        else:
            assert response.status_code == 502
            data = response.json()["error"]
        assert time.monotonic() - started < 2.5  # "#long" streams for about 3 s
        assert data["message"] == "The answer took longer than 1 s, the most a turn may take; it was stopped there."
        _user, failed = stored(tenant_alpha, conversation)
        assert failed.status == "error"
        assert failed.content  # what came before the deadline is kept

    @pytest.mark.parametrize(
        "chunks",
        [[{"choices": [{"index": 0, "delta": {"content": "y" * 30}}]}] * 3,
         [{"choices": [{"index": 0, "delta": {"content": "Let me see. "}}]},
          {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {
              "name": "hydrology__list_stations", "arguments": '{"a": "' + "x" * 60 + '"}'}}]}}]}]],
        ids=["text", "arguments"],
    )  # fmt: skip
    def test_a_reply_past_its_most_characters_is_stopped_keeping_what_came(
        self, tenant_alpha: TenantFixture, settings: Any, chunks: list[dict[str, Any]]
    ) -> None:
        """A reply of 60 MB was stored, shown (1.6 GB of a web process), and sent back with every later turn."""
        settings.CHAT_MAX_REPLY_CHARS = 70
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with canned_server(sse_body(*chunks), content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert response.status_code == 502
        assert response.json()["error"]["message"] == (
            "The model's answer passed 70 characters, the most HydroNet takes; it was stopped there."
        )
        _user, failed = stored(tenant_alpha, conversation)
        assert (failed.status, len(failed.content) <= 70, failed.tool_calls) == ("error", True, [])
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # a broken answer is given back, as any

    def test_what_a_failed_reply_said_comes_rendered_as_a_finished_reply_does(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """The chat page showed a failed reply's Markdown as its source (a table as rows of pipes) until a reload
        rendered it; the error event brings it rendered, as done brings a reply."""
        settings.CHAT_MAX_REPLY_CHARS = 40
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        chunks = [{"choices": [{"index": 0, "delta": {"content": "**S001** <i>x</i>\n"}}]}] * 3
        with canned_server(sse_body(*chunks), content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True})
        kind, data = sse(response)[-1]
        _user, failed = stored(tenant_alpha, conversation)
        assert (kind, failed.status, data["message_id"]) == ("error", "error", failed.pk)
        assert data["html"] == render(failed.content)
        assert data["html"].startswith("<p><strong>S001</strong> &lt;i&gt;x&lt;/i&gt;<br>")

    def test_a_streamed_answer_past_its_most_bytes_is_a_failure_in_words(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """One line of 60 MB was held whole by the stream's decoder: a web process grew by 700 MB."""
        settings.LLM_MAX_STREAM_BYTES = 4096
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        body = sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, "[" * 10_000)
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert response.status_code == 502
        assert (
            response.json()["error"]["message"] == "The model server's answer passed 4.0\xa0KB; it was stopped there."
        )

    def test_nul_characters_are_streamed_as_they_are_stored(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        """The token event carried the NUL, the stored reply (and the page after a reload) U+FFFD."""
        body = sse_body({"choices": [{"index": 0, "delta": {"content": "nul\u0000char"}, "finish_reason": "stop"}]})
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True})
            streamed = "".join(data["text"] for kind, data in sse(response) if kind == "token")
        _user, reply = stored(tenant_alpha, conversation)
        assert streamed == reply.content == "nul\ufffdchar"

    def test_the_models_refusal_is_its_answer(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        """OpenAI's ``delta.refusal`` was dropped: the reply streamed nothing and was stored empty."""
        body = sse_body(
            {"choices": [{"index": 0, "delta": {"refusal": "I can't help "}}]},
            {"choices": [{"index": 0, "delta": {"refusal": "with that."}, "finish_reason": "stop"}]},
        )
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True})
            events = sse(response)
        assert "".join(data["text"] for kind, data in events if kind == "token") == "I can't help with that."
        assert events[-1][0] == "done"
        _user, reply = stored(tenant_alpha, conversation)
        assert (reply.content, reply.status) == ("I can't help with that.", "complete")

    @pytest.mark.parametrize("stream", [True, False])
    def test_an_impossible_token_count_is_a_broken_answer(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        """2**62 prompt tokens overflowed the ledger's batch (a 500, and two other calls' rows lost with it), and
        once in the ledger stopped the tenant's flush every minute."""
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 2**62, "completion_tokens": 3}},
        ]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": stream})
        if stream:
            error = sse(response)[-1]
            assert error[0] == "error"
            message = error[1]["message"]
        else:
            assert response.status_code == 502
            message = response.json()["error"]["message"]
        assert message == "The model server reported an impossible token count (prompt_tokens: 4611686018427387904)."
        user, failed = stored(tenant_alpha, conversation)
        assert (user.content, failed.status, failed.tokens_used) == ("hi", "error", 0)
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # the call was given back

    @pytest.mark.parametrize("stream", [True, False])
    @pytest.mark.parametrize(
        "chunk",
        ['{"choices": [{"delta": {"tool_calls": [{"index": Infinity}]}}]}',
         '{"choices": [{"delta": {"tool_calls": [{"index": 1e400}]}}]}', "[" * 2000 + "]" * 2000,
         '{"choices": [{"delta": {"content": {"text": "lo"}}}]}'],
        ids=["infinity", "1e400", "nested", "content"],
    )  # fmt: skip
    def test_a_chunk_that_is_no_chunk_is_a_broken_answer_and_given_back(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool, chunk: str
    ) -> None:
        """int(inf) raised OverflowError and a chunk nested past the parser's depth RecursionError: neither was
        the model server's failure (a 500, or a stream cut off with the answer so far lost)."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with canned_server(sse_body({"choices": [{"delta": {"content": "Hel"}}]}, chunk),
                           content_type="text/event-stream") as root:  # fmt: skip
            settings.LLM_BASE_URL = f"{root}/v1"
            response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": stream})
        message = sse(response)[-1][1]["message"] if stream else response.json()["error"]["message"]
        assert response.status_code == (200 if stream else 502)
        assert message == "The model server sent a part of its answer that is not a chat completion chunk."
        user, failed = stored(tenant_alpha, conversation)
        assert (user.content, failed.status, failed.content) == ("hi", "error", "Hel")
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # the call was given back

    @pytest.mark.parametrize("stream", [True, False])
    def test_surrogates_from_the_model_are_whole_characters(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        """A lone surrogate (``json.loads`` keeps "\\ud800" as one) could not be encoded: the token event, the
        partial reply kept, the reply stored (a 500). A pair may come split across two chunks."""
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hi \ud83d"}}]},
            {"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "\ude00 \ud800!"}]}}]},
        ]
        answered = sse_body(*chunks, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        failed = sse_body(*chunks, {"error": {"message": "out of \udc00 memory"}})
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}/messages"
        for body in (answered, failed):
            with canned_server(body, content_type="text/event-stream") as root:
                settings.LLM_BASE_URL = f"{root}/v1"
                response = post(client, url, {"content": "hi", "stream": stream})
            if stream:
                events = sse(response)
                assert "".join(data["text"] for kind, data in events if kind == "token") == "Hi \U0001f600 \ufffd!"
                assert events[-1][0] == ("done" if body is answered else "error")
        assert response.status_code == (200 if stream else 502)
        said = "The model server's answer broke off: out of \ufffd memory"
        assert (events[-1][1] if stream else response.json()["error"])["message"] == said
        _user, answer, _again, cut = stored(tenant_alpha, conversation)
        assert (answer.content, answer.status) == ("Hi \U0001f600 \ufffd!", "complete")
        assert (cut.content, cut.status, cut.error) == ("Hi \U0001f600 \ufffd!", "error", said)

    def test_no_model_server_configured(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_BASE_URL = ""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_model_configured"
        assert stored(tenant_alpha, conversation) == []

    def test_a_reply_nested_deeper_than_markdown_recurses_streams_and_shows_as_text(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """About 1,000 characters of list markers (a model told to repeat them) made Markdown raise RecursionError:
        the done event, built after the reply was stored, broke the stream, and every view of the conversation
        was then a 500."""
        from apps.chat.markdown import render
        from tests.accounts.test_pages import logged_in

        deep = "- " * 2000 + "x"
        chunks = [{"choices": [{"index": 0, "delta": {"content": deep}}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        client = logged_in(tenant_alpha, "user")  # the chat page's session, for the page too
        conversation = new_conversation(client)
        path = f"/api/conversations/{conversation}"
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            events = sse(post(client, f"{path}/messages", {"content": "Repeat exactly: - - - x", "stream": True}))
        kind, done = events[-1]
        assert kind == "done"
        assert done["html"] == f"<p>{deep}</p>"
        assert stored(tenant_alpha, conversation)[-1].content == deep
        assert client.get(path).json()["messages"][-1]["html"] == f"<p>{deep}</p>"
        assert client.get(f"{path}/messages").json()["results"][-1]["html"] == f"<p>{deep}</p>"
        page = client.get(f"/chat/{conversation}/")
        assert page.status_code == 200
        assert f"<p>{deep}</p>" in page.content.decode()
        assert render("hello **x**") == "<p>hello <strong>x</strong></p>"  # this thread's converter is whole


class TestExport:
    def test_a_conversation_downloads_as_markdown_with_its_tool_calls(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        answer = post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION}).json()
        with schema_context(tenant_alpha.tenant.schema_name):  # a tool result that holds a fence of its own
            record = Conversation.objects.get(pk=conversation)
            tool = Message.objects.get(conversation=record, role="tool")
            tool.content += "\n~~~~\n# not a heading"
            tool.save()
            _store_user_message(record, "And rainfall?")
            _store_assistant(record, "hydronet-demo", "", 0, [], status="error", error="The model server answered 500.")
        response = client.get(f"/api/conversations/{conversation}/export")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/markdown; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="conversation-{conversation}.md"'
        text = response.content.decode()
        assert text.startswith(f"# {QUESTION}\n")
        assert text.index(f"## Question\n\n{QUESTION}") < text.index("> Calls the tool `hydrology__get_water_levels`")
        assert text.index("### Tool `hydrology.get_water_levels`") < text.index(answer["message"]["content"])
        assert '"station": "S001"' in text
        assert "\n~~~~~\n" in text  # the result's own ~~~~ cannot close its block
        assert "\n# not a heading" in text
        assert text.rstrip().endswith("*The reply failed: The model server answered 500.*")

    @override_settings(TIME_ZONE="Asia/Shanghai")
    def test_its_time_is_in_the_zone_the_pages_show_and_says_which(self, tenant_alpha: TenantFixture) -> None:
        """The download was timestamped in UTC while the pages show the workspace's time zone (UTC+8)."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            Conversation.objects.filter(pk=conversation).update(
                created_at=dt.datetime(2026, 12, 7, 17, 30, tzinfo=dt.UTC)
            )
        text = client.get(f"/api/conversations/{conversation}/export").content.decode()
        assert text.splitlines()[2].startswith("2026-12-08 01:30 UTC+8")

    def test_who_may_read_it_may_export_it(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        from tests.conftest import api_key_secret

        alice = member_client(tenant_alpha)
        conversation = new_conversation(alice)
        path = f"/api/conversations/{conversation}/export"
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        assert admin.get(path).status_code == 200  # all_conversations reads everyone's
        assert member_client(tenant_alpha).get(path).status_code == 404  # another member's
        assert member_client(tenant_alpha, "viewer").get(path).status_code == 404
        assert member_client(tenant_beta).get(path).status_code == 404  # another tenant's
        key = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "admin")))
        assert key.get(path).json()["error"]["code"] == "member_required"
        assert tenant_alpha.client().get(path).status_code == 401


def test_a_tool_name_of_any_length_is_stored_within_its_columns(tenant_alpha: TenantFixture) -> None:
    """A name the model made up, or an MCP server's own tool name, may be longer than the stored message's
    ``service`` (100) and ``tool`` (200): storing its result was a 500."""
    conversation = new_conversation(member_client(tenant_alpha))
    call = engine.ToolCall(id="c", name="x", service="s" * 300, tool="t" * 300, arguments={}, raw_arguments="{}")
    result = engine.ToolResult(call=call, result="no such tool", is_error=True, duration_ms=0, truncated=False)
    with schema_context(tenant_alpha.tenant.schema_name):
        stored = _store_tool_result(Conversation.objects.get(pk=conversation), result)
        stored.refresh_from_db()
    assert (stored.service, stored.tool) == ("s" * 100, "t" * 200)


class TestRetry:
    """POST /api/conversations/{id}/retry answers the last question again after its turn failed or was cut short."""

    def usage_events(self, tenant: TenantFixture) -> int:
        with schema_context(tenant.tenant.schema_name):
            return UsageEvent.objects.count()

    def test_a_failed_turn_is_answered_when_the_model_server_is_back(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        working = settings.LLM_BASE_URL
        settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        failed = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": True}))
        assert failed[-1][0] == "error"
        retried_while_down = post(client, f"/api/conversations/{conversation}/retry")
        assert retried_while_down.status_code == 502  # still down: a second failed reply, still retryable
        assert self.usage_events(tenant_alpha) == 0  # failed calls are given back
        settings.LLM_BASE_URL = working
        events = sse(post(client, f"/api/conversations/{conversation}/retry", {"stream": True}))
        assert events[-1][0] == "done"
        answer = "".join(data["text"] for kind, data in events if kind == "token")
        user, first_failure, second_failure, reply = stored(tenant_alpha, conversation)
        assert (user.role, user.content) == ("user", "hi")  # the question is not stored again
        assert (first_failure.status, second_failure.status) == ("error", "error")
        assert (reply.role, reply.status, reply.content) == ("assistant", "complete", answer)
        assert events[-1][1]["message_id"] == reply.pk
        assert self.usage_events(tenant_alpha) == 1  # the retry is one metered AI call

    def test_a_stopped_reply_is_left_out_of_what_the_model_reads(
        self, tenant_alpha: TenantFixture, hydrology: Any, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        assert post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION}).status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):  # a second question, stopped mid-reply
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "谢谢")
            _store_assistant(record, "hydronet-demo", "half a rep", 0, [], status="incomplete")
        sent = model_requests
        sent.clear()  # only the requests from here on
        response = post(client, f"/api/conversations/{conversation}/retry")
        assert response.status_code == 200, response.content
        assert sent[0][-1] == {"role": "user", "content": "谢谢"}  # not the stopped reply
        assert "half a rep" not in json.dumps(sent[0])
        roles = [(m.role, m.status) for m in stored(tenant_alpha, conversation)]
        assert roles[-3:] == [("user", "complete"), ("assistant", "incomplete"), ("assistant", "complete")]
        with schema_context(tenant_alpha.tenant.schema_name):  # and later turns read the new reply only
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert "half a rep" not in json.dumps(history)
        assert history[-1] == {"role": "assistant", "content": response.json()["message"]["content"]}
        assert history[-2] == {"role": "user", "content": "谢谢"}

    def test_an_empty_conversation_has_nothing_to_retry(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        empty = post(client, f"/api/conversations/{conversation}/retry", {"stream": True})
        assert (empty.status_code, empty.json()["error"]["code"]) == (409, "nothing_to_retry")
        assert stored(tenant_alpha, conversation) == []
        assert self.usage_events(tenant_alpha) == 0  # refused before anything is charged

    def test_a_complete_answer_is_regenerated_and_later_turns_read_the_new_one(
        self, tenant_alpha: TenantFixture, hydrology: Any, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        first = post(client, f"/api/conversations/{conversation}/messages", {"content": QUESTION}).json()
        with schema_context(tenant_alpha.tenant.schema_name):  # an answer to replace, told apart by its text
            Message.objects.filter(pk=first["message"]["id"]).update(content="the first answer")
        sent = model_requests
        sent.clear()  # only the requests from here on
        regenerated = post(client, f"/api/conversations/{conversation}/retry")
        assert regenerated.status_code == 200, regenerated.content
        assert regenerated.json()["tool_calls"] == []  # the turn's tool results are read again, not fetched again
        assert sent[0][-1]["role"] == "tool"
        assert "the first answer" not in json.dumps(sent[0])
        roles = [(m.role, m.content == "the first answer") for m in stored(tenant_alpha, conversation)]
        assert roles == [("user", False), ("assistant", False), ("tool", False), ("assistant", True),
                         ("assistant", False)]  # fmt: skip
        assert self.usage_events(tenant_alpha) == 4  # the first turn: two model rounds and a tool; then one round
        with schema_context(tenant_alpha.tenant.schema_name):
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert "the first answer" not in json.dumps(history)
        assert history[-1]["content"] == regenerated.json()["message"]["content"]

    def test_an_answer_again_brings_the_conversation_to_the_top(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        older, newer = new_conversation(client), new_conversation(client)
        for conversation in (older, newer):
            assert post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"}).status_code == 200
        assert [c["id"] for c in client.get("/api/conversations").json()["results"]] == [newer, older]
        assert post(client, f"/api/conversations/{older}/retry").status_code == 200
        assert [c["id"] for c in client.get("/api/conversations").json()["results"]] == [older, newer]

    def test_the_api_and_the_download_say_which_replies_were_answered_again(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "hi")
            first = _store_assistant(record, "hydronet-demo", "the first answer", 0, [])
            _store_assistant(record, "hydronet-demo", "", 0, [], status="error", error="down",
                             replaces=first.pk)  # a failed attempt replaces nothing  # fmt: skip
            second = _store_assistant(record, "hydronet-demo", "half a rep", 0, [], status="incomplete",
                                      replaces=first.pk)  # fmt: skip
            third = _store_assistant(record, "hydronet-demo", "the answer", 0, [], replaces=second.pk)
            _store_user_message(record, "thanks")
            fourth = _store_assistant(record, "hydronet-demo", "you are welcome", 0, [])
        every = client.get(f"/api/conversations/{conversation}/messages").json()["results"]
        assert [(m["content"], m["replaced"]) for m in every if m["role"] == "assistant"] == [
            ("the first answer", True), ("", False), ("half a rep", True), ("the answer", False),
            ("you are welcome", False),
        ]  # fmt: skip
        detail = client.get(f"/api/conversations/{conversation}").json()["messages"]
        assert [m["id"] for m in detail if m["replaced"]] == [first.pk, second.pk]
        # A page that ends with a replaced reply: its replacement on a later page says so.
        for size, ids in ((2, {first.pk}), (3, {first.pk}), (4, {first.pk, second.pk}), (5, {first.pk, second.pk})):
            pages = client.get(f"/api/conversations/{conversation}/messages", {"page_size": size}).json()
            assert {m["id"] for m in pages["results"] if m["replaced"]} == ids
        assert fourth.pk not in {m["id"] for m in every if m["replaced"]}
        assert third.pk not in {m["id"] for m in every if m["replaced"]}
        text = client.get(f"/api/conversations/{conversation}/export").content.decode()
        assert text.count("*Answered again below.*") == 2
        assert text.index("the first answer") < text.index("*Answered again below.*") < text.index("half a rep")

    def test_two_turns_at_once_replace_nothing(self, tenant_alpha: TenantFixture) -> None:
        """Two questions asked at once (two windows, or an API client) interleave: neither reply replaces the
        other, so the model reads both and none is marked answered again."""
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "levels at S001?")
            _store_user_message(record, "rainfall at S002?")
            _store_assistant(record, "hydronet-demo", "S001 is at 165.7 m.", 0, [])
            _store_assistant(record, "hydronet-demo", "S002 had 12 mm.", 0, [])
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert [m["content"] for m in history] == [
            "levels at S001?", "rainfall at S002?", "S001 is at 165.7 m.", "S002 had 12 mm.",
        ]  # fmt: skip
        listed = client.get(f"/api/conversations/{conversation}/messages").json()["results"]
        assert not any(m["replaced"] for m in listed)
        assert "Answered again" not in client.get(f"/api/conversations/{conversation}/export").content.decode()

    def test_a_retry_names_the_reply_it_replaces(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        first = post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"}).json()["message"]
        again = post(client, f"/api/conversations/{conversation}/retry").json()["message"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert Message.objects.get(pk=again["id"]).replaces_id == first["id"]
        listed = client.get(f"/api/conversations/{conversation}/messages").json()["results"]
        assert [(m["id"], m["replaced"], m["replaces"]) for m in listed if m["role"] == "assistant"] == [
            (first["id"], True, None), (again["id"], False, first["id"]),
        ]  # fmt: skip
        assert again["replaces"] == first["id"]  # the turn's own answer says so too

    def test_the_migration_names_what_earlier_retries_replaced(self, tenant_alpha: TenantFixture) -> None:
        """Before replies named what they replaced, position told: a reply, then another assistant message."""
        import importlib

        from django.db import connection as db

        from apps.chat import engine

        migration = importlib.import_module("apps.chat.migrations.0002_message_replaces")
        call = engine.ToolCall(id="c1", name="hydrology__list_stations", service="hydrology", tool="list_stations",
                               arguments={}, raw_arguments="{}")  # fmt: skip
        conversation = new_conversation(member_client(tenant_alpha))
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "hi")
            first = _store_assistant(record, "hydronet-demo", "the first answer", 0, [])
            failed = _store_assistant(record, "hydronet-demo", "", 0, [], status="error", error="down")
            again = _store_assistant(record, "hydronet-demo", "the answer", 0, [])  # a regeneration
            _store_user_message(record, "Which stations?")
            asked = _store_assistant(record, "hydronet-demo", "", 0, [call])  # a tool round, not a reply
            Message.objects.create(conversation=record, role="tool", tool_call_id="c1", content="S001")
            final = _store_assistant(record, "hydronet-demo", "S001.", 0, [])
            with db.cursor() as cursor:
                cursor.execute(migration.BACKFILL)
            replaces = dict(Message.objects.filter(conversation=record).values_list("pk", "replaces_id"))
        assert replaces[again.pk] == first.pk
        assert replaces[failed.pk] is None
        assert replaces[asked.pk] is None
        assert replaces[final.pk] is None

    def test_a_failed_regeneration_replaces_nothing(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "hi")
            _store_assistant(record, "hydronet-demo", "the answer", 0, [])
            _store_assistant(record, "hydronet-demo", "", 0, [], status="error", error="down")
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]

    def test_a_reply_answered_again_with_a_tool_call_is_left_out_too(self, tenant_alpha: TenantFixture) -> None:
        from apps.chat import engine

        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        call = engine.ToolCall(id="c1", name="hydrology__list_stations", service="hydrology", tool="list_stations",
                               arguments={}, raw_arguments="{}")  # fmt: skip
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "Which stations?")
            half = _store_assistant(record, "hydronet-demo", "half a rep", 0, [], status="incomplete")
            _store_assistant(record, "hydronet-demo", "", 0, [call], replaces=half.pk)  # the retry asked for a tool
            Message.objects.create(conversation=record, role="tool", tool_call_id="c1", content="S001")
            _store_assistant(record, "hydronet-demo", "S001.", 0, [])
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
        assert "half a rep" not in json.dumps(history)
        assert history[1]["tool_calls"][0]["id"] == "c1"

    def test_a_call_whose_id_an_earlier_turn_used_is_left_out_without_its_result(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A server whose ids repeat across turns: the first turn's result must not count for the second's call,
        which failed before its result was stored (the model server refuses a call without its result)."""
        from apps.chat import engine

        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        call = engine.ToolCall(id="call_0", name="hydrology__list_stations", service="hydrology",
                               tool="list_stations", arguments={}, raw_arguments="{}")  # fmt: skip
        with schema_context(tenant_alpha.tenant.schema_name):
            record = Conversation.objects.get(pk=conversation)
            _store_user_message(record, "Which stations?")
            _store_assistant(record, "hydronet-demo", "", 0, [call])
            Message.objects.create(conversation=record, role="tool", tool_call_id="call_0", content="S001")
            _store_assistant(record, "hydronet-demo", "S001.", 0, [])
            _store_user_message(record, "And now?")
            _store_assistant(record, "hydronet-demo", "Let me look.", 0, [call])  # its result never stored
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
        assert history[-1] == {"role": "assistant", "content": "Let me look."}
        assert history[1]["tool_calls"][0]["id"] == "call_0"

    def test_bad_input_is_a_400(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        post(client, f"/api/conversations/{conversation}/messages", {"content": "hi"})
        for body, code in (({"content": "again"}, "invalid_input"), ({"stream": "maybe"}, "invalid_input"),
                           ({"model": "gpt-imaginary"}, "unknown_model")):  # fmt: skip
            response = post(client, f"/api/conversations/{conversation}/retry", body)
            assert (response.status_code, response.json()["error"]["code"]) == (400, code)
        assert len(stored(tenant_alpha, conversation)) == 2

    def test_only_the_owner_may_retry(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        from tests.conftest import api_key_secret

        alice = member_client(tenant_alpha)
        conversation = new_conversation(alice)
        with schema_context(tenant_alpha.tenant.schema_name):
            _store_user_message(Conversation.objects.get(pk=conversation), "hi")  # unanswered
        path = f"/api/conversations/{conversation}/retry"
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        assert post(admin, path).status_code == 403  # reads everyone's conversations, writes to none
        assert post(member_client(tenant_alpha), path).status_code == 404  # another member's
        assert post(member_client(tenant_beta), path).status_code == 404  # another tenant's
        viewer = member_client(tenant_alpha, "viewer")
        with schema_context(tenant_alpha.tenant.schema_name):
            own = Conversation.objects.create(user=viewer.member)
            _store_user_message(own, "hi")
        refused = post(viewer, f"/api/conversations/{own.pk}/retry")
        assert refused.json()["error"]["details"] == {"permission": "create_conversation"}
        key = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        assert post(key, path).json()["error"]["code"] == "member_required"
        assert [m.role for m in stored(tenant_alpha, conversation)] == ["user"]
        assert self.usage_events(tenant_alpha) == 0


class TestEdit:
    """POST /api/conversations/{id}/edit asks the last question again, changed."""

    def test_the_edited_question_and_its_answer_leave_what_the_model_reads(
        self, tenant_alpha: TenantFixture, hydrology: Any, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}"
        assert post(client, f"{url}/messages", {"content": "hello"}).status_code == 200
        assert post(client, f"{url}/messages", {"content": QUESTION}).status_code == 200  # with a tool call
        asked = stored(tenant_alpha, conversation)
        edited_question = next(m for m in reversed(asked) if m.role == "user")
        assert edited_question.content == QUESTION
        model_requests.clear()
        events = sse(post(client, f"{url}/edit", {"content": "站点 S002 最近的水位是多少?", "stream": True}))
        assert events[-1][0] == "done"
        sent = model_requests[0]
        assert sent[-1] == {"role": "user", "content": "站点 S002 最近的水位是多少?"}
        assert QUESTION not in json.dumps(sent, ensure_ascii=False)  # nor its tool call, nor its answer
        assert [m["role"] for m in sent[1:-1]] == ["user", "assistant"]  # "hello" and its answer stand
        after = stored(tenant_alpha, conversation)
        new_question = next(m for m in reversed(after) if m.role == "user")
        assert new_question.replaces_id == edited_question.pk
        assert after[: len(asked)] == asked  # nothing stored is changed or deleted
        with schema_context(tenant_alpha.tenant.schema_name):
            history = model_history(Conversation.objects.get(pk=conversation), limit=50)
        assert QUESTION not in json.dumps(history, ensure_ascii=False)  # later turns read the edit only

        # The API, the page and the download say what no longer stands: the question and all its turn.
        listed = client.get(f"{url}/messages").json()["results"]
        replaced = {m["id"] for m in listed if m["replaced"]}
        assert next(m for m in listed if m["id"] == new_question.pk)["replaces"] == edited_question.pk
        turn = {m.pk for m in after if edited_question.pk <= m.pk < new_question.pk}
        assert replaced == turn
        assert len(turn) >= 4  # the question, the call, the tool's result, the answer
        for size in (1, 2, 3, 4, 5, 6):  # whichever page the edit is on
            pages = client.get(f"{url}/messages", {"page_size": size, "page": 2}).json()
            assert {m["id"] for m in pages["results"] if m["replaced"]} == turn & {m["id"] for m in pages["results"]}
        text = client.get(f"{url}/export").content.decode()
        assert text.count("*Edited and asked again below.*") == 1
        assert "*Answered again below.*" not in text  # its answer is under the question's mark, not a retry's

    def test_bad_input_and_an_empty_conversation_change_nothing(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}/edit"
        empty = post(client, url, {"content": "something"})
        assert (empty.status_code, empty.json()["error"]["code"]) == (409, "nothing_to_edit")
        assert post(client, f"/api/conversations/{conversation}/messages", {"content": "hello"}).status_code == 200
        before = stored(tenant_alpha, conversation)
        for body, code in (({"content": "  "}, "invalid_input"), ({}, "invalid_input"),
                           ({"content": "x" * 100_000}, "message_too_long"),
                           ({"content": "hi", "model": "no-such-model"}, "unknown_model"),
                           ({"content": "hi", "extra": 1}, "invalid_input")):  # fmt: skip
            response = post(client, url, body)
            assert response.status_code == 400, (body, response.content)
            assert response.json()["error"]["code"] == code
        assert stored(tenant_alpha, conversation) == before
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 1  # only the first question's call

    def test_only_the_owner_with_create_conversation_edits(self, tenant_alpha: TenantFixture) -> None:
        owner = member_client(tenant_alpha)
        conversation = new_conversation(owner)
        assert post(owner, f"/api/conversations/{conversation}/messages", {"content": "hello"}).status_code == 200
        before = stored(tenant_alpha, conversation)
        url = f"/api/conversations/{conversation}/edit"
        assert post(member_client(tenant_alpha), url, {"content": "mine now"}).status_code == 404
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        assert post(admin, url, {"content": "mine now"}).status_code == 403  # admins read others', not write
        assert post(member_client(tenant_alpha, "viewer"), url, {"content": "mine now"}).status_code == 403
        assert stored(tenant_alpha, conversation) == before


class TestTheQuestionMeant:
    """A retry or an edit may name the question it means, the last one its client shows: another tab or client may
    have asked a newer one since, whose answer (or itself) it replaced instead of the one the member meant."""

    def test_each_turn_says_which_question_it_answered(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}"
        done = sse(post(client, f"{url}/messages", {"content": "hi", "stream": True}))[-1]
        (question,) = [m.pk for m in stored(tenant_alpha, conversation) if m.role == "user"]
        assert (done[0], done[1]["question_id"]) == ("done", question)
        again = sse(post(client, f"{url}/retry", {"stream": True, "question": question}))[-1]
        assert (again[0], again[1]["question_id"]) == ("done", question)
        settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
        failed = sse(post(client, f"{url}/edit", {"content": "hello", "stream": True, "question": question}))[-1]
        edit = stored(tenant_alpha, conversation)[-2]
        assert (failed[0], edit.role, edit.replaces_id) == ("error", "user", question)
        assert failed[1]["question_id"] == edit.pk

    def test_a_question_asked_since_refuses_them_and_nothing_is_stored_or_charged(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}"
        assert post(client, f"{url}/messages", {"content": "Q1"}).status_code == 200
        seen = stored(tenant_alpha, conversation)[0].pk  # what the stale tab shows as the last question
        assert post(client, f"{url}/messages", {"content": "Q2"}).status_code == 200  # asked in another tab
        before = stored(tenant_alpha, conversation)
        for path, body in (("retry", {"question": seen}), ("edit", {"content": "Q1, corrected", "question": seen})):
            for stream in (False, True):
                response = post(client, f"{url}/{path}", {**body, "stream": stream})
                assert response.status_code == 409, response.content
                error = response.json()["error"]
                assert (error["code"], error["details"]) == ("conversation_changed", {"question": before[2].pk})
                assert error["message"].startswith("A newer question has been asked in this conversation")
        assert stored(tenant_alpha, conversation) == before
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 2  # the two questions' calls, no more

    def test_a_question_meant_must_be_an_id(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        url = f"/api/conversations/{conversation}"
        assert post(client, f"{url}/messages", {"content": "Q1"}).status_code == 200
        for question in ("1", 1.0, True, 0, -3):
            for path, body in (("retry", {}), ("edit", {"content": "Q1?"})):
                response = post(client, f"{url}/{path}", {**body, "question": question})
                assert response.status_code == 400, (path, question)
                assert list(response.json()["error"]["details"]) == ["question"]
        response = post(client, f"{url}/messages", {"content": "Q2", "question": 1})  # a new question means none
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_input")


class _NulModel(BaseHTTPRequestHandler):
    """A model server whose answer has NUL characters in it (and in the arguments of a tool call it asks for),
    which PostgreSQL cannot store in text or jsonb."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if any(m["role"] == "tool" for m in request["messages"]):
            chunks = [{"choices": [{"index": 0, "delta": {"content": "S001 is at\u0000 2.1 m"}}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
        else:
            call = {"index": 0, "id": "c1", "function": {"name": "hydrology__get_water_levels",
                                                        "arguments": '{"station": "S001\\u0000"}'}}  # fmt: skip
            chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]  # fmt: skip
        body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_nul_characters_from_the_model_are_stored_as_replacement_characters(
    tenant_alpha: TenantFixture, hydrology: Any, settings: Any
) -> None:
    """A model (a tenant's own) can send what PostgreSQL refuses to store: the turn still completes."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NulModel)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        settings.LLM_BASE_URL = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        response = post(client, f"/api/conversations/{conversation}/messages", {"content": "S001?"})
        assert response.status_code == 200, response.content
        *_question, call, tool, answer = stored(tenant_alpha, conversation)
        assert call.tool_calls[0]["arguments"] == '{"station": "S001\\u0000"}'  # the raw JSON text, as sent
        assert tool.arguments == {"station": "S001\ufffd"}
        assert answer.content == "S001 is at\ufffd 2.1 m"
        assert client.get(f"/api/conversations/{conversation}/export").status_code == 200
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    "arguments",
    ['{"station": NaN}', '{"station": -Infinity}', '{"station": 1e999}',
     '{"station": ' + "[" * 1000 + "]" * 1000 + "}"],
    ids=["nan", "infinity", "1e999", "nested"],
)  # fmt: skip
def test_arguments_json_cannot_carry_go_back_to_the_model_as_not_an_object(
    tenant_alpha: TenantFixture, hydrology: Any, settings: Any, arguments: str
) -> None:
    """``json.loads`` took NaN and the infinities: the ``tool_call`` event carried a NaN the browser's JSON.parse
    refuses, and storing the tool message broke the stream (PostgreSQL's "Token NaN is invalid"). Nesting that
    deep overflowed the recursion of what stores them (a 500)."""

    def answer(request: bytes) -> bytes:
        if any(message["role"] == "tool" for message in json.loads(request)["messages"]):
            return sse_body({"choices": [{"index": 0, "delta": {"content": "Sorry."}, "finish_reason": "stop"}]})
        call = {"index": 0, "id": "c1", "function": {"name": "hydrology__get_water_levels", "arguments": arguments}}
        return sse_body({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]})

    client = member_client(tenant_alpha)
    conversation = new_conversation(client)
    with canned_server(answer, content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        events = dict(sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "S001?",
                                                                                         "stream": True})))  # fmt: skip
    assert events["tool_call"]["arguments"] is None
    assert events["tool_result"]["is_error"] is True
    assert events["tool_result"]["result"].startswith("The arguments are not a JSON object: ")
    assert "done" in events
    _question, asked, tool, _answer = stored(tenant_alpha, conversation)
    assert asked.tool_calls[0]["arguments"] == arguments  # the model's text, as sent
    assert (tool.arguments, tool.status) == (None, "error")


def turn_asking_for_calls(
    tenant: TenantFixture, settings: Any, count: int, sent: list[list[dict[str, Any]]]
) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """A streamed turn in a new conversation whose model asks for ``count`` tool calls in one reply: the
    conversation's id and the events. ``sent`` gets what the model was sent, request by request."""
    client = member_client(tenant)
    conversation = new_conversation(client)
    with canned_server(many_calls_model(count, sent), content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        events = sse(post(client, f"/api/conversations/{conversation}/messages", {"content": "Stations?",
                                                                                 "stream": True}))  # fmt: skip
    return conversation, events


def test_calls_past_the_most_of_one_reply_are_answered_not_run(
    tenant_alpha: TenantFixture, hydrology: Any, settings: Any
) -> None:
    """A model asked for 40 tool calls in one reply, and the turn ran all 40, one after another, each for up to
    its timeout: a web thread held, the workspace's MCP server flooded. The first 16 run, uncharged ones answer
    the others, and every call of the reply is answered, as the model server requires on the next request."""
    sent: list[list[dict[str, Any]]] = []
    ids = [f"call_{n}" for n in range(40)]
    not_run = "Not run: the model asked for 40 tool calls in one reply; at most 16 are run."
    conversation, events = turn_asking_for_calls(tenant_alpha, settings, 40, sent)
    assert events[-1][0] == "done"
    assert [data["id"] for kind, data in events if kind == "tool_call"] == ids
    results = [data for kind, data in events if kind == "tool_result"]
    assert [(data["id"], data["is_error"]) for data in results] == [(i, n >= 16) for n, i in enumerate(ids)]
    assert all("S001" in data["result"] for data in results[:16])
    assert [data["result"] for data in results[16:]] == [not_run] * 24
    assert charged_tool_calls(tenant_alpha) == 16  # the MCP server was called 16 times
    tools = [message for message in stored(tenant_alpha, conversation) if message.role == "tool"]
    assert [(tool.tool_call_id, tool.error) for tool in tools] == [(i, not_run if n >= 16 else "")
                                                                  for n, i in enumerate(ids)]  # fmt: skip
    assert [message["tool_call_id"] for message in sent[-1] if message["role"] == "tool"] == ids


def test_a_reply_of_more_calls_than_are_read_fails_the_turn_and_runs_none(
    tenant_alpha: TenantFixture, hydrology: Any, settings: Any
) -> None:
    sent: list[list[dict[str, Any]]] = []
    conversation, events = turn_asking_for_calls(tenant_alpha, settings, 1001, sent)
    assert [kind for kind, _data in events] == ["error"]
    assert events[0][1]["message"] == "The model asked for more than 1000 tool calls in one reply."
    assert [(message.role, message.status) for message in stored(tenant_alpha, conversation)] == [
        ("user", "complete"), ("assistant", "error"),
    ]  # fmt: skip
    assert charged_tool_calls(tenant_alpha) == 0
    assert len(sent) == 1


def test_api_keys_use_v1_not_the_conversations_api(tenant_alpha: TenantFixture) -> None:
    from tests.conftest import api_key_secret

    client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
    response = post(client, "/api/conversations")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "member_required"


class TestOneTurnAtATime:
    """A second turn in a conversation while one is answering is a 409: their messages would interleave, and
    which reply or question stands replaced could not be told by their order. A stopped turn frees it at once
    (tests/chat/test_streaming_live.py, where the client really goes away)."""

    def calls(self, tenant: TenantFixture) -> Any:
        from django.utils import timezone
        from django_redis import get_redis_connection

        from apps.usage.meter import month_key

        return get_redis_connection("default").hget(
            month_key(tenant.tenant.schema_name, timezone.now().date()), "calls"
        )

    def test_a_turn_while_another_streams_is_refused_and_charged_nothing(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation, other = new_conversation(client), new_conversation(client)
        path = f"/api/conversations/{conversation}"
        answering = post(client, f"{path}/messages", {"content": "hello #long", "stream": True})
        chunks = iter(answering.streaming_content)
        assert b"event: token" in next(chunks)  # the turn is under way, its question stored
        charged = self.calls(tenant_alpha)
        for action, body in (("messages", {"content": "and now?"}), ("retry", {}), ("edit", {"content": "hi"}),
                             ("messages", {"content": "and now?", "stream": True})):  # fmt: skip
            refused = post(client, f"{path}/{action}", body)
            assert refused.status_code == 409, (action, refused.content)
            assert refused["Content-Type"] == "application/json"  # refused before any stream began
            assert refused.json()["error"]["code"] == "conversation_busy"
        assert self.calls(tenant_alpha) == charged
        assert [m.content for m in stored(tenant_alpha, conversation) if m.role == "user"] == ["hello #long"]
        assert post(client, f"/api/conversations/{other}/messages", {"content": "hi"}).status_code == 200
        assert b"event: done" in b"".join(chunks)
        answered = post(client, f"{path}/messages", {"content": "and now?"})  # the first turn is over
        assert answered.status_code == 200, answered.content

    def test_a_turn_that_streams_for_longer_than_the_hold_keeps_it(
        self, tenant_alpha: TenantFixture, settings: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The hold was renewed only by a charge: an answer that streamed for longer than its ttl (300 s) let a
        second turn in, and their messages interleaved (QA, 2026-12-07)."""
        settings.CHAT_TURN_HOLD_SECONDS = 1
        monkeypatch.setattr(engine, "KEEP_CLAIM_EVERY_SECONDS", 0.3)
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        path = f"/api/conversations/{conversation}/messages"
        answering = post(client, path, {"content": "hello #long", "stream": True})
        chunks = iter(answering.streaming_content)
        assert b"event: token" in next(chunks)
        for _ in range(4):  # 1.6 s of streaming, past the hold's 1 s
            time.sleep(0.4)
            next(chunks)
        refused = post(client, path, {"content": "and now?"})
        assert refused.status_code == 409, refused.content
        assert b"event: done" in b"".join(chunks)

    def test_a_refused_or_failed_turn_frees_it(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        path = f"/api/conversations/{conversation}/messages"
        assert post(client, path, {"content": "hi", "model": "nope"}).status_code == 400
        assert post(client, path, {"content": "hi #error500"}).status_code == 502
        failed = sse(post(client, path, {"content": "hi #broken", "stream": True}))
        assert failed[-1][0] == "error"
        assert post(client, path, {"content": "hi"}).status_code == 200

    def test_a_hold_left_by_a_worker_that_died_ends_with_its_time(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, settings: Any
    ) -> None:
        from django_redis import get_redis_connection

        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        key = f"{settings.CACHE_KEY_PREFIX}:turn:{tenant_alpha.tenant.schema_name}:{conversation}"
        get_redis_connection("default").set(key, "a-dead-worker", px=300)
        path = f"/api/conversations/{conversation}/messages"
        assert post(client, path, {"content": "hi"}).status_code == 409
        beta = member_client(tenant_beta)  # another workspace's conversation of the same id is its own
        with schema_context(tenant_beta.tenant.schema_name):
            Conversation.objects.create(pk=conversation, user=beta.member, title="Theirs")
        assert post(beta, path, {"content": "hi"}).status_code == 200
        time.sleep(0.35)
        assert post(client, path, {"content": "hi"}).status_code == 200
