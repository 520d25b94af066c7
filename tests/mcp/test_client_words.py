"""What an MCP server got wrong, in HydroNet's words and the request's language, not the libraries' own."""

from __future__ import annotations

import httpx2
import mcp_types
import pydantic
import pytest
from django.utils import translation
from mcp.shared.exceptions import MCPError

from apps.mcp import client

NOT_MCP = (
    "The address answered, but not as an MCP server does: check the URL's path (often /mcp, or /sse for SSE) "
    "and the transport."
)


def _invalid_tool_list() -> pydantic.ValidationError:
    try:
        mcp_types.ListToolsResult.model_validate({"tools": [{"name": "x"}]})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("a tool without inputSchema was accepted")


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (httpx2.RemoteProtocolError("Server disconnected without sending a response."),
         "The server closed the connection before it had answered: check that the URL's scheme (http or https) and "
         "port are the server's, or try again later."),
        (httpx2.SSEError("Server-sent event exceeded the 1048576 byte limit."),
         "The answer is larger than 1.0\xa0MB, the most the SSE transport reads: choose streamable HTTP for this "
         "server if it offers it."),
        (_invalid_tool_list(),
         "The server's answer is not valid MCP: check that the URL is an MCP server's; if it is, ask whoever runs it "
         "(ListToolsResult: tools.0.inputSchema: Field required)."),
        (MCPError(-32700, "Failed to parse JSON response: 1 validation error for JSONRPCMessage"), NOT_MCP),
        (MCPError(-32000, "Connection closed"),
         "The server did not answer as an MCP server (Connection closed): check the URL's path (often /mcp, or /sse "
         "for SSE) and the transport; if they are right, ask whoever runs the server."),
    ],
)  # fmt: skip
def test_library_errors_are_said_in_words(error: BaseException, says: str) -> None:
    """They read "RemoteProtocolError: Server disconnected…", "ValidationError: 1 validation error for
    ListToolsResult…", "SSEError: Server-sent event exceeded…", inside Chinese messages too; and each says what to
    check or do: "The server's answer is not valid JSON-RPC." (an address answering JSON that is not MCP's, a
    health check say) told an admin nothing they could act on."""
    with translation.override("en"):
        assert client._describe(BaseExceptionGroup("the SDK's group", [error])) == says
    with translation.override("zh-hans"):
        assert "server" not in client._describe(BaseExceptionGroup("the SDK's group", [error])).lower()


@pytest.mark.parametrize(
    ("error", "says"),
    [(MCPError(-32000, "internal tool failure"), "The MCP server answered with an error: internal tool failure"),
     (MCPError(-32601, "Method not found"), "The MCP server answered with an error: Method not found"),
     (MCPError(-32000, "SSE stream ended without a response"),
      "The server did not answer as an MCP server (SSE stream ended without a response): check the URL's path (often "
      "/mcp, or /sse for SSE) and the transport; if they are right, ask whoever runs the server."),
     (MCPError(-32700, "Failed to parse SSE message: 1 validation error for JSONRPCMessage"), NOT_MCP)],
)  # fmt: skip
def test_the_servers_own_error_is_told_apart_from_the_sdks(error: MCPError, says: str) -> None:
    """A JSON-RPC error the server answered with read "The server did not answer as an MCP server": it did. The
    SDK's own errors for a request (the stream closed or ended) keep those words."""
    with translation.override("en"):
        assert client._describe(BaseExceptionGroup("the SDK's group", [error])) == says
