"""A chat turn while what it depends on changes (the member, the key, the workspace, its tools, its model server,
its plan): the call under way finishes, and no call starts that the change forbids (docs/architecture.md, "A turn
while the workspace changes"). Each change is made at the moment the client sees the model's tool call, between
the model's call and the tool's run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.chat.models import Message
from apps.core.actors import Actor
from apps.tenants.models import Tenant
from apps.usage.models import UsageEvent
from tests.chat.conftest import member_client
from tests.conftest import TenantFixture, admin_of, api_key_secret, bearer

pytestmark = pytest.mark.django_db

QUESTION = "站点 S001 最近的水位是多少?"


def turn_changed_at_its_tool_call(
    client: Client, path: str, body: dict[str, Any], change: Callable[[], None]
) -> list[tuple[str, dict[str, Any]]]:
    """The chat API's streamed turn, with ``change`` made once its tool call is sent: its events."""
    response: Any = client.post(path, body, content_type="application/json")
    assert response.status_code == 200, response.content
    events, changed = [], False
    for chunk in response.streaming_content:
        for block in chunk.decode().strip().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
            if lines["event"] == "tool_call" and not changed:
                changed = True
                change()
    assert changed
    return events


def in_alpha(tenant: TenantFixture, work: Callable[[], Any]) -> Any:
    with schema_context(tenant.tenant.schema_name):
        return work()


def ledger(tenant: TenantFixture) -> list[str]:
    return in_alpha(tenant, lambda: list(UsageEvent.objects.order_by("id").values_list("kind", flat=True)))


def month_calls(tenant: TenantFixture) -> int:
    from django.utils import timezone

    from apps.usage.meter import month_key

    key = month_key(tenant.tenant.schema_name, timezone.now().date())
    return int(get_redis_connection("default").hget(key, "calls") or 0)


def hold_left(tenant: TenantFixture, conversation: int) -> bool:
    key = f"{settings.CACHE_KEY_PREFIX}:turn:{tenant.tenant.schema_name}:{conversation}"
    return bool(get_redis_connection("default").exists(key))


@pytest.fixture
def asking(tenant_alpha: TenantFixture, hydrology: Any) -> tuple[Client, int]:
    client = member_client(tenant_alpha)
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
    return client, conversation


def assert_stopped(
    tenant: TenantFixture, conversation: int, events: list[tuple[str, dict[str, Any]]], code: str
) -> None:
    """The turn ended with a clean error event, its question and the model's tool call kept, the tool not run
    (charged only for the model's round), the reply marked failed, and the conversation free."""
    kind, error = events[-1]
    assert (kind, error.get("code")) == ("error", code), events[-1]
    assert "tool_result" not in [kind for kind, _data in events]
    stored = in_alpha(tenant, lambda: list(Message.objects.filter(conversation_id=conversation).order_by("id")))
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "complete"),
                                                    ("assistant", "error")]  # fmt: skip
    assert stored[0].content == QUESTION
    assert stored[1].tool_calls[0]["name"] == "hydrology__get_water_levels"
    assert stored[2].error == error["message"]
    assert error["message_id"] == stored[2].pk
    assert ledger(tenant) == ["model"]
    assert month_calls(tenant) == 1
    assert not hold_left(tenant, conversation)


class TestTheMember:
    def test_deactivated_mid_turn_the_tool_is_not_run(self, tenant_alpha: TenantFixture, asking: Any) -> None:
        from apps.accounts.services import user_deactivate

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"

        def deactivate() -> None:
            in_alpha(tenant_alpha, lambda: user_deactivate(actor=Actor(label="tests"), user=client.member))

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, deactivate)
        assert_stopped(tenant_alpha, conversation, events, "access_changed")
        assert events[-1][1]["status"] == 403

    def test_demoted_to_viewer_mid_turn(self, tenant_alpha: TenantFixture, asking: Any) -> None:
        from apps.accounts.services import user_change_role

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"

        def demote() -> None:
            admin = Actor(user=admin_of(tenant_alpha))
            in_alpha(tenant_alpha, lambda: user_change_role(actor=admin, user=client.member, role="viewer"))

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, demote)
        assert_stopped(tenant_alpha, conversation, events, "access_changed")


class TestTheWorkspace:
    def test_suspended_mid_turn(self, tenant_alpha: TenantFixture, asking: Any) -> None:
        from apps.tenants.services import tenant_suspend

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"

        def suspend() -> None:
            tenant_suspend(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), actor=Actor(label="staff"))

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, suspend)
        assert_stopped(tenant_alpha, conversation, events, "tenant_suspended")

    def test_the_plan_cut_to_the_calls_made_refuses_the_tool_call(
        self, tenant_alpha: TenantFixture, asking: Any
    ) -> None:
        """The meter read the plan once, as the turn began: a downgrade to a plan whose quota was already used
        let the turn's later calls through."""
        from apps.plans.models import Plan

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"

        def downgrade() -> None:
            tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
            tenant.plan = Plan.objects.get(code="free")
            tenant.api_calls_per_month_override = 1
            tenant.save(update_fields=["plan", "api_calls_per_month_override"])

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, downgrade)
        assert_stopped(tenant_alpha, conversation, events, "quota_exceeded")


