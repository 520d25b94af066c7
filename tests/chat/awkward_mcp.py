"""An MCP server with awkward tools, for the tests of tool calls that are slow or answer too much.

    python -m tests.chat.awkward_mcp --port 0

Two endpoints of the same process:

- ``/mcp``: ``sleepy(seconds)`` answers after ``seconds``; ``sized(chars)`` answers ``chars`` characters,
  each answer an event stream (the SDK's default);
- ``/json/mcp``: the same tools, each answer one ``application/json`` body.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from mcp.server import MCPServer
from starlette.applications import Starlette

server: MCPServer = MCPServer("awkward")


@server.tool()
async def sleepy(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "awake"


@server.tool()
def sized(chars: int) -> str:
    """Answer ``chars`` characters."""
    return "x" * chars


def create_app(host: str = "127.0.0.1") -> Starlette:
    """The two endpoints as one app; each streamable-HTTP app's lifespan runs its session manager."""
    apps = [
        server.streamable_http_app(host=host),
        server.streamable_http_app(host=host, streamable_http_path="/json/mcp", json_response=True),
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
