"""Talking to a tenant's MCP server through the official SDK (mcp 2.x), from sync code.

Each operation opens a session, does its work and closes it: chats call tools
rarely enough that a fresh session (a few milliseconds on a LAN) is simpler and
safer than keeping sessions alive across requests and threads. Connections go
through the SSRF guard, which checks every address again at connect time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx2
import pydantic
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT, PaginatedRequestParams

from apps.core.crypto import decrypt
from apps.core.languages import Words, words_of
from apps.core.outbound import decoded_response
from apps.mcp.models import McpService, Transport
from apps.mcp.tool_names import MAX_TOOLS_PER_SERVICE
from apps.tenants.db import connection

logger = logging.getLogger(__name__)


class McpError(Exception):
    """The server could not be reached, is not an MCP server, or failed.

    Said in the active language (``str()``); ``words`` builds it in any (apps.core.languages), for the
    service's last error, which stores it.
    """

    def __init__(self, message: str | Words) -> None:
        self.words = words_of(message)
        super().__init__(self.words())


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolListing:
    """The tools loaded from a server's list, in its order; ``more`` when it lists more than were loaded."""

    tools: list[ToolSpec]
    more: bool = False


@dataclass(frozen=True)
class ToolOutcome:
    text: str
    is_error: bool
    duration_ms: int


def _headers(service: McpService) -> dict[str, str]:
    raw = decrypt(service.secret_headers)
    return {str(k): str(v) for k, v in json.loads(raw).items()} if raw else {}


class AnswerTooLarge(httpx2.StreamError):
    """A JSON answer went past MCP_MAX_ANSWER_BYTES while it was read.

    A ``StreamError``: the SDK's streamable-HTTP transport catches those while it reads a JSON answer and
    fails the request that answer was for, as it does for an event over ``max_sse_event_size``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"A JSON answer exceeded the {limit} {_ANSWER_TOO_LARGE}.")


class _BoundedJsonBody(httpx2.AsyncByteStream):
    """``response``'s body, decoded, raising :class:`AnswerTooLarge` once more than ``limit`` bytes came."""

    def __init__(self, response: httpx2.Response, limit: int) -> None:
        self._response = response
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self._response.aiter_bytes():
            read += len(chunk)
            if read > self._limit:
                raise AnswerTooLarge(self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class BoundedJsonAnswers(httpx2.AsyncBaseTransport):
    """``transport``, whose ``application/json`` answers are read through MCP_MAX_ANSWER_BYTES.

    The SDK reads a JSON answer whole (``response.aread()``) and bounds only event streams
    (``max_sse_event_size``), so a server answering in JSON could send any amount. Here the body is handed
    on decoded, its ``Content-Encoding`` gone, so the bound counts what the SDK would hold, not the
    compressed size; the read stops at the chunk that passes it.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport, *, limit: int) -> None:
        self._transport = transport
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if not response.headers.get("content-type", "").lower().startswith("application/json"):
            return response
        return decoded_response(response, request, _BoundedJsonBody(response, self._limit))

    async def aclose(self) -> None:
        await self._transport.aclose()


class ErrorStatuses(httpx2.AsyncBaseTransport):
    """``transport``, noting in ``seen`` the status of each POST answered with 400 or more.

    The SDK keeps only a 404's: another error status of a message's POST becomes "Server returned an error
    response" (streamable HTTP), or is logged and the request left waiting (SSE). The GETs are left out: a
    streamable-HTTP server may answer its optional event stream with 405, and the SSE transport's GET fails
    with the status itself.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport, *, seen: list[int]) -> None:
        self._transport = transport
        self._seen = seen

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if request.method == "POST" and response.status_code >= 400:
            self._seen.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


