"""An MCP server with awkward tools, for the tests of tool calls that are slow or answer too much.

    python -m tests.chat.awkward_mcp --port 0

Tools: ``sleepy(seconds)`` answers after ``seconds``; ``sized(chars)`` answers ``chars`` characters.
"""

from __future__ import annotations

import argparse
import asyncio

from mcp.server import MCPServer

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


def main() -> None:
    from demo.serving import serve

    parser = argparse.ArgumentParser(prog="python -m tests.chat.awkward_mcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(
        server.streamable_http_app(host=args.host),
        host=args.host,
        port=args.port,
        announce=lambda host, port: f"awkward MCP server listening on http://{host}:{port}/mcp",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
