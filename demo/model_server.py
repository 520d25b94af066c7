"""An offline, deterministic, OpenAI-compatible chat model server: ``hydronet-demo``.

Run it with::

    python -m demo.model_server --host 127.0.0.1 --port 8101 [--token-delay-ms 15] [--api-key KEY]

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``
(streaming and not, with function tools) and ``GET /_demo/stats`` (stream counters,
never behind the API key).

Behaviour, the same input always giving the same output:

1. When the last message is a ``tool`` result, the answer summarises the trailing
   tool results (water levels: latest, min, max; rainfall: total, wettest day;
   warning levels; station list; anything else: its first ~300 characters).
2. Else, when ``tools`` are offered and the last user message asks for one, the
   reply is a tool call. Tool names may be namespaced ``<service>__<tool>``; the
   part after the last ``__`` is matched. A station id (``S001``) plus 水位 / water
   level / level calls ``get_water_levels``, 降雨 / 雨量 / rain calls ``get_rainfall``,
   预警 / 警戒 / warning / flood calls ``get_flood_warning_levels``; without a
   station id, 站点 / 站 / stations / list calls ``list_stations``. Dates are
   ``end`` = today (UTC) and ``start`` = two days earlier, or six days earlier
   when the question says a week (一周 / 一星期 / 7 天 / week); only arguments the
   tool's JSON schema declares are sent. A question that names an offered tool by
   its whole name (``names__ShuiWei``) calls that tool, before any of these. ``tool_choice``
   "none", "required" and a named function are honoured.
3. Else a plain answer saying it is the offline demo model, echoing the question; to a
   question one of the demo hydrology tools answers, asked with no tool offered, it says
   that a tool is needed and that an admin connects one on HydroNet's Tools page.

Fault injection, triggered by these markers in the LAST user message:

* ``#slow``: wait 3 seconds before the first byte of the response.
* ``#error500``: HTTP 500 with an OpenAI error body.
* ``#ratelimit``: HTTP 429 with ``Retry-After: 1`` and an OpenAI error body.
* ``#malformed``: HTTP 200 with the body ``{not json``; when streaming, the chunk
  ``data: {not json`` after the role chunk (then ``[DONE]``).
* ``#broken``: when streaming, a few content chunks and then the connection is
  closed without a finish_reason or ``[DONE]``; when not streaming, the headers
  promise a longer body than is sent before the connection is closed.
* ``#long``: a text answer of 200 content chunks (each one still paced by
  ``--token-delay-ms`` when streaming), for client-disconnect tests.

``#slow`` combines with the others (it waits first); the first of the remaining
markers in the order above wins. ``max_tokens`` (or ``max_completion_tokens``)
truncates text answers at about four characters a token, with finish_reason
``length``. ``temperature`` and the like are accepted and ignored.

Streams are counted in ``GET /_demo/stats``: ``streams_started``,
``streams_completed`` (``[DONE]`` was sent) and ``streams_cancelled`` (the
client went away first; generation stops at once). A ``#broken`` stream counts
as started only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MODEL_ID = "hydronet-demo"
MODEL_CREATED = 1735689600  # 2025-01-01T00:00:00Z, fixed so /v1/models never changes
SYSTEM_FINGERPRINT = "fp_hydronet_demo"
PREFIX = "（离线演示模型 / offline demo model）"
HINT = "试试问：站点 S001 最近的水位是多少？ / Try: “What is the latest water level at station S001?”"
# A question for a hydrology tool, asked with no tool offered: the hint above would ask it again, to the same answer.
NO_TOOLS = (
    "这个问题需要查询工具（例如水位、降雨或预警数据），但本次没有提供任何工具：管理员可在 HydroNet 的“工具”页面接入"
    " MCP 服务。 / This question needs a tool (water levels, rainfall or warnings), and no tool was offered: an admin"
    " connects an MCP service on HydroNet's Tools page."
)
SLOW_SECONDS = 3.0
LONG_CHUNKS = 200
# At least this far apart, a #long answer's chunks stream for about 3 s whatever the server's pace (tests run it
# at 5 ms): time for a browser to stop it or to try to leave the page while it streams, on a slow machine too.
LONG_MIN_DELAY_MS = 15
BROKEN_AFTER_CHUNKS = 3
TOOL_RESULT_PREVIEW = 300

#: Stream counters of this process, served at ``GET /_demo/stats``.
STATS: dict[str, int] = {"streams_started": 0, "streams_completed": 0, "streams_cancelled": 0}

FAULTS = ("#error500", "#ratelimit", "#malformed", "#broken", "#long")
# ASCII word boundaries, so "站点S001的水位" still names S001 (CJK characters are \w in Unicode mode).
_STATION_RE = re.compile(r"\bS\d{3}\b", re.IGNORECASE | re.ASCII)
_PIECE_RE = re.compile(r"[A-Za-z0-9_'.\-]+[^\S\n]*|\s+|[^A-Za-z0-9_\s]{1,3}")
# (tool, pattern) in priority order: 警戒水位 is a warning question, not a level one.
_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("get_flood_warning_levels", re.compile(r"预警|警戒|\bwarnings?\b|\bflood", re.IGNORECASE | re.ASCII)),
    ("get_rainfall", re.compile(r"降雨|雨量|\brain", re.IGNORECASE | re.ASCII)),
    ("get_water_levels", re.compile(r"水位|\blevels?\b", re.IGNORECASE | re.ASCII)),
)
_LIST_INTENT = re.compile(r"站点|站|\bstations?\b|\blist\b", re.IGNORECASE | re.ASCII)
_UNDATED_TOOLS = frozenset({"get_flood_warning_levels", "list_stations"})
# The demo hydrology MCP server's tools, as _intended_tool takes them: which question one of them answers.
_DEMO_TOOLS: dict[str, tuple[str, set[str]]] = {
    name: (name, set()) for name in ("get_water_levels", "get_rainfall", "get_flood_warning_levels", "list_stations")
}
_WEEK = re.compile(r"一周|一星期|七天|7\s*天|\bweek\b", re.IGNORECASE | re.ASCII)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


# --- Errors -------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """This error as an HTTP response."""
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# --- Planning the reply (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """What the model answers: text (in streaming pieces) or one tool call."""

    content: str | None = None
    tool_call: ToolCall | None = None
    finish_reason: str = "stop"
    pieces: tuple[str, ...] = ()

    @classmethod
    def text(cls, content: str, *, max_tokens: int | None = None) -> Reply:
        """A text reply split into streaming pieces, truncated to ``max_tokens`` if given."""
        return cls.from_pieces(split_pieces(content), max_tokens=max_tokens)

    @classmethod
    def from_pieces(cls, pieces: Iterable[str], *, max_tokens: int | None = None) -> Reply:
        """A text reply made of exactly ``pieces`` (fewer when ``max_tokens`` cuts it short)."""
        kept: list[str] = []
        finish = "stop"
        budget = None if max_tokens is None else max_tokens * 4
        used = 0
        for piece in pieces:
            if budget is not None and used + len(piece) > budget:
                if budget > used:
                    kept.append(piece[: budget - used])
                finish = "length"
                break
            kept.append(piece)
            used += len(piece)
        return cls(content="".join(kept), finish_reason=finish, pieces=tuple(kept))

    @property
    def completion_text(self) -> str:
        """The text the completion tokens are counted on."""
        if self.tool_call is not None:
            return self.tool_call.name + self.tool_call.arguments
        return self.content or ""


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into streaming pieces: a word (with its trailing spaces) or up to three CJK characters.

    ``"".join(split_pieces(text)) == text`` always holds.
    """
    return _PIECE_RE.findall(text)


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one."""
    return max(1, math.ceil(len(text) / 4))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def tool_calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls of a message that are objects; none when ``tool_calls`` is not a list. The server reads
    what a client sent as it is, and must not fail (a 500) on a shape it does not expect."""
    calls = message.get("tool_calls")
    return [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []


def function_of(value: Any) -> dict[str, Any]:
    """The ``function`` object of a tool, a tool call or a named ``tool_choice``; ``{}`` when there is none."""
    function = value.get("function") if isinstance(value, dict) else None
    return function if isinstance(function, dict) else {}


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The deterministic prompt estimate: all characters // 4, plus one per message."""
    chars = 0
    for message in messages:
        chars += len(message_text(message.get("content")))
        for call in tool_calls_of(message):
            function = function_of(call)
            chars += len(str(function.get("name", ""))) + len(str(function.get("arguments", "")))
    return chars // 4 + len(messages)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last ``user`` message, or ``""``."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def fault_of(text: str) -> str | None:
    """The fault marker (other than ``#slow``) that ``text`` triggers, if any."""
    return next((marker for marker in FAULTS if marker in text), None)


def tool_call_id(name: str, arguments: str) -> str:
    """A deterministic tool call id."""
    return "call_" + hashlib.sha256((arguments + name).encode()).hexdigest()[:12]


def _offered_tools(tools: list[dict[str, Any]]) -> dict[str, tuple[str, set[str]]]:
    """Offered function tools by bare name (after the last ``__``): full name and declared argument names."""
    offered: dict[str, tuple[str, set[str]]] = {}
    for tool in tools:
        function = function_of(tool)
        name = function.get("name")
        if tool.get("type", "function") != "function" or not isinstance(name, str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        declared = set(properties) if isinstance(properties, dict) else set()
        offered.setdefault(name.rsplit("__", 1)[-1], (name, declared))
    return offered


def _names(text: str, name: str) -> bool:
    """Whether ``text`` has ``name`` as a whole word (not ``x__a`` in ``x__a_2``)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.ASCII) is not None


def _intended_tool(text: str, offered: dict[str, tuple[str, set[str]]]) -> str | None:
    """The bare name of the offered tool ``text`` asks for, if any."""
    named = next((bare for bare, (full, _declared) in offered.items() if _names(text, full)), None)
    if named is not None:
        return named
    if _STATION_RE.search(text):
        return next((tool for tool, pattern in _INTENTS if tool in offered and pattern.search(text)), None)
    if "list_stations" in offered and _LIST_INTENT.search(text):
        return "list_stations"
    return None


def _tool_call(bare: str, full: str, declared: set[str], text: str, today: date) -> ToolCall:
    match = _STATION_RE.search(text)
    arguments: dict[str, str] = {"station": match.group(0).upper() if match else "S001"}
    if bare not in _UNDATED_TOOLS:  # levels, rainfall, and any other tool forced by tool_choice
        days = 6 if _WEEK.search(text) else 2  # the days before today: a week is today and the six before
        arguments |= {"start": (today - timedelta(days=days)).isoformat(), "end": today.isoformat()}
    encoded = json.dumps({k: v for k, v in arguments.items() if k in declared}, ensure_ascii=False)
    return ToolCall(id=tool_call_id(full, encoded), name=full, arguments=encoded)


def choose_tool_call(
    text: str, tools: list[dict[str, Any]], tool_choice: Any = None, *, today: date | None = None
) -> ToolCall | None:
    """The tool call the demo model makes for the user's ``text``, or ``None`` to answer in text."""
    offered = _offered_tools(tools)
    if not offered or tool_choice == "none":
        return None
    today = today or datetime.now(UTC).date()
    if isinstance(tool_choice, dict):
        wanted = function_of(tool_choice).get("name")
        for name, (full, declared) in offered.items():
            if wanted in (full, name):
                return _tool_call(name, full, declared, text, today)
        return None
    bare = _intended_tool(text, offered)
    if bare is None and tool_choice == "required":
        bare = next(iter(offered))
    if bare is None:
        return None
    full, declared = offered[bare]
    return _tool_call(bare, full, declared, text, today)


def _json_or_text(value: Any) -> Any:
    """Parse ``value`` as JSON when it is a string that looks like JSON; else return it unchanged."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _walk(value: Any) -> Iterable[Any]:
    """Every dict and list inside ``value``, JSON strings included (depth first)."""
    value = _json_or_text(value)
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        yield value
        for item in value:
            yield from _walk(item)


def _rows_with(value: Any, key: str) -> list[dict[str, Any]] | None:
    for node in _walk(value):
        if isinstance(node, list) and node and all(isinstance(r, dict) and key in r for r in node):
            return node
    return None


def _dict_with(value: Any, key: str) -> dict[str, Any] | None:
    return next((node for node in _walk(value) if isinstance(node, dict) and key in node), None)


def _station_of(value: Any) -> str:
    found = _dict_with(value, "station")
    return str(found["station"]) if found else "?"


def summarise_tool_result(text: str) -> str:
    """A short Chinese + English summary of one tool result (its JSON text)."""
    data = _json_or_text(text)
    if (rows := _rows_with(data, "level_m")) is not None:
        levels = [float(r["level_m"]) for r in rows]
        latest = max(rows, key=lambda r: str(r.get("time", "")))
        station = _station_of(data)
        return (
            f"站点 {station} 最新水位 {float(latest['level_m']):.2f} m（{latest.get('time', '?')}），"
            f"期间最低 {min(levels):.2f} m，最高 {max(levels):.2f} m，共 {len(rows)} 条读数。"
            f" / Station {station}: latest water level {float(latest['level_m']):.2f} m at {latest.get('time', '?')};"
            f" min {min(levels):.2f} m, max {max(levels):.2f} m over {len(rows)} readings."
        )
    if (rows := _rows_with(data, "rainfall_mm")) is not None:
        total = round(sum(float(r["rainfall_mm"]) for r in rows), 1)
        wettest = max(rows, key=lambda r: float(r["rainfall_mm"]))
        station = _station_of(data)
        return (
            f"站点 {station} 共 {len(rows)} 天累计降雨 {total} mm，"
            f"最大日雨量 {float(wettest['rainfall_mm'])} mm（{wettest.get('date', '?')}）。"
            f" / Station {station}: {total} mm of rain over {len(rows)} days;"
            f" wettest day {wettest.get('date', '?')} with {float(wettest['rainfall_mm'])} mm."
        )
    if (thresholds := _dict_with(data, "warning_level_m")) is not None:
        station = thresholds.get("station", "?")
        warning, guarantee = thresholds.get("warning_level_m"), thresholds.get("guarantee_level_m")
        historical = thresholds.get("historical_max_m")
        return (
            f"站点 {station} 警戒水位 {warning} m，保证水位 {guarantee} m，历史最高 {historical} m。"
            f" / Station {station}: warning level {warning} m, guarantee level {guarantee} m,"
            f" historical maximum {historical} m."
        )
    if (rows := _rows_with(data, "name")) is not None and all("id" in r for r in rows):
        names = "、".join(f"{r['id']} {r['name']}" for r in rows[:5])
        more = "……" if len(rows) > 5 else ""
        return f"共有 {len(rows)} 个站点：{names}{more} / {len(rows)} stations: {names}{more}"
    flat = " ".join(str(text).split())
    preview = flat[:TOOL_RESULT_PREVIEW] + ("…" if len(flat) > TOOL_RESULT_PREVIEW else "")
    return f"工具返回 / The tool returned: {preview}"


def answer_from_tool_results(messages: list[dict[str, Any]]) -> str:
    """The answer to the trailing ``tool`` messages of ``messages``."""
    trailing: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, message)
    names: dict[str, str] = {}
    for message in messages:
        for call in tool_calls_of(message):
            names[str(call.get("id"))] = str(function_of(call).get("name", ""))
    lines = []
    for message in trailing:
        name = names.get(str(message.get("tool_call_id")), "")
        summary = summarise_tool_result(message_text(message.get("content")))
        lines.append(f"- {name}: {summary}" if name and len(trailing) > 1 else summary)
    return (
        f"{PREFIX}根据工具结果 / Based on the tool result:\n"
        + "\n".join(lines)
        + "\n\n（数据来自演示用的合成数据 / synthetic demo data, answered by the HydroNet offline demo model.）"
    )


def plain_answer(question: str, *, tools_offered: bool = True) -> str:
    """The answer when no tool is called: says what it is, echoes the question, hints at a better one; or, to a
    question a demo hydrology tool answers asked with no tool offered, that a tool is needed and where to get one."""
    echo = " ".join(question.split())[:200] or "（空 / empty）"
    wants_tool = _intended_tool(question, _DEMO_TOOLS) is not None
    return (
        f"{PREFIX}我是 HydroNet 离线演示模型，不是真正的大语言模型。你问的是：「{echo}」。\n"
        f"This is the HydroNet offline demo model, not a real language model. You asked: “{echo}”.\n"
        f"{NO_TOOLS if wants_tool and not tools_offered else HINT}"
    )


def long_pieces() -> list[str]:
    """The :data:`LONG_CHUNKS` pieces of a ``#long`` answer."""
    return [PREFIX] + [f"第{i}段 chunk {i}. " for i in range(1, LONG_CHUNKS)]


def plan_reply(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    *,
    max_tokens: int | None = None,
    today: date | None = None,
) -> Reply:
    """What the demo model answers to ``messages``: pure and deterministic (given ``today``)."""
    question = last_user_text(messages)
    if "#long" in question:
        return Reply.from_pieces(long_pieces(), max_tokens=max_tokens)
    if messages and messages[-1].get("role") == "tool":
        return Reply.text(answer_from_tool_results(messages), max_tokens=max_tokens)
    call = choose_tool_call(question, tools or [], tool_choice, today=today)
    if call is not None:
        return Reply(tool_call=call, finish_reason="tool_calls")
    return Reply.text(plain_answer(question, tools_offered=bool(tools)), max_tokens=max_tokens)


# --- Wire format ---------------------------------------------------------------------------


def usage(messages: list[dict[str, Any]], reply: Reply) -> dict[str, int]:
    """The ``usage`` object of a completion."""
    prompt, completion = prompt_tokens(messages), estimate_tokens(reply.completion_text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(completion_id: str, created: int, messages: list[dict[str, Any]], reply: Reply) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_call is not None:
        call = reply.tool_call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": MODEL_ID,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage(messages, reply),
    }


def stream_chunks(
    completion_id: str, created: int, messages: list[dict[str, Any]], reply: Reply, *, include_usage: bool
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply, in order (``[DONE]`` not included)."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None
        return body

    chunks = [chunk({"role": "assistant", "content": ""})]
    if reply.tool_call is not None:
        call = reply.tool_call
        head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [head]}))
        for i in range(0, len(call.arguments), 8):
            fragment = call.arguments[i : i + 8]
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
    else:
        chunks.extend(chunk({"content": piece}) for piece in reply.pieces)
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = usage(messages, reply)
        chunks.append(last)
    return chunks


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


