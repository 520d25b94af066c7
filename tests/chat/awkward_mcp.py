"""An MCP server with awkward tools, for the tests of tool calls that are slow, answer too much or clash.

    python -m tests.chat.awkward_mcp --port 0

Five endpoints of the same process:

- ``/mcp``: ``sleepy(seconds)`` answers after ``seconds``; ``sized(chars)`` answers ``chars`` characters,
  each answer an event stream (the SDK's default);
- ``/json/mcp``: the same tools, each answer one ``application/json`` body;
- ``/clash/mcp``: a server whose tool list has names that become the same once cleaned up for the model
  (``a.b``, ``a_b``, ``a b``; ``get.water_levels`` and ``get_water_levels``, which the demo model calls
  for a question about levels) and one name twice (``dup``); each tool answers ``ran <its name>``;
- ``/paged/mcp``: a tool list of 7 (``t1`` to ``t7``) in pages of 3, each page's ``nextCursor`` the next one's
  first index;
- ``/endless/mcp``: a tool list whose pages of 25 (``p<page>_<i>``) never end;
- ``/content/mcp``: ``get_water_levels`` (which the demo model calls for a question about levels) answers text,
  an image of ``IMAGE_BYTES`` (base64 PNG), audio, an embedded text and binary resource, a link to a resource
  and structured content (with an ``outputSchema``); ``structured_only`` answers an image and structured content;
- ``/names/mcp``: tools named with a dot, a slash, a space, in Chinese, and two of 120 characters that differ only
  past the 64th (``NAMED_TOOLS``), each answering ``ran <its name>``;
- ``/odd/mcp``: ``refuses`` answers ``isError``, ``raises`` raises, ``chatty`` sends progress and log
  notifications and ``notifications/tools/list_changed`` before it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context
from starlette.applications import Starlette

server: MCPServer = MCPServer("awkward")

CLASHING_TOOLS = ["a.b", "a_b", "a b", "dup", "dup", "get.water_levels", "get_water_levels"]


@server.tool()
async def sleepy(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "awake"


@server.tool()
def sized(chars: int) -> str:
    """Answer ``chars`` characters."""
    return "x" * chars


async def _list_clashing(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[types.Tool(name=name, description=f"The tool {name!r}.", input_schema={"type": "object"})
               for name in CLASHING_TOOLS]
    )  # fmt: skip


async def _call_clashing(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"ran {params.name}")])


clashing: Server[Any] = Server("clashing", on_list_tools=_list_clashing, on_call_tool=_call_clashing)

PAGED_TOOLS = [f"t{i}" for i in range(1, 8)]


def _tool(name: str) -> types.Tool:
    return types.Tool(name=name, description=f"The tool {name!r}.", input_schema={"type": "object"})


async def _list_paged(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    start = int(params.cursor) if params and params.cursor else 0
    more = start + 3 < len(PAGED_TOOLS)
    return types.ListToolsResult(tools=[_tool(name) for name in PAGED_TOOLS[start : start + 3]],
                                 next_cursor=str(start + 3) if more else None)  # fmt: skip


async def _list_endless(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    page = int(params.cursor) if params and params.cursor else 0
    return types.ListToolsResult(tools=[_tool(f"p{page}_{i}") for i in range(25)], next_cursor=str(page + 1))


NAMED_TOOLS = ["levels.get", "levels/get", "get levels", "水位", "雨量", "x" * 119 + "1", "x" * 119 + "2"]


async def _list_named(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[_tool(name) for name in NAMED_TOOLS])


named: Server[Any] = Server("named", on_list_tools=_list_named, on_call_tool=_call_clashing)
paged: Server[Any] = Server("paged", on_list_tools=_list_paged, on_call_tool=_call_clashing)
endless: Server[Any] = Server("endless", on_list_tools=_list_endless, on_call_tool=_call_clashing)


IMAGE_BYTES = 1024 * 1024
LEVELS = {"station": "S001", "latest": 1.5}
LEVELS_SCHEMA = {"type": "object", "properties": {"station": {"type": "string"}, "latest": {"type": "number"}},
                 "required": ["station", "latest"]}  # fmt: skip


def _b64(size: int) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(size - 8)).decode()


async def _list_content(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    station = {"type": "object", "properties": {"station": {"type": "string"}}}
    return types.ListToolsResult(tools=[
        types.Tool(name="get_water_levels", description="Levels.", input_schema=station, output_schema=LEVELS_SCHEMA),
        types.Tool(name="structured_only", description="Levels.", input_schema=station, output_schema=LEVELS_SCHEMA),
    ])  # fmt: skip


async def _call_content(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    image = types.ImageContent(type="image", data=_b64(IMAGE_BYTES), mime_type="image/png")
    if params.name == "structured_only":
        return types.CallToolResult(content=[image], structured_content=LEVELS)
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="Levels of S001."),
            image,
            types.AudioContent(type="audio", data=_b64(3000), mime_type="audio/wav"),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri="file:///levels.csv", mime_type="text/csv", text="time,level\n08:00,1.5")),
            types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(
                uri="file:///levels.xlsx", mime_type="application/vnd.ms-excel", blob=_b64(2048))),
            types.ResourceLink(type="resource_link", uri="https://example.com/s001", name="S001 page",
                               mime_type="text/html"),
        ],
        structured_content=LEVELS,
    )  # fmt: skip


content: Server[Any] = Server("content", on_list_tools=_list_content, on_call_tool=_call_content)
odd: MCPServer = MCPServer("odd")


@odd.tool()
def refuses(station: str) -> types.CallToolResult:
    """Answer ``isError``."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"No station {station}.")], is_error=True)


@odd.tool()
def raises(station: str) -> str:
    """Raise."""
    raise ValueError(f"gauge {station} is offline")


@odd.tool()
async def chatty(ctx: Context) -> str:
    """Report progress, log and say the tool list changed, then answer."""
    for step in range(3):
        await ctx.report_progress(step, 3, f"step {step}")
        await ctx.info(f"working on step {step}")
    await ctx.session.send_tool_list_changed()
    return "done"


def create_app(host: str = "127.0.0.1") -> Starlette:
    """The endpoints as one app; each streamable-HTTP app's lifespan runs its session manager."""
    apps = [
        server.streamable_http_app(host=host),
        server.streamable_http_app(host=host, streamable_http_path="/json/mcp", json_response=True),
        clashing.streamable_http_app(host=host, streamable_http_path="/clash/mcp"),
        paged.streamable_http_app(host=host, streamable_http_path="/paged/mcp"),
        endless.streamable_http_app(host=host, streamable_http_path="/endless/mcp"),
        content.streamable_http_app(host=host, streamable_http_path="/content/mcp"),
        odd.streamable_http_app(host=host, streamable_http_path="/odd/mcp"),
        named.streamable_http_app(host=host, streamable_http_path="/names/mcp"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for each in apps:
                await stack.enter_async_context(each.router.lifespan_context(each))
            yield

    return Starlette(routes=[route for each in apps for route in each.routes], lifespan=lifespan)


def main() -> None:
    from demo.serving import serve

    parser = argparse.ArgumentParser(prog="python -m tests.chat.awkward_mcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(
        create_app(args.host),
        host=args.host,
        port=args.port,
        announce=lambda host, port: f"awkward MCP server listening on http://{host}:{port}/mcp",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