class TestToolsAndModels:
    @pytest.mark.parametrize("change", ["disabled", "deleted", "moved"])
    def test_a_service_turned_off_mid_turn_is_not_called(
        self, tenant_alpha: TenantFixture, asking: Any, hydrology: Any, change: str
    ) -> None:
        """The tool was run at the address, with the headers, the turn read as it began, after an admin had
        turned its service off, removed it or moved it (a new address has no tools until it is tested)."""
        from apps.mcp import services as mcp

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"
        admin = Actor(user=admin_of(tenant_alpha))

        def turn_off() -> None:
            if change == "disabled":
                in_alpha(tenant_alpha, lambda: mcp.mcp_service_set_active(actor=admin, service=hydrology, active=False))
            elif change == "deleted":
                in_alpha(tenant_alpha, lambda: mcp.mcp_service_delete(actor=admin, service=hydrology))
            else:
                moved = "http://127.0.0.1:9/mcp"
                in_alpha(tenant_alpha, lambda: mcp.mcp_service_update(actor=admin, service=hydrology, url=moved))

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, turn_off)
        kinds = [kind for kind, _data in events]
        assert kinds[-1] == "done"
        result = dict(events)["tool_result"]
        assert result["is_error"] is True
        assert "turned off or removed" in result["result"]
        assert ledger(tenant_alpha) == ["model", "model"]  # the tool was not run, nor charged
        assert not hold_left(tenant_alpha, conversation)

    def test_the_model_taken_off_the_list_mid_turn(
        self, tenant_alpha: TenantFixture, asking: Any, settings: Any
    ) -> None:
        from apps.llm.setup_cache import ai_setup_forget

        client, conversation = asking
        path = f"/api/conversations/{conversation}/messages"

        def withdraw() -> None:
            settings.LLM_MODELS = ["another-model"]
            in_alpha(tenant_alpha, ai_setup_forget)

        events = turn_changed_at_its_tool_call(client, path, {"content": QUESTION, "stream": True}, withdraw)
        assert_stopped(tenant_alpha, conversation, events, "model_unavailable")
        assert "hydronet-demo" in events[-1][1]["message"]


class TestV1:
    def test_an_api_key_revoked_mid_stream_ends_it_with_an_error_chunk(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        from apps.accounts.services import api_key_revoke

        secret = api_key_secret(tenant_alpha, "user")
        client = tenant_alpha.client(**bearer(secret))
        body = {"model": "hydronet-demo", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        response: Any = client.post("/v1/chat/completions", body, content_type="application/json")
        assert response.status_code == 200, response.content
        chunks = iter(response.streaming_content)
        assert b'"role":"assistant"' in next(chunks)

        def revoke() -> None:
            key = ApiKey.objects.get(prefix=secret[3:15])
            api_key_revoke(actor=Actor(user=admin_of(tenant_alpha)), api_key=key)

        in_alpha(tenant_alpha, revoke)
        rest = b"".join(chunks).decode()
        assert '"code":"access_changed"' in rest
        assert rest.rstrip().endswith("data: [DONE]")
        assert ledger(tenant_alpha) == ["model"]  # the round under way, and no tool call after it
        assert month_calls(tenant_alpha) == 1


class TestBetweenTwoRounds:
    """The change made while the tool runs: the tool's call was made (and charged), the next round is not."""

    @pytest.fixture
    def during_the_tool(self, monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
        """``change`` made as the tool call starts, in the request's thread: the call itself runs in a thread of its
        own (``waits.waited``), whose database connection does not see the test's transaction."""
        from apps.chat import engine

        def hook(change: Callable[[], None]) -> None:
            real = engine.waited

            def changing(work: Any) -> Any:
                change()
                return real(work)

            monkeypatch.setattr(engine, "waited", changing)

        return hook

    def test_a_member_deactivated_meanwhile_gets_the_error_of_a_whole_reply(
        self, tenant_alpha: TenantFixture, asking: Any, during_the_tool: Any
    ) -> None:
        from apps.accounts.services import user_deactivate

        client, conversation = asking
        during_the_tool(lambda: in_alpha(tenant_alpha, lambda: user_deactivate(actor=Actor(label="tests"),
                                                                                user=client.member)))  # fmt: skip
        response = client.post(f"/api/conversations/{conversation}/messages", {"content": QUESTION},
                               content_type="application/json")  # fmt: skip
        assert response.status_code == 403, response.content
        error = response.json()["error"]
        assert error["code"] == "access_changed"
        stored = in_alpha(tenant_alpha, lambda: list(Message.objects.filter(conversation_id=conversation)
                                                     .order_by("id")))  # fmt: skip
        assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "complete"),
                                                        ("tool", "complete"), ("assistant", "error")]  # fmt: skip
        assert error["details"]["message_id"] == stored[-1].pk
        assert ledger(tenant_alpha) == ["model", "tool"]
        assert month_calls(tenant_alpha) == 2
        assert not hold_left(tenant_alpha, conversation)

    def test_v1_a_key_deleted_meanwhile_is_refused_and_not_retried(
        self, tenant_alpha: TenantFixture, hydrology: Any, during_the_tool: Any
    ) -> None:
        secret = api_key_secret(tenant_alpha, "user")
        during_the_tool(lambda: in_alpha(tenant_alpha, lambda: ApiKey.objects.filter(prefix=secret[3:15]).delete()))
        body = {"model": "hydronet-demo", "messages": [{"role": "user", "content": QUESTION}]}
        response = tenant_alpha.client(**bearer(secret)).post("/v1/chat/completions", body,
                                                              content_type="application/json")  # fmt: skip
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "access_changed"
        assert response["x-should-retry"] == "false"  # the round and the tool call were charged
        assert ledger(tenant_alpha) == ["model", "tool"]
        assert month_calls(tenant_alpha) == 2
