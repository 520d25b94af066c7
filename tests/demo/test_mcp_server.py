"""The demo hydrology MCP server, driven by the MCP SDK client over real streamable HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp import types as mcp_types
from mcp.client.streamable_http import streamable_http_client

from demo.hydrology import flood_warning_levels, rainfall, stations, water_levels


def with_session[T](url: str, body: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Run ``body`` with an initialised MCP session on ``url``."""

    async def run() -> T:
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)

    return anyio.run(run)


def text_of(result: mcp_types.CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, mcp_types.TextContent)
    return block.text


def test_lists_the_four_tools_with_schemas(demo_mcp_url: str) -> None:
    async def body(session: ClientSession) -> mcp_types.ListToolsResult:
        return await session.list_tools()

    tools = {tool.name: tool for tool in with_session(demo_mcp_url, body).tools}
    assert set(tools) == {"list_stations", "get_water_levels", "get_rainfall", "get_flood_warning_levels"}
    for name in ("get_water_levels", "get_rainfall"):
        schema = tools[name].input_schema
        assert set(schema["properties"]) == {"station", "start", "end"}
        assert set(schema["required"]) == {"station", "start", "end"}
        assert "YYYY-MM-DD" in schema["properties"]["start"]["description"]
    assert set(tools["get_flood_warning_levels"].input_schema["properties"]) == {"station"}
    assert tools["list_stations"].input_schema.get("properties", {}) == {}
    for tool in tools.values():
        assert tool.description
        assert tool.output_schema is not None


def test_calls_each_tool(demo_mcp_url: str) -> None:
    calls: list[tuple[str, dict[str, Any], Any]] = [
        ("list_stations", {}, stations()),
        (
            "get_water_levels",
            {"station": "S001", "start": "2025-07-01", "end": "2025-07-02"},
            water_levels("S001", "2025-07-01", "2025-07-02"),
        ),
        (
            "get_rainfall",
            {"station": "S005", "start": "2025-06-01", "end": "2025-06-30"},
            rainfall("S005", "2025-06-01", "2025-06-30"),
        ),
        ("get_flood_warning_levels", {"station": "S010"}, flood_warning_levels("S010")),
    ]

    async def body(session: ClientSession) -> list[mcp_types.CallToolResult]:
        return [await session.call_tool(name, arguments) for name, arguments, _ in calls]

    results = with_session(demo_mcp_url, body)
    for (name, _, expected), result in zip(calls, results, strict=True):
        assert not result.is_error, name
        assert result.structured_content == expected
        assert json.loads(text_of(result)) == expected
    levels = results[1].structured_content
    assert len(levels["readings"]) == 48
    assert levels["unit"] == "m"


def test_same_call_same_result(demo_mcp_url: str) -> None:
    arguments = {"station": "S002", "start": "2025-09-01", "end": "2025-09-03"}

    async def body(session: ClientSession) -> list[mcp_types.CallToolResult]:
        return [await session.call_tool("get_water_levels", arguments) for _ in range(2)]

    first = with_session(demo_mcp_url, body)
    again = with_session(demo_mcp_url, body)
    assert first[0].structured_content == first[1].structured_content == again[0].structured_content
    assert text_of(first[0]) == text_of(again[1])


def test_no_reading_is_from_the_future(demo_mcp_url: str) -> None:
    today = datetime.now(UTC).date()
    arguments = {"station": "S001", "start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}

    async def body(session: ClientSession) -> list[mcp_types.CallToolResult]:
        return [await session.call_tool(name, arguments) for name in ("get_water_levels", "get_rainfall")]

    before = datetime.now(UTC)
    levels, rain = with_session(demo_mcp_url, body)
    after = datetime.now(UTC)
    readings = levels.structured_content["readings"]
    last = datetime.fromisoformat(readings[-1]["time"])
    assert last <= after
    assert before - last < timedelta(hours=1)  # the last full hour: the latest level, not a guess
    assert len(readings) == 24 + last.hour + 1
    assert [d["date"] for d in rain.structured_content["daily"]][-1] == today.isoformat()
    tomorrow = {
        **arguments,
        "start": (today + timedelta(days=1)).isoformat(),
        "end": (today + timedelta(days=2)).isoformat(),
    }

    async def ahead(session: ClientSession) -> mcp_types.CallToolResult:
        return await session.call_tool("get_water_levels", tomorrow)

    refused = with_session(demo_mcp_url, ahead)
    assert refused.is_error
    assert "nothing is measured yet" in text_of(refused)


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("get_water_levels", {"station": "S404", "start": "2025-01-01", "end": "2025-01-02"}, "Unknown station"),
        ("get_rainfall", {"station": "S001", "start": "01/01/2025", "end": "2025-01-02"}, "Invalid start date"),
        ("get_water_levels", {"station": "S001", "start": "2025-01-09", "end": "2025-01-02"}, "before the start"),
        ("get_rainfall", {"station": "S001", "start": "2025-01-01", "end": "2025-03-01"}, "at most 31 days"),
        ("get_flood_warning_levels", {"station": "nowhere"}, "Known stations: S001"),
    ],
)
def test_refused_requests_are_error_results(
    demo_mcp_url: str, name: str, arguments: dict[str, Any], message: str
) -> None:
    async def body(session: ClientSession) -> tuple[mcp_types.CallToolResult, mcp_types.CallToolResult]:
        refused = await session.call_tool(name, arguments)
        still_fine = await session.call_tool("list_stations", {})
        return refused, still_fine

    refused, still_fine = with_session(demo_mcp_url, body)
    assert refused.is_error
    assert message in text_of(refused)
    assert not still_fine.is_error
