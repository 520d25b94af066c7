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


@contextmanager
def serving(server: MCPServer = slow_server, **settings: Any) -> Iterator[str]:
    """``server``'s streamable-HTTP app with ``settings`` (``stateless_http``, ``json_response``), at its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = server.streamable_http_app(**settings)
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        running.should_exit = True
        thread.join(10)
        sock.close()


# Stateless and in JSON, a server cannot stop a call: the cancellation comes in a POST of its own, which
# reaches no running call, and the call's POST waits for its one JSON answer.
SETTINGS = [{}, {"json_response": True}, {"stateless_http": True}]


class TestSlowTools:
    @pytest.mark.parametrize("settings", SETTINGS)
    def test_a_tool_past_the_timeout_is_cancelled_on_the_server(
        self, tenant_alpha: TenantFixture, settings: dict[str, Any]
    ) -> None:
        """The SDK sends ``notifications/cancelled`` for a request past its time, and the session closed before it
        went out: the tool ran on, for nobody."""
        heard.clear()
        with serving(**settings) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Slow", url=url, timeout_seconds=1)
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