DONE = sse("[DONE]")


async def paced(events: list[bytes], delay_s: float) -> AsyncGenerator[bytes]:
    """Yield ``events`` with an (async) pause of ``delay_s`` between them."""
    for i, event in enumerate(events):
        if i and delay_s > 0:
            await asyncio.sleep(delay_s)
        yield event


class EventStreamResponse(Response):
    """A ``text/event-stream`` response that notices the client leaving and stops generating at once.

    With ``complete=False`` the response ends without its final (empty) body
    message, so the server closes the connection mid-stream (``#broken``).
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes], *, complete: bool = True) -> None:
        self.events = events
        self.complete = complete
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        STATS["streams_started"] += 1
        finished = False
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for event in self.events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                if self.complete:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    finished = True
                group.cancel_scope.cancel()
        except* OSError:
            pass  # the client went away while we were writing
        finally:
            with anyio.CancelScope(shield=True):
                await self.events.aclose()
            if finished:
                STATS["streams_completed"] += 1
            elif self.complete:
                STATS["streams_cancelled"] += 1


class TruncatedResponse(Response):
    """Headers promising ``len(body)`` bytes, only the first half sent, then the connection closes."""

    def __init__(self, body: bytes) -> None:
        self.full_body = body
        self.status_code = 200
        self.background = None
        self.media_type = "application/json"
        self.body = body
        self.init_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        half = self.full_body[: len(self.full_body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


# --- HTTP ----------------------------------------------------------------------------------


def _model_object() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": MODEL_CREATED, "owned_by": "hydronet"}


def _check_auth(request: Request) -> None:
    expected: str | None = request.app.state.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        missing = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        raise APIError(401, missing, code="invalid_api_key")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")


async def list_models(request: Request) -> Response:
    """``GET /v1/models``."""
    _check_auth(request)
    return JSONResponse({"object": "list", "data": [_model_object()]})


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{model}``."""
    _check_auth(request)
    model = request.path_params["model"]
    if model != MODEL_ID:
        raise APIError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
    return JSONResponse(_model_object())


