"""A demo hydrology MCP server (streamable HTTP at ``/mcp``, SSE at ``/sse``) over synthetic, deterministic data.

Run it with::

    python -m demo.mcp_server --host 127.0.0.1 --port 8102

Tools: ``list_stations``, ``get_water_levels``, ``get_rainfall`` and
``get_flood_warning_levels``; the data comes from :mod:`demo.hydrology`, whose
pure functions (``water_levels``, ``rainfall``, ...) are re-exported here. A
refused request (unknown station, bad date, end before start, more than 31 days,
a range that starts after today) comes back as a tool result with ``isError: true`` and a clear message.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.applications import Starlette

from demo.hydrology import (
    MAX_RANGE_DAYS,
    FloodWarningLevels,
    HydrologyError,
    RainfallSeries,
    StationList,
    WaterLevelSeries,
    flood_warning_levels,
    rainfall,
    stations,
    water_levels,
)

__all__ = [
    "create_app",
    "flood_warning_levels",
    "get_flood_warning_levels",
    "get_rainfall",
    "get_water_levels",
    "list_stations",
    "main",
    "rainfall",
    "server",
    "stations",
    "water_levels",
]

StationId = Annotated[str, Field(description="Station id from list_stations, e.g. 'S001' / 站点编号")]
StartDate = Annotated[str, Field(description="First day, YYYY-MM-DD (UTC), inclusive / 开始日期")]
EndDate = Annotated[
    str,
    Field(description=f"Last day, YYYY-MM-DD (UTC), inclusive; at most {MAX_RANGE_DAYS} days after start / 结束日期"),
]

server: MCPServer = MCPServer(
    "hydrology",
    title="HydroNet demo hydrology / 水文演示数据",
    instructions=(
        "Synthetic hydrology data for ten Chinese river gauging stations (S001-S010). "
        "Call list_stations first to find station ids; dates are YYYY-MM-DD in UTC and a range covers at most "
        f"{MAX_RANGE_DAYS} days. 演示用合成数据，非真实观测。"
    ),
)


@server.tool(title="List stations / 站点列表")
def list_stations() -> StationList:
    """List the gauging stations (站点列表): id, Chinese name, river, latitude, longitude and elevation_m."""
    return stations()


@server.tool(title="Water levels / 水位")
def get_water_levels(station: StationId, start: StartDate, end: EndDate) -> WaterLevelSeries:
    """Get hourly water levels (水位, metres) of a station between two dates, inclusive.

    Returns the station, unit "m" and readings [{"time": ISO 8601 UTC, "level_m": float}].
    """
    try:
        return water_levels(station, start, end, until=datetime.now(UTC))
    except HydrologyError as exc:
        raise ToolError(str(exc)) from exc


@server.tool(title="Rainfall / 降雨量")
def get_rainfall(station: StationId, start: StartDate, end: EndDate) -> RainfallSeries:
    """Get daily rainfall totals (降雨量, millimetres) of a station between two dates, inclusive.

    Returns the station, unit "mm", total_mm and daily [{"date": YYYY-MM-DD, "rainfall_mm": float}].
    """
    try:
        return rainfall(station, start, end, until=datetime.now(UTC))
    except HydrologyError as exc:
        raise ToolError(str(exc)) from exc


@server.tool(title="Flood warning levels / 防洪特征水位")
def get_flood_warning_levels(station: StationId) -> FloodWarningLevels:
    """Get the flood thresholds of a station (防洪特征水位): warning level (警戒水位), guarantee level (保证水位)
    and historical maximum (历史最高水位), all in metres."""
    try:
        return flood_warning_levels(station)
    except HydrologyError as exc:
        raise ToolError(str(exc)) from exc


def create_app(host: str = "127.0.0.1") -> Starlette:
    """The MCP server as a Starlette app: streamable HTTP at ``/mcp``, and the older SSE
    transport at ``/sse`` (with its ``/messages/`` endpoint), the two a tenant can choose.

    ``host`` is where it will listen: on loopback the SDK turns on DNS-rebinding
    protection (only loopback ``Host`` and ``Origin`` headers are accepted).
    """
    app = server.streamable_http_app(host=host)
    app.router.routes.extend(server.sse_app(host=host).routes)  # no lifespan of its own to carry over
    return app


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m demo.mcp_server --host H --port P``."""
    from demo.serving import serve

    parser = argparse.ArgumentParser(
        prog="python -m demo.mcp_server",
        description="Demo hydrology MCP server (streamable HTTP at /mcp, SSE at /sse).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8102, help="port to bind, 0 for any free one (default: 8102)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    serve(
        create_app(args.host),
        host=args.host,
        port=args.port,
        announce=lambda host, port: f"demo hydrology MCP server listening on http://{host}:{port}/mcp (SSE: /sse)",
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
