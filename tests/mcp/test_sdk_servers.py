"""Servers built with the official SDK (``MCPServer``) in this process, on loopback, in the settings other teams
run them with: stateful or stateless, answering in event streams or in JSON."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
import uvicorn
from django_tenants.utils import schema_context
from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from apps.chat.engine import BoundTool, run_mcp_tool
from apps.mcp import client as mcp_client
from apps.mcp.services import mcp_service_create
from tests.conftest import TEST_ACTOR, TenantFixture

pytestmark = pytest.mark.django_db

# What the slow tool saw: "started" when it began, "cancelled" when the server cancelled it.
heard: list[str] = []
slow_server = MCPServer("slow")


@slow_server.tool()
async def slow(seconds: float) -> str:
    """Answer after ``seconds``."""
    heard.append("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        heard.append("cancelled")
        raise
    heard.append("finished")
    return "done"


class OneToken:
    """A token verifier that takes the one token ``TOKEN``."""

    async def verify_token(self, token: str) -> AccessToken | None:
        return AccessToken(token=token, client_id="hydronet", scopes=[]) if token == TOKEN else None


TOKEN = "tok-1"
AUTH = {"issuer_url": "https://auth.example.com", "resource_server_url": "http://127.0.0.1/mcp"}
protected_server = MCPServer(
    "protected", token_verifier=OneToken(), auth=AuthSettings.model_validate({**AUTH, "validate_token_resource": False})
)


@protected_server.tool()
def gauge(station: str) -> str:
    """The level at ``station``."""
    return f"{station}: 1.2 m"


blank_server = MCPServer("blank")


@blank_server.tool()
def nothing(empty_text: bool) -> types.CallToolResult:
    """Answer no block, or one text block that is empty."""
    return types.CallToolResult(content=[types.TextContent(type="text", text="")] if empty_text else [])


@blank_server.tool()
def fails_silently() -> types.CallToolResult:
    """Answer ``isError`` with no block."""
    return types.CallToolResult(content=[], is_error=True)


@contextmanager
def serving(server: MCPServer = slow_server, port: int = 0, **settings: Any) -> Iterator[str]:
    """``server``'s streamable-HTTP app with ``settings`` (``stateless_http``, ``json_response``; ``sse``: its SSE
    app instead, at ``/sse``), at its URL, on ``port`` (0: any free one)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sse = settings.pop("sse", False)
    app = server.sse_app() if sse else server.streamable_http_app(**settings)
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/{'sse' if sse else 'mcp'}"
    finally:
        running.should_exit = True
        thread.join(10)
        sock.close()


# Stateless and in JSON, a server cannot stop a call: the cancellation comes in a POST of its own, which
# reaches no running call, and the call's POST waits for its one JSON answer.
SETTINGS = [{}, {"json_response": True}, {"stateless_http": True}, {"sse": True}]


class TestSettings:
    @pytest.mark.parametrize("settings", [*SETTINGS, {"stateless_http": True, "json_response": True}])
    def test_tools_are_listed_and_called_in_each(self, tenant_alpha: TenantFixture, settings: dict[str, Any]) -> None:
        with serving(**settings) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Slow", url=url,
                                      type="sse" if "sse" in settings else "streamable-http")  # fmt: skip
            listing = mcp_client.list_tools(made)
            outcome = run_mcp_tool(BoundTool("slow__slow", made, "slow", "", {}), {"seconds": 0})
        assert [tool.name for tool in listing.tools] == ["slow"]
        assert (outcome.text, outcome.is_error) == ("done", False)

    def test_a_server_restarted_between_two_turns_is_called_as_before(self, tenant_alpha: TenantFixture) -> None:
        """A stateful server forgets its sessions when it restarts (a 404 for the old ``Mcp-Session-Id``); each
        test and each tool call opens a session of its own, so nothing was kept to go stale."""
        with serving() as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Slow", url=url)
            first = run_mcp_tool(BoundTool("slow__slow", made, "slow", "", {}), {"seconds": 0})
        port = int(url.rsplit(":", 1)[1].removesuffix("/mcp"))
        with serving(port=port), schema_context(tenant_alpha.tenant.schema_name):
            listing = mcp_client.list_tools(made)
            second = run_mcp_tool(BoundTool("slow__slow", made, "slow", "", {}), {"seconds": 0})
        assert (first.text, second.text, len(listing.tools)) == ("done", "done", 1)


class TestSlowTools:
    @pytest.mark.parametrize("settings", SETTINGS)
    def test_a_tool_past_the_timeout_is_cancelled_on_the_server(
        self, tenant_alpha: TenantFixture, settings: dict[str, Any]
    ) -> None:
        """The SDK sends ``notifications/cancelled`` for a request past its time, and the session closed before it
        went out: the tool ran on, for nobody."""
        heard.clear()
        with serving(**settings) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Slow", url=url, timeout_seconds=1,
                                      type="sse" if "sse" in settings else "streamable-http")  # fmt: skip
            outcome = run_mcp_tool(BoundTool("slow__slow", made, "slow", "", {}), {"seconds": 5})
            deadline = time.monotonic() + 3
            while heard[-1:] != ["cancelled"] and time.monotonic() < deadline:
                time.sleep(0.05)
        assert outcome.text == "The tool call failed: The server did not answer in time."
        assert outcome.is_error
        assert heard == ["started", "cancelled"]


class TestOAuth:
    """A server protected by OAuth answers 401 with ``WWW-Authenticate: Bearer resource_metadata=...``: HydroNet
    does not sign in, so Test connection says how to give it a token, and with the token it works."""

    def test_without_a_token_test_connection_says_to_add_one(self, tenant_alpha: TenantFixture) -> None:
        with serving(protected_server) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Protected", url=url)
            with pytest.raises(mcp_client.McpError) as refused:
                mcp_client.list_tools(made)
        assert str(refused.value) == OAUTH_WORDS

    def test_with_the_token_in_the_auth_headers_its_tools_are_listed(self, tenant_alpha: TenantFixture) -> None:
        with serving(protected_server) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Protected", url=url,
                                      headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            listing = mcp_client.list_tools(made)
        assert [tool.name for tool in listing.tools] == ["gauge"]


OAUTH_WORDS = (
    "The server asks for an OAuth sign-in (401), which HydroNet does not do: get an access token for this server "
    'from whoever runs it, and add it to the auth headers as "Authorization: Bearer <token>". If that header is '
    "there already, the server refused its token (expired, or for another server)."
)


class TestEmptyResults:
    """A result with nothing in it was an empty tool message: the model and the member saw nothing, an error too."""

    @pytest.mark.parametrize(
        ("tool", "arguments", "says", "is_error"),
        [("nothing", {"empty_text": False}, "[The tool answered with nothing]", False),
         ("nothing", {"empty_text": True}, "[The tool answered with nothing]", False),
         ("fails_silently", {}, "[The tool reported an error, and said nothing about it]", True)],
    )  # fmt: skip
    def test_an_empty_result_says_so(
        self, tenant_alpha: TenantFixture, tool: str, arguments: dict[str, Any], says: str, is_error: bool
    ) -> None:
        with serving(blank_server) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Blank", url=url)
            outcome = run_mcp_tool(BoundTool(f"blank__{tool}", made, tool, "", {}), arguments)
        assert (outcome.text, outcome.is_error) == (says, is_error)
