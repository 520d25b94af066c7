"""MCP services and the tenant's own model provider: SSRF guard, encryption at rest, limits."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import translation
from django_tenants.utils import schema_context

from apps.core import outbound
from apps.core.crypto import decrypt
from apps.core.exceptions import InvalidInput
from apps.llm.models import ModelProvider
from apps.mcp import client as mcp_client
from apps.mcp.models import McpService
from apps.mcp.services import mcp_service_create
from apps.tenants.services import tenant_provision
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, TenantFixture, admin_of, bearer, jwt_pair
from tests.processes import canned_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def internal_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under internal.test resolve to loopback, as a split-horizon DNS would answer for internal hosts."""
    real = outbound.resolve

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host.endswith(".internal.test") else real(host, port)

    monkeypatch.setattr(outbound, "resolve", resolve)


def admin(tenant: TenantFixture) -> Client:
    return tenant.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant, admin_of(tenant))["access"]))


def send(client: Client, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(path, data or {}, content_type="application/json")


def mcp_test_in_english_and_chinese(tenant: TenantFixture, url: str, transport: str) -> tuple[Any, str]:
    """A new MCP service at ``url`` tested by an admin in English (the response) and in Chinese (its message)."""
    client = admin(tenant)
    service = send(client, "post", "/api/mcp-services", {"name": "Tested", "url": url, "type": transport}).json()["id"]
    response = send(client, "post", f"/api/mcp-services/{service}/test")
    chinese = tenant.client(**bearer(jwt_pair(tenant, admin_of(tenant))["access"]))
    return response, send(chinese, "post", f"/api/mcp-services/{service}/test").json()["error"]["message"]


class TestMcpServices:
    def test_add_test_and_list_tools(self, tenant_alpha: TenantFixture, demo_mcp_url: str) -> None:
        client = admin(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": "Hydrology", "url": demo_mcp_url})
        assert created.status_code == 201, created.content
        service = created.json()
        assert service["slug"] == "hydrology"
        assert service["tools"] == []
        tested = send(client, "post", f"/api/mcp-services/{service['id']}/test")
        assert tested.status_code == 200
        names = {tool["name"] for tool in tested.json()["tools"]}
        assert names == {"list_stations", "get_water_levels", "get_rainfall", "get_flood_warning_levels"}
        assert tested.json()["tools_refreshed_at"]

    def test_a_tool_list_with_nul_characters_is_stored(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A tenant's MCP server may describe its tools with NUL characters, which PostgreSQL refuses in jsonb:
        the list is kept with U+FFFD in their place (the server's answer stands in for a real one here)."""
        client = admin(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": "Odd", "url": demo_mcp_url}).json()
        spec = mcp_client.ToolSpec(name="levels", description="Water\x00levels", input_schema={"title": "a\x00b"})
        monkeypatch.setattr(mcp_client, "list_tools", lambda service: mcp_client.ToolListing([spec]))
        tested = send(client, "post", f"/api/mcp-services/{created['id']}/test")
        assert tested.status_code == 200, tested.content
        assert tested.json()["tools"] == [
            {"name": "levels", "exposed_name": "odd__levels", "description": "Water\ufffdlevels",
             "input_schema": {"title": "a\ufffdb"}}
        ]  # fmt: skip

        def failing(service: Any) -> Any:
            raise mcp_client.McpError("bad\x00answer")

        monkeypatch.setattr(mcp_client, "list_tools", failing)
        assert send(client, "post", f"/api/mcp-services/{created['id']}/test").status_code == 400
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=created["id"]).last_error == "bad\ufffdanswer"

    def test_the_sse_transport_lists_and_calls_tools(self, tenant_alpha: TenantFixture, demo_mcp_url: str) -> None:
        """The older transport, over real HTTP: the demo server serves it at /sse."""
        client = admin(tenant_alpha)
        sse_url = demo_mcp_url.removesuffix("/mcp") + "/sse"
        body = {"name": "Hydrology SSE", "url": sse_url, "type": "sse"}
        created = send(client, "post", "/api/mcp-services", body)
        assert created.status_code == 201, created.content
        assert created.json()["type"] == "sse"
        tested = send(client, "post", f"/api/mcp-services/{created.json()['id']}/test")
        assert tested.status_code == 200, tested.content
        assert {tool["name"] for tool in tested.json()["tools"]} >= {"get_water_levels", "list_stations"}
        with schema_context(tenant_alpha.tenant.schema_name):
            service = McpService.objects.get(pk=created.json()["id"])
            outcome = mcp_client.call_tool(service, "list_stations", {})
        assert not outcome.is_error
        assert "S001" in outcome.text
        # The same server through the other transport's URL is not an SSE endpoint: a clear error.
        wrong = send(client, "post", "/api/mcp-services", {"name": "Wrong", "url": demo_mcp_url, "type": "sse"})
        refused = send(client, "post", f"/api/mcp-services/{wrong.json()['id']}/test")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "mcp_unreachable"

    def test_a_slow_tool_fails_in_words_with_its_duration(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """The SDK's own timeout (its text mixed into any language before) is "did not answer in time"."""
        from apps.chat.engine import BoundTool, run_mcp_tool

        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Awkward", url=awkward_mcp_url, timeout_seconds=1)
            tool = BoundTool("awkward__sleepy", service, "sleepy", "", {})
            with translation.override("zh-hans"):
                slow = run_mcp_tool(tool, {"seconds": 10})
            quick = run_mcp_tool(tool, {"seconds": 0})
        assert slow.is_error
        assert slow.text == "工具调用失败：服务器未能及时应答。", slow.text
        assert slow.duration_ms >= 900
        assert (quick.is_error, quick.text) == (False, "awake")

    def test_a_large_answer_is_read_and_a_too_large_one_fails_in_words(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, settings: Any
    ) -> None:
        """Over the SDK's 1 MiB a stream event: read up to MCP_MAX_ANSWER_BYTES (the turn then truncates it)."""
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Awkward", url=awkward_mcp_url)
            large = mcp_client.call_tool(service, "sized", {"chars": 600_000})  # its text travels twice: 1.2 MB
            assert (large.is_error, len(large.text)) == (False, 600_000)
            settings.MCP_MAX_ANSWER_BYTES = 100_000
            with pytest.raises(mcp_client.McpError) as refused:
                mcp_client.call_tool(service, "sized", {"chars": 60_000})
        assert str(refused.value) == "The answer is larger than 97.7\xa0KB, the most HydroNet reads from an MCP server."

    def test_a_too_large_json_answer_fails_in_the_same_words(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, settings: Any
    ) -> None:
        """A server may answer each request with one application/json body instead of an event stream: that
        body is bounded by MCP_MAX_ANSWER_BYTES too (the SDK read it whole, of any size)."""
        json_url = awkward_mcp_url.removesuffix("/mcp") + "/json/mcp"
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Awkward JSON", url=json_url)
            settings.MCP_MAX_ANSWER_BYTES = 100_000
            fits = mcp_client.call_tool(service, "sized", {"chars": 40_000})  # twice in the body: 80 kB
            assert (fits.is_error, len(fits.text)) == (False, 40_000)
            with pytest.raises(mcp_client.McpError) as refused:
                mcp_client.call_tool(service, "sized", {"chars": 60_000})
        assert str(refused.value) == "The answer is larger than 97.7\xa0KB, the most HydroNet reads from an MCP server."

    def test_a_broken_server_is_logged_in_one_line_without_the_sdks_traceback(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, settings: Any, caplog: Any
    ) -> None:
        """A tenant's server whose answer the SDK cannot read put a traceback at ERROR in the platform's log."""
        json_url = awkward_mcp_url.removesuffix("/mcp") + "/json/mcp"
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Awkward JSON", url=json_url)
            settings.MCP_MAX_ANSWER_BYTES = 100_000
            with caplog.at_level(logging.DEBUG, logger="apps.mcp"), pytest.raises(mcp_client.McpError):
                mcp_client.call_tool(service, "sized", {"chars": 60_000})
        assert [r.levelname for r in caplog.records if r.name.startswith("mcp")] == []
        ours = [r for r in caplog.records if r.name == "apps.mcp.client"]
        assert [(r.levelname, r.getMessage()) for r in ours] == [
            ("WARNING", f"MCP service awkward_json of {tenant_alpha.tenant.schema_name} failed: The answer is larger "
                        "than 97.7\xa0KB, the most HydroNet reads from an MCP server."),
        ]  # fmt: skip

    @pytest.mark.parametrize("encoding", ["identity", "gzip"])
    def test_a_json_answer_is_read_no_further_than_its_bound(self, encoding: str) -> None:
        """The bound stops the read at the chunk that passes it, rather than after the whole body, and counts
        the decoded bytes: 10 MB gzipped to 10 kB is still 10 MB."""
        import asyncio
        import gzip

        pulled: list[int] = []

        async def body() -> Any:
            chunk = b"x" * 65_536
            if encoding == "gzip":
                chunk = gzip.compress(b"x" * 10_000_000)
            for _ in range(160 if encoding == "identity" else 1):  # 10 MiB
                pulled.append(len(chunk))
                yield chunk

        def answer(request: Any) -> Any:
            headers = {"content-type": "application/json", "content-encoding": encoding}
            return mcp_client.httpx2.Response(200, headers=headers, stream=_Body(body()))

        class _Body(mcp_client.httpx2.AsyncByteStream):
            def __init__(self, chunks: Any) -> None:
                self.chunks = chunks

            async def __aiter__(self) -> Any:
                async for chunk in self.chunks:
                    yield chunk

        async def read() -> Any:
            transport = mcp_client.BoundedJsonAnswers(mcp_client.httpx2.MockTransport(answer), limit=100_000)
            async with mcp_client.httpx2.AsyncClient(transport=transport) as client:
                return await client.post("http://mcp.test/mcp", json={})

        with pytest.raises(mcp_client.AnswerTooLarge, match="exceeded the 100000 byte limit"):
            asyncio.run(read())
        assert sum(pulled) <= (100_000 + 65_536 if encoding == "identity" else 20_000), pulled

    def test_auth_headers_are_encrypted_and_never_returned(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str
    ) -> None:
        client = admin(tenant_alpha)
        body = {"name": "Secured", "url": demo_mcp_url, "headers": {"Authorization": "Bearer s3cret-token"}}
        created = send(client, "post", "/api/mcp-services", body).json()
        assert created["has_secret_headers"] is True
        assert "s3cret" not in json.dumps(created)
        assert "s3cret" not in json.dumps(client.get(f"/api/mcp-services/{created['id']}").json())
        with schema_context(tenant_alpha.tenant.schema_name):
            row = McpService.objects.get(pk=created["id"])
            assert "s3cret" not in row.secret_headers
            assert json.loads(decrypt(row.secret_headers)) == {"Authorization": "Bearer s3cret-token"}

    @pytest.mark.parametrize(
        ("where", "says"),
        [("model", "answered 404, not as an MCP server"), ("model-sse", "answered 404, not as an MCP server"),
         ("nothing", "Nothing answered at this address")],
    )  # fmt: skip
    def test_a_server_that_is_not_mcp_is_a_clear_400(
        self, tenant_alpha: TenantFixture, demo_model_url: str, where: str, says: str
    ) -> None:
        """In words an admin can act on, in the request's language: not the HTTP library's exception."""
        client = admin(tenant_alpha)
        url = "http://127.0.0.1:9/mcp" if where == "nothing" else f"{demo_model_url}/nothing-here"
        body = {"name": "Not MCP", "url": url, "type": "sse" if where == "model-sse" else "streamable-http"}
        service = send(client, "post", "/api/mcp-services", body)
        response = send(client, "post", f"/api/mcp-services/{service.json()['id']}/test")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "mcp_unreachable"
        assert "Could not list the tools" in error["message"]
        assert says in error["message"]
        assert "Error:" not in error["message"]  # no ConnectError: / MCPError: / HTTPStatusError:
        chinese = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        zh = send(chinese, "post", f"/api/mcp-services/{service.json()['id']}/test").json()["error"]
        assert says not in zh["message"]  # translated
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service.json()["id"]).last_error
        # A new address: the old one's error goes with its tools.
        moved = send(client, "patch", f"/api/mcp-services/{service.json()['id']}", {"url": f"{url}/elsewhere"})
        assert moved.status_code == 200, moved.content
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service.json()["id"]).last_error == ""

    @pytest.mark.parametrize(
        ("transport", "status", "headers", "says"),
        [("streamable-http", 200, {}, "The address is a web page (it answered with text/html), not an MCP endpoint"),
         ("sse", 200, {}, "The address is a web page (it answered with text/html), not an MCP endpoint"),
         ("streamable-http", 307, {"Location": "http://mcp.example.com/mcp"},
          "The address redirects to http://mcp.example.com/mcp, which HydroNet does not follow")],
    )  # fmt: skip
    def test_a_web_page_or_a_redirect_is_named_as_such(
        self, tenant_alpha: TenantFixture, transport: str, status: int, headers: dict[str, str], says: str
    ) -> None:
        """The SDK's own sentences (English, whatever the language) in ours: the zh page shows zh throughout."""
        with canned_server(b"<html>Welcome</html>", status=status, headers=headers) as root:
            response, zh = mcp_test_in_english_and_chinese(tenant_alpha, f"{root}/mcp", transport)
        assert response.status_code == 400
        assert says in response.json()["error"]["message"]
        assert not re.search(r"\b[a-z]{3,} [a-z]{3,}\b", re.sub(r"https?://\S+", "", zh)), zh  # no English left

    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    @pytest.mark.parametrize(
        ("status", "says"),
        [(405, "The address answered 405 (method not allowed): it is probably not an MCP endpoint, or its server "
               "speaks the other transport"),
         (500, "The server failed: it answered 500. Try again later"),
         (503, "The server failed: it answered 503."),
         (401, "The server refused the request (401): check the auth headers."),
         (429, "The server answered 429 (too many requests): try again later."),
         (402, "The server answered 402, an error: check the URL and the auth headers, or ask whoever runs the "
               "server.")],
    )  # fmt: skip
    def test_an_error_status_is_told_with_the_status(
        self, tenant_alpha: TenantFixture, transport: str, status: int, says: str
    ) -> None:
        """Not the SDK's "Server returned an error response", in English on the zh page too, without the status. (An
        MCP server's error is not a web page: one in HTML is said as such, tests/mcp/test_misbehaving_servers.py.)"""
        with canned_server(b'{"error": "oops"}', status=status, content_type="application/json") as root:
            response, zh = mcp_test_in_english_and_chinese(tenant_alpha, f"{root}/mcp", transport)
        assert response.status_code == 400
        assert says in response.json()["error"]["message"]
        assert "Server returned" not in zh
        assert str(status) in zh

    @pytest.mark.parametrize(
        ("status", "says"),
        [(500, "The tool call failed: The server failed: it answered 500."),
         (405, "The tool call failed: The address answered 405 (method not allowed)")],
    )  # fmt: skip
    def test_a_tool_call_answered_with_an_error_status_fails_with_the_status(
        self, tenant_alpha: TenantFixture, status: int, says: str
    ) -> None:
        """A server that starts a session and then answers the call itself with an error status, in a chat."""
        from apps.chat.engine import BoundTool, run_mcp_tool

        def answer(request: bytes) -> bytes:
            message = json.loads(request or b"{}")
            started = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                       "serverInfo": {"name": "canned", "version": "1"}}  # fmt: skip
            if message.get("method") == "initialize":
                return json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": started}).encode()
            return b""

        def status_of(request: bytes) -> int:
            method = json.loads(request or b"{}").get("method")
            return {"initialize": 200, "notifications/initialized": 202, None: 405}.get(method, status)

        with (
            canned_server(answer, status=status_of, content_type="application/json") as root,
            schema_context(tenant_alpha.tenant.schema_name),
        ):
            service = mcp_service_create(actor=TEST_ACTOR, name="Canned", url=f"{root}/mcp", timeout_seconds=5)
            tool = BoundTool("canned__gauge", service, "gauge", "", {})
            outcome = run_mcp_tool(tool, {})
            with translation.override("zh-hans"):
                zh = run_mcp_tool(tool, {})
        assert outcome.is_error
        assert outcome.text.startswith(says), outcome.text
        assert "Server returned" not in zh.text
        assert str(status) in zh.text

    @pytest.mark.parametrize(
        "url",
        ["http://10.0.0.1/mcp", "http://169.254.169.254/latest", "http://[::1]:8000/mcp", "file:///etc/passwd",
         "gopher://x/", "http://2130706433/mcp", "not a url"],
    )  # fmt: skip
    def test_unsafe_urls_are_refused_on_save(self, tenant_alpha: TenantFixture, settings: Any, url: str) -> None:
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        response = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Evil", "url": url})
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["url"]
        assert response.json()["error"]["code"] == "unsafe_url"  # its own code, as docs/api.md says
        with schema_context(tenant_alpha.tenant.schema_name), pytest.raises(InvalidInput) as both:
            mcp_service_create(actor=TEST_ACTOR, name=" ", url=url)  # with other problems: all of them, together
        assert (both.value.code, set(both.value.details)) == ("invalid_input", {"name", "url"})
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not McpService.objects.exists()

    def test_the_guard_applies_again_at_connect_time(
        self, tenant_alpha: TenantFixture, settings: Any, demo_mcp_url: str
    ) -> None:
        client = admin(tenant_alpha)
        service = send(client, "post", "/api/mcp-services", {"name": "Was fine", "url": demo_mcp_url}).json()
        settings.OUTBOUND_ALLOWED_NETWORKS = []  # the address is no longer allowed when we connect
        response = send(client, "post", f"/api/mcp-services/{service['id']}/test")
        assert response.status_code == 400
        assert "loopback" in response.json()["error"]["message"]

    def test_a_name_refused_at_connect_time_keeps_its_address_to_us(
        self, tenant_alpha: TenantFixture, settings: Any, demo_mcp_url: str, internal_dns: None
    ) -> None:
        """Which address our resolver gave a name is not the tenant's to learn (split-horizon DNS)."""
        client = admin(tenant_alpha)
        url = demo_mcp_url.replace("127.0.0.1", "mcp.internal.test")
        service = send(client, "post", "/api/mcp-services", {"name": "Internal", "url": url}).json()
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        response = send(client, "post", f"/api/mcp-services/{service['id']}/test")
        assert response.status_code == 400
        said = response.json()["error"]["message"]
        assert "mcp.internal.test" in said
        assert "it points to an address that is not allowed, a loopback address." in said
        assert "127.0.0.1" not in said
        on_save = send(client, "post", "/api/mcp-services", {"name": "Again", "url": url}).json()["error"]
        assert on_save["message"] == (
            "mcp.internal.test points to an address that is not allowed: a loopback address. "
            "Only public internet addresses can be used."
        )
        assert "127.0.0.1" not in json.dumps(on_save)

    def test_the_plan_limit_on_create_and_enable(self, demo_mcp_url: str) -> None:
        free = tenant_provision(
            name="Tiny", slug="tiny-water", plan="free", admin_email="boss@tiny.example.com",
            admin_password=ADMIN_PASSWORD, actor=TEST_ACTOR,
        ).tenant  # fmt: skip
        tiny = TenantFixture(free, "boss@tiny.example.com", ADMIN_PASSWORD)
        client = admin(tiny)
        first = send(client, "post", "/api/mcp-services", {"name": "One", "url": demo_mcp_url})
        assert first.status_code == 201
        second = send(client, "post", "/api/mcp-services", {"name": "Two", "url": demo_mcp_url})
        assert second.status_code == 402
        assert second.json()["error"]["details"] == {"quota": "mcp_services", "limit": 1, "used": 1, "resets_at": None}
        assert send(client, "post", f"/api/mcp-services/{first.json()['id']}/disable").status_code == 200
        assert send(client, "post", "/api/mcp-services", {"name": "Two", "url": demo_mcp_url}).status_code == 201
        enabled = send(client, "post", f"/api/mcp-services/{first.json()['id']}/enable")
        assert enabled.status_code == 402

    def test_disabled_services_offer_no_tools(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        from apps.accounts.models import Role
        from apps.chat.services import tools_for
        from apps.core.actors import Actor
        from tests.conftest import make_member

        client = admin(tenant_alpha)
        send(client, "post", f"/api/mcp-services/{hydrology.pk}/disable")
        with schema_context(tenant_alpha.tenant.schema_name):
            assert tools_for(Actor(user=make_member(tenant_alpha, Role.USER))) == []

    def test_a_disabled_tool_is_kept_from_the_model(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        from apps.audit.models import AuditEvent
        from tests.chat.conftest import member_client

        client = admin(tenant_alpha)
        path = f"/api/mcp-services/{hydrology.pk}"
        changed = send(client, "patch", path, {"disabled_tools": ["get_water_levels", "get_water_levels"]})
        assert changed.status_code == 200, changed.content
        assert changed.json()["disabled_tools"] == ["get_water_levels"]
        assert len(changed.json()["tools"]) == 4  # the server's list is kept whole
        member = member_client(tenant_alpha)
        conversation = send(member, "post", "/api/conversations").json()["id"]
        question = {"content": "站点 S001 最近的水位是多少?", "stream": True}
        body = b"".join(send(member, "post", f"/api/conversations/{conversation}/messages", question).streaming_content)
        assert b"event: tool_call" not in body  # the demo model calls only tools it is offered
        assert b"event: done" in body
        with schema_context(tenant_alpha.tenant.schema_name):
            event = AuditEvent.objects.filter(action="mcp_service.updated").latest("id")
            assert event.metadata == {"fields": ["disabled_tools"]}
        offered_again = send(client, "patch", path, {"disabled_tools": []})
        assert offered_again.json()["disabled_tools"] == []
        body = b"".join(send(member, "post", f"/api/conversations/{conversation}/messages", question).streaming_content)
        assert b'"tool":"get_water_levels"' in body

    @pytest.mark.parametrize(
        "disabled", [["get_water_level"], "get_water_levels", [1], ["x" * 201], [None], ["get_rainfall"] * 501]
    )
    def test_disabling_what_is_not_a_loaded_tool_is_a_400(
        self, tenant_alpha: TenantFixture, hydrology: Any, disabled: Any
    ) -> None:
        response = send(admin(tenant_alpha), "patch", f"/api/mcp-services/{hydrology.pk}", {"disabled_tools": disabled})
        assert response.status_code == 400
        assert "disabled_tools" in response.json()["error"]["details"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).disabled_tools == []

    def test_too_many_disabled_tools_are_refused_for_their_number_before_each_is_checked(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        """DRF checks a list's length after its items, and answers every bad item: a body of a million took seconds."""
        body = {"disabled_tools": ["x" * 201] * 501}
        response = send(admin(tenant_alpha), "patch", f"/api/mcp-services/{hydrology.pk}", body)
        assert response.json()["error"]["details"] == {
            "disabled_tools": ["Ensure this field has no more than 500 elements."]
        }

    def test_tools_kept_from_the_model_stay_kept_when_the_url_changes(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        """A new URL forgets the loaded tools but not disabled_tools; saving that list back was a 400."""
        client = admin(tenant_alpha)
        path = f"/api/mcp-services/{hydrology.pk}"
        assert send(client, "patch", path, {"disabled_tools": ["get_rainfall"]}).status_code == 200
        moved = send(client, "patch", path, {"url": f"{hydrology.url}?moved=1"}).json()
        assert (moved["tools"], moved["disabled_tools"]) == ([], ["get_rainfall"])
        again = send(client, "patch", path, {"disabled_tools": moved["disabled_tools"]})  # the form's round trip
        assert again.status_code == 200, again.content
        assert send(client, "patch", path, {"disabled_tools": ["get_rainfal"]}).status_code == 400  # typos still
        tested = send(client, "post", f"{path}/test").json()
        assert (len(tested["tools"]), tested["disabled_tools"]) == (4, ["get_rainfall"])
        assert send(client, "patch", path, {"disabled_tools": []}).json()["disabled_tools"] == []

    def test_only_admins_of_the_tenant_choose_tools(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, hydrology: Any
    ) -> None:
        from tests.chat.conftest import member_client

        path = f"/api/mcp-services/{hydrology.pk}"
        user = send(member_client(tenant_alpha), "patch", path, {"disabled_tools": ["get_rainfall"]})
        assert user.json()["error"]["details"] == {"permission": "manage_services"}
        assert send(admin(tenant_beta), "patch", path, {"disabled_tools": ["get_rainfall"]}).status_code == 404
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).disabled_tools == []

    @pytest.mark.parametrize(
        ("field", "bad"),
        [("url", "ftp://x/"), ("type", "websocket"), ("timeout_seconds", 999), ("headers", {"Bad Name": "x"}),
         # JSON types: a number is not a string, nor a string a number
         ("name", 5), ("url", ["http://x/"]), ("timeout_seconds", "5"), ("timeout_seconds", 5.0),
         ("headers", {"X-Token": 5}), ("disabled_tools", [5])],
    )  # fmt: skip
    def test_bad_updates_are_400s(self, tenant_alpha: TenantFixture, hydrology: Any, field: str, bad: Any) -> None:
        response = send(admin(tenant_alpha), "patch", f"/api/mcp-services/{hydrology.pk}", {field: bad})
        assert response.status_code == 400
        assert field in response.json()["error"]["details"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).timeout_seconds == hydrology.timeout_seconds

    def test_a_timeout_given_as_a_string_is_refused_on_create(self, tenant_alpha: TenantFixture) -> None:
        body = {"name": "Hydrology", "url": "http://127.0.0.1:9/mcp", "timeout_seconds": "5"}
        response = send(admin(tenant_alpha), "post", "/api/mcp-services", body)
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["timeout_seconds"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not McpService.objects.exists()

    @pytest.mark.parametrize(
        ("headers", "says"),
        [({"X-Name": "Müller"}, "ASCII"), ({"X-Token": "a\tb"}, "ASCII"), ({"Host": "other.example"}, "Host"),
         ({"content-length": "0"}, "content-length"), ({"Mcp-Session-Id": "x"}, "Mcp-Session-Id"),
         ({"X-A\n": "v"}, "ASCII")],  # "$" matched before the final newline
    )  # fmt: skip
    def test_headers_that_would_break_the_connection_are_refused(
        self, tenant_alpha: TenantFixture, hydrology: Any, headers: dict[str, str], says: str
    ) -> None:
        """A value the client cannot send failed every connect after a 200; Host chose another site."""
        response = send(admin(tenant_alpha), "patch", f"/api/mcp-services/{hydrology.pk}", {"headers": headers})
        assert response.status_code == 400
        assert says in response.json()["error"]["details"]["headers"][0]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=hydrology.pk).secret_headers == hydrology.secret_headers

    @pytest.mark.parametrize("slug", ["x__y", "x_", "x___", "_x", "9x", "X"])
    def test_a_slug_cannot_hold_the_tool_names_separator(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str, slug: str
    ) -> None:
        """ "__" joins a slug to its tools' names: x__y's tools were shown as service "x", tool "y__..."."""
        body = {"name": "Sep", "url": demo_mcp_url, "slug": slug}
        response = send(admin(tenant_alpha), "post", "/api/mcp-services", body)
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["slug"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert mcp_service_create(actor=TEST_ACTOR, name="a_ b__c!", url=demo_mcp_url).slug == "a_b_c"

    def test_a_url_too_long_once_encoded_is_a_400_naming_it(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        """ "é" is typed as one character and stored as six ("%C3%A9"): past the column's 500, a 500 DataError."""
        client = admin(tenant_alpha)
        url = "http://127.0.0.1:38843/" + "é" * 100
        created = send(client, "post", "/api/mcp-services", {"name": "L1", "url": url})
        assert created.status_code == 400, created.content
        assert created.json()["error"]["code"] == "invalid_input"
        assert list(created.json()["error"]["details"]) == ["url"]
        assert "623 characters" in created.json()["error"]["details"]["url"][0]
        changed = send(client, "patch", f"/api/mcp-services/{hydrology.pk}", {"url": url})
        assert changed.status_code == 400, changed.content
        assert list(changed.json()["error"]["details"]) == ["url"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert list(McpService.objects.values_list("url", flat=True)) == [hydrology.url]

    @pytest.mark.parametrize(
        ("field", "value"), [("headers", {"X-A": "v\n"}), ("headers", {"X-A\n": "v"}), ("slug", "abc\n")]
    )
    def test_a_final_newline_is_refused_where_the_api_would_trim_it(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str, field: str, value: Any
    ) -> None:
        """The API trims text values (not header names), the service must not rely on it: "$" let these through."""
        with schema_context(tenant_alpha.tenant.schema_name):
            with pytest.raises(InvalidInput) as refused:
                mcp_service_create(actor=TEST_ACTOR, name="Nl", url=demo_mcp_url, **{field: value})
            assert list(refused.value.details) == [field]
            assert not McpService.objects.exists()

    @pytest.mark.parametrize("name", ["L\u0001", "a\nb", "a\tb", "x\x7f"])
    def test_a_name_with_control_characters_is_a_400(
        self, tenant_alpha: TenantFixture, hydrology: Any, name: str
    ) -> None:
        client = admin(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": name, "url": hydrology.url})
        assert created.status_code == 400, created.content
        assert created.json()["error"]["details"] == {"name": ["A name cannot hold control characters."]}
        changed = send(client, "patch", f"/api/mcp-services/{hydrology.pk}", {"name": name})
        assert changed.status_code == 400, changed.content
        assert list(changed.json()["error"]["details"]) == ["name"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert list(McpService.objects.values_list("name", flat=True)) == ["Hydrology"]


class TestModelProvider:
    def test_the_key_is_encrypted_never_returned_and_used(
        self, tenant_alpha: TenantFixture, settings: Any, demo_model_url: str
    ) -> None:
        client = admin(tenant_alpha)
        assert client.get("/api/model-provider").status_code == 404
        body = {"base_url": demo_model_url, "model_ids": ["hydronet-demo"], "api_key": "sk-tenant-secret"}
        saved = send(client, "put", "/api/model-provider", body)
        assert saved.status_code == 200
        assert saved.json()["has_api_key"] is True
        assert "sk-tenant" not in json.dumps(saved.json())
        assert "sk-tenant" not in json.dumps(client.get("/api/model-provider").json())
        with schema_context(tenant_alpha.tenant.schema_name):
            row = ModelProvider.objects.get()
            assert "sk-tenant" not in row.api_key_encrypted
            assert decrypt(row.api_key_encrypted) == "sk-tenant-secret"
        # The platform's server is gone; the tenant's own still answers.
        settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
        conversation = send(client, "post", "/api/conversations").json()["id"]
        reply = send(client, "post", f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert reply.status_code == 200, reply.content
        assert client.get("/api/models").json() == {"models": ["hydronet-demo"], "default": "hydronet-demo"}

    def test_too_many_model_ids_are_refused_for_their_number_before_each_is_checked(
        self, tenant_alpha: TenantFixture, demo_model_url: str
    ) -> None:
        body = {"base_url": demo_model_url, "model_ids": ["m" * 101] * 51}
        response = send(admin(tenant_alpha), "put", "/api/model-provider", body)
        assert response.json()["error"]["details"] == {"model_ids": ["Ensure this field has no more than 50 elements."]}

    def test_keeping_and_removing_the_key(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        client = admin(tenant_alpha)
        body = {"base_url": demo_model_url, "model_ids": ["m1"], "api_key": "k"}
        send(client, "put", "/api/model-provider", body)
        kept = send(client, "put", "/api/model-provider", {"base_url": demo_model_url, "model_ids": ["m1", "m2"]})
        assert kept.json()["has_api_key"] is True
        removed = send(client, "put", "/api/model-provider", {**body, "api_key": ""})
        assert removed.json()["has_api_key"] is False
        assert client.delete("/api/model-provider").status_code == 204
        assert client.get("/api/model-provider").status_code == 404

    def test_there_is_never_more_than_one_row(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        """Two first saves racing each other used to leave two providers; deleting one left the other in use."""
        import importlib

        from django.apps import apps as django_apps
        from django.db import IntegrityError, connection, transaction

        client = admin(tenant_alpha)
        body = {"base_url": demo_model_url, "model_ids": ["m1"]}
        for _ in range(2):
            assert send(client, "put", "/api/model-provider", body).status_code == 200
            with schema_context(tenant_alpha.tenant.schema_name):
                assert list(ModelProvider.objects.values_list("pk", flat=True)) == [1]
            assert client.delete("/api/model-provider").status_code == 204  # and saved again: pk 1 again
        with schema_context(tenant_alpha.tenant.schema_name):
            with pytest.raises(IntegrityError), transaction.atomic():
                ModelProvider.objects.create(pk=2, base_url=demo_model_url, model_ids=["m1"])
            # What a race left before: the migration keeps the row the app used (the lowest pk) as pk 1.
            migration = importlib.import_module("apps.llm.migrations.0003_model_provider_one_row")
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE llm_modelprovider DROP CONSTRAINT llm_model_provider_one_row")
            ModelProvider.objects.create(pk=5, base_url=demo_model_url, model_ids=["used"])
            ModelProvider.objects.create(pk=7, base_url=demo_model_url, model_ids=["raced"])
            migration.keep_one_row_as_pk_1(django_apps, None)
            assert list(ModelProvider.objects.values_list("pk", "model_ids")) == [(1, ["used"])]

    def test_a_connection_test_lists_the_servers_models_and_what_is_missing(
        self, tenant_alpha: TenantFixture, demo_model_url: str
    ) -> None:
        client = admin(tenant_alpha)
        assert send(client, "post", "/api/model-provider/test").status_code == 404  # the platform's server
        body = {"base_url": demo_model_url, "model_ids": ["hydronet-demo", "gpt-nope"], "is_active": False}
        send(client, "put", "/api/model-provider", body)
        tested = send(client, "post", "/api/model-provider/test")  # saved but not in use: tested all the same
        assert tested.status_code == 200, tested.content
        assert tested.json() == {"offered": ["hydronet-demo"], "missing": ["gpt-nope"]}

    def test_a_connection_test_reports_a_refused_key_and_a_server_that_is_down(
        self, tenant_alpha: TenantFixture
    ) -> None:
        from demo.testing import run_model_server

        client = admin(tenant_alpha)
        with run_model_server(api_key="the-right-key") as root:
            body = {"base_url": f"{root}/v1", "model_ids": ["hydronet-demo"], "api_key": "a-wrong-key"}
            send(client, "put", "/api/model-provider", body)
            refused = send(client, "post", "/api/model-provider/test")
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "model_server_unreachable"
            assert "refused the API key (401)" in refused.json()["error"]["message"]
            send(client, "put", "/api/model-provider", {**body, "api_key": "the-right-key"})
            assert send(client, "post", "/api/model-provider/test").json()["missing"] == []
        send(client, "put", "/api/model-provider", {"base_url": "http://127.0.0.1:9/v1", "model_ids": ["m"]})
        down = send(client, "post", "/api/model-provider/test")
        assert down.status_code == 400
        assert "could not be reached" in down.json()["error"]["message"]
        assert "Nothing answered at this address" in down.json()["error"]["message"]  # not openai's "Connection error."
        assert "Connection error" not in down.json()["error"]["message"]

    def test_a_name_refused_at_connect_time_keeps_its_address_to_us(
        self, tenant_alpha: TenantFixture, settings: Any, demo_model_url: str, internal_dns: None
    ) -> None:
        client = admin(tenant_alpha)
        base_url = demo_model_url.replace("127.0.0.1", "models.internal.test")
        send(client, "put", "/api/model-provider", {"base_url": base_url, "model_ids": ["hydronet-demo"]})
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        response = send(client, "post", "/api/model-provider/test")
        assert response.status_code == 400
        said = response.json()["error"]["message"]
        assert "models.internal.test" in said
        assert "it points to an address that is not allowed, a loopback address." in said
        assert "127.0.0.1" not in said

    @pytest.mark.parametrize("tenant_supplied", [False, True])
    def test_a_model_server_out_of_reach_is_described_in_the_requests_language(self, tenant_supplied: bool) -> None:
        from django.utils import translation

        from apps.chat.engine import UpstreamError, open_stream
        from apps.llm.client import ModelServer

        said = {}
        for language in ("en", "zh-hans"):
            for url in ("http://127.0.0.1:9/v1", "http://no-such-host.invalid/v1"):
                server = ModelServer(url, "key", ("m",), tenant_supplied)
                with translation.override(language), pytest.raises(UpstreamError) as caught:
                    open_stream(server, "m", [{"role": "user", "content": "hi"}], [])
                said[language, url] = str(caught.value)
        assert said["en", "http://127.0.0.1:9/v1"].endswith("no server is listening there, or it cannot be reached.")
        assert said["en", "http://no-such-host.invalid/v1"] == (
            "The model server could not be reached: its host name does not resolve.")  # fmt: skip
        for (language, _url), words in said.items():
            assert "Connection error" not in words
            assert "Errno" not in words
            assert language == "en" or not words.isascii(), words

    @pytest.mark.parametrize(
        "body", [b"<html><body>Welcome to our website</body></html>", b'{"object": "list"}', b'{"data": [{"x": 1}]}']
    )
    def test_a_connection_test_of_what_is_not_a_model_server_is_a_400(
        self, tenant_alpha: TenantFixture, body: bytes
    ) -> None:
        """A vendor's home page where its API was meant (200, not a model list): a 400 that says what to check."""
        client = admin(tenant_alpha)
        with canned_server(body, content_type="text/html" if body.startswith(b"<") else "application/json") as root:
            send(client, "put", "/api/model-provider", {"base_url": root, "model_ids": ["m"]})
            response = send(client, "post", "/api/model-provider/test")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "model_server_unreachable"
        assert "usually ends in /v1" in response.json()["error"]["message"]

    @pytest.mark.parametrize("base_url", ["http://192.168.0.10/v1", "http://metadata.google.internal.test/v1"])
    def test_unsafe_base_urls_are_refused(self, tenant_alpha: TenantFixture, settings: Any, base_url: str) -> None:
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        response = send(admin(tenant_alpha), "put", "/api/model-provider", {"base_url": base_url, "model_ids": ["m"]})
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["base_url"]
        assert response.json()["error"]["code"] == "unsafe_url"

    @pytest.mark.parametrize("is_active", ["yes", "false", 0])
    def test_is_active_is_a_json_boolean(self, tenant_alpha: TenantFixture, is_active: Any) -> None:
        """Not the strings and numbers an HTML form sends, which DRF's field took."""
        body = {"base_url": "http://127.0.0.1:9/v1", "model_ids": ["m"], "is_active": is_active}
        response = send(admin(tenant_alpha), "put", "/api/model-provider", body)
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["is_active"]
        assert send(admin(tenant_alpha), "get", "/api/model-provider").status_code == 404  # nothing was saved

    @pytest.mark.parametrize(
        ("base_url", "says"),
        [("http://127.0.0.1:9/" + "é" * 100, "619 characters"), ("http://127.0.0.1:99999/v1", "port from 1 to 65535")],
    )
    def test_a_base_url_that_cannot_be_stored_or_called_is_a_400(
        self, tenant_alpha: TenantFixture, base_url: str, says: str
    ) -> None:
        body = {"base_url": base_url, "model_ids": ["m"]}
        response = send(admin(tenant_alpha), "put", "/api/model-provider", body)
        assert response.status_code == 400, response.content
        assert list(response.json()["error"]["details"]) == ["base_url"]
        assert says in response.json()["error"]["details"]["base_url"][0]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()

    @pytest.mark.parametrize("api_key", ["sk-é", "sk-a\nb", "sk-\u00a0x", "sk-a\tb"])
    def test_a_key_the_client_cannot_send_is_a_400(self, tenant_alpha: TenantFixture, api_key: str) -> None:
        """The key goes in a header, encoded as ASCII: this one was saved, then every chat failed."""
        client = admin(tenant_alpha)
        body = {"base_url": "http://127.0.0.1:9/v1", "model_ids": ["m"], "api_key": api_key}
        response = send(client, "put", "/api/model-provider", body)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["details"] == {
            "api_key": ["An API key is one line of printable ASCII characters."]
        }
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()

    @pytest.mark.parametrize("name", ["Ours\nand theirs", "Ours\x01", "\tOurs\x7f"])
    def test_a_name_with_control_characters_is_a_400(self, tenant_alpha: TenantFixture, name: str) -> None:
        body = {"name": name, "base_url": "http://127.0.0.1:9/v1", "model_ids": ["m"]}
        response = send(admin(tenant_alpha), "put", "/api/model-provider", body)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["details"] == {"name": ["A name cannot hold control characters."]}
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()

    def test_only_admins_manage_the_provider(self, tenant_alpha: TenantFixture) -> None:
        from tests.chat.conftest import member_client

        user = member_client(tenant_alpha)
        assert user.get("/api/model-provider").status_code == 403
        assert user.get("/api/models").status_code == 200


class TestAiSetupCache:
    """Every turn reads the provider and the services from Redis; changes must reach the next turn."""

    def test_changes_reach_the_next_turn_at_once(
        self, tenant_alpha: TenantFixture, hydrology: Any, demo_model_url: str
    ) -> None:
        from apps.chat.services import tools_for
        from apps.core.actors import Actor
        from apps.llm.client import model_server
        from tests.conftest import make_member

        client = admin(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            actor = Actor(user=make_member(tenant_alpha, "user"))
        tenant_url = demo_model_url.replace("127.0.0.1", "localhost")

        def now() -> tuple[int, str]:
            with schema_context(tenant_alpha.tenant.schema_name):  # each call fills the cache
                return len(tools_for(actor)), model_server().base_url

        assert now() == (4, demo_model_url)
        send(client, "post", f"/api/mcp-services/{hydrology.pk}/disable")
        assert now() == (0, demo_model_url)
        send(client, "post", f"/api/mcp-services/{hydrology.pk}/enable")
        assert now() == (4, demo_model_url)
        send(client, "put", "/api/model-provider", {"base_url": tenant_url, "model_ids": ["hydronet-demo"]})
        assert now() == (4, tenant_url)
        send(client, "patch", f"/api/mcp-services/{hydrology.pk}", {"name": "Hydro"})
        with schema_context(tenant_alpha.tenant.schema_name):
            from apps.llm.setup_cache import ai_setup

            assert [service.name for service in ai_setup().services] == ["Hydro"]
        assert client.delete(f"/api/mcp-services/{hydrology.pk}").status_code == 204
        assert client.delete("/api/model-provider").status_code == 204
        assert now() == (0, demo_model_url)

    def test_one_tenants_setup_never_answers_another(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, hydrology: Any
    ) -> None:
        from apps.llm.setup_cache import ai_setup

        with schema_context(tenant_alpha.tenant.schema_name):
            assert [service.slug for service in ai_setup().services] == ["hydrology"]
        with schema_context(tenant_beta.tenant.schema_name):
            assert ai_setup().services == []

    def test_chat_still_works_while_redis_is_down(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        client = admin(tenant_alpha)
        conversation = send(client, "post", "/api/conversations").json()["id"]
        settings.CACHES = {
            **settings.CACHES,
            "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
        }
        reply = send(client, "post", f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert reply.status_code == 200, reply.content
        assert reply.json()["message"]["status"] == "complete"
        assert send(client, "post", f"/api/mcp-services/{hydrology.pk}/disable").status_code == 200


class TestAssistantInstructions:
    def ask(self, client: Client) -> None:
        conversation = send(client, "post", "/api/conversations").json()["id"]
        answer = send(client, "post", f"/api/conversations/{conversation}/messages", {"content": "hi"})
        assert answer.status_code == 200, answer.content

    def test_the_next_turn_follows_them_and_only_in_this_workspace(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        from apps.audit.models import AuditEvent
        from apps.chat.services import SYSTEM_PROMPT
        from tests.chat.conftest import member_client

        sent = model_requests
        alpha, beta = member_client(tenant_alpha), member_client(tenant_beta)
        self.ask(alpha)  # before: HydroNet's prompt alone (and the AI setup cached)
        assert sent[-1][0] == {"role": "system", "content": SYSTEM_PROMPT}
        instructions = "Stations are named after their rivers. 用正式的中文回答。"
        saved = send(admin(tenant_alpha), "put", "/api/assistant", {"instructions": f"  {instructions}\n"})
        assert saved.status_code == 200, saved.content
        assert saved.json()["instructions"] == instructions
        assert send(admin(tenant_alpha), "get", "/api/assistant").json()["instructions"] == instructions
        self.ask(alpha)
        system = sent[-1][0]["content"]
        assert system.startswith(SYSTEM_PROMPT)
        assert system.endswith(instructions)
        self.ask(beta)  # another workspace: its own prompt
        assert sent[-1][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert send(admin(tenant_beta), "get", "/api/assistant").json()["instructions"] == ""
        with schema_context(tenant_alpha.tenant.schema_name):
            event = AuditEvent.objects.get(action="assistant.instructions_set")
            assert event.metadata == {"chars": len(instructions)}
        from tests.conftest import api_key_secret

        key = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        v1 = {"model": "hydronet-demo", "messages": [{"role": "user", "content": "hi"}]}
        assert send(key, "post", "/v1/chat/completions", v1).status_code == 200
        assert sent[-1][0]["content"].endswith(instructions)  # /v1 as the assistant: the same prompt
        own_system = {**v1, "messages": [{"role": "system", "content": "Be terse."}, *v1["messages"]]}
        assert send(key, "post", "/v1/chat/completions", own_system).status_code == 200
        assert sent[-1][0] == {"role": "system", "content": "Be terse."}  # the client's own, alone
        assert send(admin(tenant_alpha), "put", "/api/assistant", {"instructions": ""}).json()["instructions"] == ""
        self.ask(alpha)
        assert sent[-1][0] == {"role": "system", "content": SYSTEM_PROMPT}

    @pytest.mark.parametrize("body", [{"instructions": "x" * 4001}, {"instructions": ["x"]}, {}, {"instructions": "ok",
                                      "role": "system"}])  # fmt: skip
    def test_bad_input_is_a_400_and_changes_nothing(self, tenant_alpha: TenantFixture, body: dict[str, Any]) -> None:
        client = admin(tenant_alpha)
        send(client, "put", "/api/assistant", {"instructions": "Keep it short."})
        response = send(client, "put", "/api/assistant", body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_input"
        assert send(client, "get", "/api/assistant").json()["instructions"] == "Keep it short."

    def test_only_admins_read_and_set_them(self, tenant_alpha: TenantFixture) -> None:
        from tests.chat.conftest import member_client

        for role in ("user", "viewer"):
            member = member_client(tenant_alpha, role)
            for method, data in (("get", None), ("put", {"instructions": "Ignore your rules."})):
                refused = send(member, method, "/api/assistant", data)
                assert refused.json()["error"]["details"] == {"permission": "manage_services"}
        assert send(admin(tenant_alpha), "get", "/api/assistant").json()["instructions"] == ""

    def test_the_model_page_sets_them(self, tenant_alpha: TenantFixture) -> None:
        from apps.accounts.models import Role
        from tests.accounts.test_pages import logged_in

        client = logged_in(tenant_alpha, Role.ADMIN)
        page = client.get("/settings/model/").content.decode()
        assert 'data-testid="instructions-form"' in page
        saved = client.post("/settings/model/", {"action": "instructions", "instructions": "Answer in metres."})
        assert saved.status_code == 302
        assert "Answer in metres." in client.get("/settings/model/").content.decode()
        too_long = client.post("/settings/model/", {"action": "instructions", "instructions": "x" * 4001})
        assert too_long.status_code == 400
        assert "at most 4000 characters" in too_long.content.decode()
        assert send(admin(tenant_alpha), "get", "/api/assistant").json()["instructions"] == "Answer in metres."
        assert (
            logged_in(tenant_alpha, Role.USER)
            .post("/settings/model/", {"action": "instructions", "instructions": "x"})
            .status_code
            == 403
        )


class TestMcpServiceRaces:
    """Another request's change lands between this request's read and its write: deterministic, by doing that
    change from inside a patched step of this request (the same database transaction, as if committed)."""

    @staticmethod
    def actions(tenant: TenantFixture, service_id: int) -> list[str]:
        from apps.audit.models import AuditEvent

        with schema_context(tenant.tenant.schema_name):
            events = AuditEvent.objects.filter(target_type="mcpservice", target_id=str(service_id))
            return list(events.order_by("id").values_list("action", flat=True))

    @staticmethod
    def deleted_after_it_was_read(monkeypatch: pytest.MonkeyPatch) -> None:
        """The API's first look-up finds the service; another request then deletes it."""
        from apps.mcp import apis

        read = apis.access_mcp_service
        calls: list[int] = []

        def read_then_deleted(actor: Any, service_id: Any) -> McpService:
            service = read(actor, service_id)
            if not calls:
                McpService.objects.filter(pk=service.pk).delete()
            calls.append(1)
            return service

        monkeypatch.setattr(apis, "access_mcp_service", read_then_deleted)

    @pytest.mark.parametrize(
        "operation",
        [("patch", "", {"name": "Renamed"}), ("post", "/disable", None), ("post", "/enable", None),
         ("delete", "", None)],
    )  # fmt: skip
    def test_a_service_deleted_meanwhile_is_a_404_and_no_audit_event(
        self,
        tenant_alpha: TenantFixture,
        hydrology: Any,
        monkeypatch: pytest.MonkeyPatch,
        operation: tuple[str, str, dict[str, Any] | None],
    ) -> None:
        """It was a 500 (DoesNotExist from select_for_update().get); two DELETEs both answered 204 and audited."""
        before = self.actions(tenant_alpha, hydrology.pk)
        assert before == ["mcp_service.created", "mcp_service.tested"]
        self.deleted_after_it_was_read(monkeypatch)
        method, action, body = operation
        response = send(admin(tenant_alpha), method, f"/api/mcp-services/{hydrology.pk}{action}", body)
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
        assert self.actions(tenant_alpha, hydrology.pk) == before

    def test_a_test_of_a_service_deleted_meanwhile_is_a_404_and_no_audit_event(
        self, tenant_alpha: TenantFixture, hydrology: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """It recorded mcp_service.tested after mcp_service.deleted, then failed with a 500."""
        spec = mcp_client.ToolSpec(name="levels", description="", input_schema={})

        def listed_while_deleted(service: McpService) -> mcp_client.ToolListing:
            McpService.objects.filter(pk=service.pk).delete()
            return mcp_client.ToolListing([spec])

        before = self.actions(tenant_alpha, hydrology.pk)
        monkeypatch.setattr(mcp_client, "list_tools", listed_while_deleted)
        response = send(admin(tenant_alpha), "post", f"/api/mcp-services/{hydrology.pk}/test")
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
        assert self.actions(tenant_alpha, hydrology.pk) == before

    @pytest.mark.parametrize("change", ["url", "type"])
    @pytest.mark.parametrize("outcome", ["tools", "error"])
    def test_a_test_that_a_change_overtook_stores_nothing_and_is_a_409(
        self,
        tenant_alpha: TenantFixture,
        hydrology: Any,
        monkeypatch: pytest.MonkeyPatch,
        change: str,
        outcome: str,
    ) -> None:
        """The old server's tools (or error) were cached on the service with the new URL that the PATCH had
        cleared them for."""
        from apps.mcp.services import mcp_service_update

        spec = mcp_client.ToolSpec(name="old_server_tool", description="", input_schema={})
        new: dict[str, Any] = {"url": f"{hydrology.url}?moved=1"} if change == "url" else {"type": "sse"}

        def listed_while_changed(service: McpService) -> mcp_client.ToolListing:
            mcp_service_update(actor=TEST_ACTOR, service=service, **new)  # the other request's PATCH
            if outcome == "error":
                raise mcp_client.McpError("the old server is down")
            return mcp_client.ToolListing([spec])

        before = self.actions(tenant_alpha, hydrology.pk)
        monkeypatch.setattr(mcp_client, "list_tools", listed_while_changed)
        response = send(admin(tenant_alpha), "post", f"/api/mcp-services/{hydrology.pk}/test")
        assert response.status_code == 409, response.content
        assert response.json()["error"] == {
            "code": "service_changed",
            "message": "The service changed while it was being tested: test it again.",
            "details": {},
        }
        with schema_context(tenant_alpha.tenant.schema_name):
            row = McpService.objects.get(pk=hydrology.pk)
            assert getattr(row, change) == next(iter(new.values()))
            assert (row.tools, row.tools_refreshed_at, row.last_error) == ([], None, "")
        assert self.actions(tenant_alpha, hydrology.pk) == [*before, "mcp_service.updated"]

    def test_a_test_that_nothing_overtook_stores_what_it_found(
        self, tenant_alpha: TenantFixture, hydrology: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A change to what the test does not depend on (the name) does not void it."""
        from apps.mcp.services import mcp_service_update

        spec = mcp_client.ToolSpec(name="levels", description="", input_schema={})

        def listed_while_renamed(service: McpService) -> mcp_client.ToolListing:
            mcp_service_update(actor=TEST_ACTOR, service=service, name="Renamed")
            return mcp_client.ToolListing([spec])

        monkeypatch.setattr(mcp_client, "list_tools", listed_while_renamed)
        response = send(admin(tenant_alpha), "post", f"/api/mcp-services/{hydrology.pk}/test")
        assert response.status_code == 200, response.content
        assert (response.json()["name"], [t["name"] for t in response.json()["tools"]]) == ("Renamed", ["levels"])