def _transport(service: McpService, error_statuses: list[int]) -> AbstractAsyncContextManager[Any]:
    """The SDK transport for the service, on SSRF-guarded HTTP clients whose JSON answers are bounded and
    whose POSTs' error statuses go to ``error_statuses``."""
    from apps.core.outbound import guarded_async_client

    headers = _headers(service)
    timeout = httpx2.Timeout(service.timeout_seconds)

    def bounded(transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        return ErrorStatuses(BoundedJsonAnswers(transport, limit=settings.MCP_MAX_ANSWER_BYTES), seen=error_statuses)

    if service.type == Transport.SSE:

        def factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
            return guarded_async_client(timeout=timeout or httpx2.Timeout(service.timeout_seconds), headers=headers,
                                        wrap_transport=bounded)  # fmt: skip

        return sse_client(service.url, headers=headers, timeout=service.timeout_seconds, httpx_client_factory=factory)

    @asynccontextmanager
    async def streamable() -> Any:
        async with (
            guarded_async_client(timeout=timeout, headers=headers, wrap_transport=bounded) as http_client,
            streamable_http_client(
                service.url, http_client=http_client, max_sse_event_size=settings.MCP_MAX_ANSWER_BYTES
            ) as streams,
        ):
            yield streams

    return streamable()


async def _with_session[T](
    service: McpService, work: Callable[[ClientSession], Awaitable[T]], error_statuses: list[int]
) -> T:
    async with _transport(service, error_statuses) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        return await work(session)


def _run[T](service: McpService, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    """``work`` in a session with the service's server; a failure is an McpError in words, logged in one line
    (the SDK's own log of a broken server, a traceback at ERROR, is off: config/settings/base.py)."""
    try:
        return _in_session(service, work)
    except McpError as failure:
        logger.warning("MCP service %s of %s failed: %s", service.slug, connection.schema_name, failure)
        raise


def _in_session[T](service: McpService, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    error_statuses: list[int] = []

    def session() -> T:
        return asyncio.run(
            asyncio.wait_for(_with_session(service, work, error_statuses), timeout=service.timeout_seconds + 5)
        )

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return session()  # the usual case: a sync request or task thread
        # An event loop already runs in this thread (Playwright's sync API does that in tests):
        # asyncio.run refuses to nest, so the session gets a thread of its own.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(session).result()
    except McpError:
        raise
    except TimeoutError as exc:
        seconds = service.timeout_seconds
        if error_statuses:  # an SSE server that refused a message: the SDK left its request waiting
            status = error_statuses[-1]
            raise McpError(partial(_status_words, status)) from exc
        raise McpError(lambda: _("No answer within %(seconds)d s.") % {"seconds": seconds}) from exc
    except BaseException as exc:  # the SDK wraps transport errors in exception groups
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise McpError(partial(_describe, exc, error_statuses[-1] if error_statuses else None)) from exc


def _describe(exc: BaseException, error_status: int | None = None) -> str:
    """What went wrong, in words an admin can act on (the page shows it), in the request's language.

    ``error_status`` is the last error status a POST of the session was answered with, which the SDK's own
    error for it does not tell.
    """
    first = _first_leaf(exc)
    if isinstance(first, MCPError) and first.error.message == _ERROR_RESPONSE and error_status:
        return _status_words(error_status)
    if isinstance(first, httpx2.HTTPStatusError):
        return _status_words(first.response.status_code)
    if isinstance(first, httpx2.ConnectError):
        from apps.core.outbound import connect_error_words

        return connect_error_words(first)[:500]
    if isinstance(first, httpx2.TimeoutException):
        return _("The server did not answer in time.")
    if isinstance(first, MCPError):
        return _mcp_error_words(first)
    return _other_words(first)


def _other_words(error: BaseException) -> str:
    if isinstance(error, httpx2.SSEError) and (answered := _SSE_CONTENT_TYPE.search(str(error))):
        return _wrong_content_type_words(answered.group(1))
    if isinstance(error, httpx2.SSEError) and (limit := _SSE_EVENT_LIMIT.search(str(error))):
        return _("The answer is larger than %(size)s, the most the SSE transport reads: choose streamable HTTP "
                 "for this server if it offers it.") % {"size": filesizeformat(int(limit.group(1)))}  # fmt: skip
    if isinstance(error, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError):
        return _("The server closed the connection before it had answered.")
    if isinstance(error, pydantic.ValidationError):
        found = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:3])
        return (
            _("The server's answer is not valid MCP (%(what)s): %(found)s") % {"what": error.title, "found": found}
        )[:500]
    return f"{type(error).__name__}: {error}"[:500]


def _wrong_content_type_words(content_type: str) -> str:
    return _("The address answered with %(type)s, not as an MCP server: check the URL's path (often /mcp, or /sse "
             "for SSE) and the transport.") % {"type": content_type or "?"}  # fmt: skip


def _mcp_error_words(error: MCPError) -> str:
    """The SDK's error for a request: its timeout, an answer over MCP_MAX_ANSWER_BYTES, or the server's words."""
    if error.error.message == "Not Found":  # the SDK's words for an HTTP 404
        return _status_words(404)
    if error.error.code == REQUEST_TIMEOUT:
        return _("The server did not answer in time.")
    return _mcp_message_words(error)


def _mcp_message_words(error: MCPError) -> str:
    """The SDK's own words (see the patterns below) in ours, else the server's words as they are."""
    if answered := _UNEXPECTED_CONTENT_TYPE.match(error.error.message):
        return _wrong_content_type_words(answered.group(1))
    if redirect := _UNFOLLOWED_REDIRECT.match(error.error.message):
        return _("The address redirects to %(location)s, which HydroNet does not follow: if that is the MCP "
                 "server, use its URL.") % {"location": redirect.group(1)}  # fmt: skip
    if _ANSWER_TOO_LARGE in error.error.message:
        return _("The answer is larger than %(size)s, the most HydroNet reads from an MCP server.") % {
            "size": filesizeformat(settings.MCP_MAX_ANSWER_BYTES)
        }
    if error.error.message.startswith(_NOT_JSON):  # after the size: an answer cut at the limit is not JSON either
        return _("The server's answer is not valid JSON-RPC.")
    return _("The server did not answer as an MCP server: %(error)s") % {"error": str(error)[:300]}


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside ``exc``'s groups (the SDK wraps transport errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _status_words(status: int) -> str:
    """An HTTP error status of the server, with what to check where the status tells."""
    if status in (401, 403):
        return _("The server refused the request (%(status)d): check the auth headers.") % {"status": status}
    if status in (400, 404):
        return _("The address answered %(status)d, not as an MCP server: check the URL's path (often /mcp, or "
                 "/sse for SSE) and the transport.") % {"status": status}  # fmt: skip
    if status == 405:
        return _("The address answered 405 (method not allowed): it is probably not an MCP endpoint, or its "
                 "server speaks the other transport: check the URL's path and the transport.")  # fmt: skip
    if status >= 500:
        return _("The server failed: it answered %(status)d. Try again later, or ask whoever runs it.") % {
            "status": status
        }
    return _("The server answered %(status)d, an error.") % {"status": status}


# The SDK passes these on as text only: httpx2's SSEError for an event over the transport's max_sse_event_size
# and our AnswerTooLarge for a JSON answer over MCP_MAX_ANSWER_BYTES (both end in "byte limit."), the
# streamable-HTTP transport's answers that are not JSON or an event stream and redirects it did not follow,
# and the SSE transport's answer that is not an event stream (an SSEError of its own).
_ANSWER_TOO_LARGE = "byte limit"
_ERROR_RESPONSE = "Server returned an error response"  # an error status other than 404 (ErrorStatuses has it)
_UNEXPECTED_CONTENT_TYPE = re.compile(r"Unexpected content type: (.*)")
_UNFOLLOWED_REDIRECT = re.compile(r"Redirect to (\S+) not followed")
_SSE_EVENT_LIMIT = re.compile(r"exceeded the (\d+) byte limit")
_NOT_JSON = "Failed to parse JSON response"
_SSE_CONTENT_TYPE = re.compile(r"Expected response with content type 'text/event-stream', got '([^']*)'")


# The most pages of a tool list that are asked for: a server whose cursor never ends (or comes round again) is
# stopped here, if the service's timeout has not stopped it first.
MAX_TOOL_PAGES = 50


def list_tools(service: McpService) -> ToolListing:
    """The server's tools, as its tools/list answers them, page after page (the SDK asks for one page).

    At most MAX_TOOLS_PER_SERVICE tools from at most MAX_TOOL_PAGES pages, the first ones in the server's
    order; past either, the listing stops there with ``more`` set. The whole listing shares the session's
    time (the service's timeout).
    """

    async def work(session: ClientSession) -> ToolListing:
        tools: list[ToolSpec] = []
        cursor: str | None = None
        for _page in range(MAX_TOOL_PAGES):
            result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools += [
                ToolSpec(name=tool.name, description=tool.description or "", input_schema=dict(tool.input_schema or {}))
                for tool in result.tools
            ]
            cursor = result.next_cursor  # "" too is taken for the end: asked for again, it is the first page
            if len(tools) > MAX_TOOLS_PER_SERVICE or (cursor and len(tools) == MAX_TOOLS_PER_SERVICE):
                return ToolListing(tools[:MAX_TOOLS_PER_SERVICE], more=True)
            if not cursor:
                return ToolListing(tools)
        return ToolListing(tools, more=True)

    listing = _run(service, work)
    if listing.more:
        logger.warning("MCP service %s of %s lists more tools than are loaded; %d are", service.slug,
                       connection.schema_name, len(listing.tools))  # fmt: skip
    return listing


def call_tool(service: McpService, tool: str, arguments: dict[str, Any]) -> ToolOutcome:
    """Call one tool; a tool that reports an error is an outcome, not an exception."""
    started = time.perf_counter()

    async def work(session: ClientSession) -> ToolOutcome:
        result = await session.call_tool(tool, arguments, read_timeout_seconds=service.timeout_seconds)
        parts = []
        for block in result.content:
            text = getattr(block, "text", None)
            parts.append(text if text is not None else json.dumps(block.model_dump(mode="json"), ensure_ascii=False))
        if not parts and result.structured_content is not None:
            parts.append(json.dumps(result.structured_content, ensure_ascii=False))
        return ToolOutcome(
            text="\n".join(parts),
            is_error=bool(result.is_error),
            duration_ms=int((time.perf_counter() - started) * 1000),
        )

    return _run(service, work)