async def demo_stats(request: Request) -> Response:
    """``GET /_demo/stats``: the stream counters of this process."""
    return JSONResponse(dict(STATS))


def _parse_request(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise APIError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "You must provide a model parameter.", param="model", code="missing_required_parameter")
    if model != MODEL_ID:
        unknown = f"The model '{model}' does not exist or you do not have access to it."
        raise APIError(404, unknown, param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        code = "missing_required_parameter" if messages is None else "invalid_type"
        raise APIError(400, "'messages' must be a non-empty array.", param="messages", code=code)
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            message_error = f"Invalid message at messages[{i}]: expected an object with a valid 'role'."
            raise APIError(400, message_error, param=f"messages[{i}]", code="invalid_value")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise APIError(400, "'tools' must be an array of tool objects.", param="tools", code="invalid_type")
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise APIError(400, f"'{key}' must be a positive integer.", param=key, code="invalid_value")
    return body


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    _check_auth(request)
    raw = await request.body()
    body = _parse_request(raw)
    messages: list[dict[str, Any]] = body["messages"]
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")

    question = last_user_text(messages)
    if "#slow" in question:
        await asyncio.sleep(SLOW_SECONDS)
    fault = fault_of(question)
    if fault == "#error500":
        raise APIError(500, "The demo model failed on purpose (#error500).", type_="server_error", code="demo_fault")
    if fault == "#ratelimit":
        limited = "Rate limit reached for the demo model (#ratelimit). Retry after 1 second."
        raise APIError(429, limited, type_="requests", code="rate_limit_exceeded", headers={"Retry-After": "1"})

    reply = plan_reply(messages, body.get("tools"), body.get("tool_choice"), max_tokens=max_tokens)
    completion_id = "chatcmpl-" + hashlib.sha256(raw).hexdigest()[:24]
    created = int(time.time())
    delay_s = request.app.state.token_delay_ms / 1000
    if fault == "#long":  # a reply that streams for seconds, for a client to act on while it streams (stop, leave)
        delay_s = max(delay_s, LONG_MIN_DELAY_MS / 1000)

    if not stream:
        if fault == "#malformed":
            return Response(b"{not json", media_type="application/json")
        encoded = json.dumps(completion_body(completion_id, created, messages, reply), ensure_ascii=False).encode()
        if fault == "#broken":
            return TruncatedResponse(encoded)
        return Response(encoded, media_type="application/json")

    chunks = stream_chunks(completion_id, created, messages, reply, include_usage=include_usage)
    if fault == "#malformed":
        return EventStreamResponse(paced([sse(chunks[0]), b"data: {not json\n\n", DONE], delay_s))
    if fault == "#broken":
        return EventStreamResponse(paced([sse(c) for c in chunks[: 1 + BROKEN_AFTER_CHUNKS]], delay_s), complete=False)
    return EventStreamResponse(paced([*(sse(c) for c in chunks), DONE], delay_s))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code).response()


def create_app(token_delay_ms: float = 15, api_key: str | None = None) -> Starlette:
    """The demo model server as a Starlette app.

    ``token_delay_ms`` paces streamed chunks; with ``api_key`` every ``/v1`` call
    needs ``Authorization: Bearer <api_key>``.
    """
    app = Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/_demo/stats", demo_stats, methods=["GET"]),
        ],
        exception_handlers={APIError: _api_error, HTTPException: _http_error},
    )
    app.state.token_delay_ms = max(0.0, float(token_delay_ms))
    app.state.api_key = api_key or None
    return app


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m demo.model_server --host H --port P [--token-delay-ms MS] [--api-key KEY]``."""
    from demo.serving import serve

    parser = argparse.ArgumentParser(
        prog="python -m demo.model_server", description="Offline OpenAI-compatible demo chat model (hydronet-demo)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8101, help="port to bind, 0 for any free one (default: 8101)")
    parser.add_argument("--token-delay-ms", type=float, default=15, help="pause between streamed chunks")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    serve(
        create_app(token_delay_ms=args.token_delay_ms, api_key=args.api_key),
        host=args.host,
        port=args.port,
        announce=lambda host, port: f"demo model server listening on http://{host}:{port}/v1",
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
