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
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2
import jsonschema
import mcp_types as types
import pydantic
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types import REQUEST_TIMEOUT, PaginatedRequestParams, RequestId, methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from apps.core.crypto import decrypt
from apps.core.languages import Words, for_operators, words_of
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
    """The tools loaded from a server's list, in its order; ``more`` when it lists more than were loaded;
    ``unusable``: the tools left out for their input schema, each as its name and what is wrong with it
    (``schema_problem``)."""

    tools: list[ToolSpec]
    more: bool = False
    unusable: tuple[tuple[str, str], ...] = ()


def schema_problem(schema: Any) -> str | None:
    """What keeps ``schema`` from being a tool's input schema (MCP: a JSON Schema of ``"type": "object"``), or None.

    A model server checks each tool's parameters when a chat offers them: one tool's schema it refuses (OpenAI's
    "Invalid schema for function", say, for ``properties`` that is not an object) failed every turn of every
    chat in the workspace until an admin unchecked the tool. The schema is checked against its dialect's
    meta-schema (``$schema``, else 2020-12, MCP's default).
    """
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return 'not a JSON Schema of "type": "object"'
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"{exc.message[:200]} (at {'/'.join(str(p) for p in exc.absolute_path) or 'the top'})"
    except RecursionError:
        return "nested too deeply"
    return None


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


class ErrorAnswer(NamedTuple):
    """A POST's answer with an error status: the status, its ``Content-Type``, whether it asks for credentials
    (a 401's ``WWW-Authenticate``), and whether for OAuth's (a ``Bearer`` challenge naming its
    ``resource_metadata``, as MCP's authorization asks of a server)."""

    status: int
    content_type: str = ""
    challenged: bool = False
    oauth: bool = False


class ErrorStatuses(httpx2.AsyncBaseTransport):
    """``transport``, noting in ``seen`` each POST answered with 400 or more (:class:`ErrorAnswer`).

    The SDK keeps only a 404's: another error status of a message's POST becomes "Server returned an error
    response" (streamable HTTP), or is logged and the request left waiting (SSE). The GETs are left out: a
    streamable-HTTP server may answer its optional event stream with 405, and the SSE transport's GET fails
    with the status itself.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport, *, seen: list[ErrorAnswer]) -> None:
        self._transport = transport
        self._seen = seen

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if request.method == "POST" and response.status_code >= 400:
            self._seen.append(_error_answer(response))
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


def _error_answer(response: httpx2.Response) -> ErrorAnswer:
    headers = response.headers
    challenge = headers.get("www-authenticate", "").lower()
    oauth = challenge.startswith("bearer") and "resource_metadata" in challenge
    return ErrorAnswer(response.status_code, headers.get("content-type", ""), "www-authenticate" in headers, oauth)


# A JSON string's escapes that matter here: an escaped backslash (so that the "\u" after it is text), a UTF-16
# surrogate pair, and a surrogate alone, which JSON parsers such as pydantic's refuse.
_ESCAPES = re.compile(
    rb"\\\\"  # an escaped backslash
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a pair
    rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"  # a surrogate alone
)


def _lone_surrogates_replaced(text: bytes) -> bytes:
    """``text`` (JSON, or an event stream of JSON) with each escaped surrogate alone as ``\\ufffd`` (of the same
    length), each escaped pair and escaped backslash as it was."""
    if b"\\u" not in text:
        return text
    return _ESCAPES.sub(lambda escape: b"\\ufffd" if len(escape[0]) == 6 else escape[0], text)


# The bytes an escape that matters here is made of: a cut after any other byte leaves every escape whole.
_ESCAPE_BYTES = b"\\u0123456789abcdefABCDEF"
# The most held back waiting for such a byte (a run of hex digits, say): past it, the run goes on as it is.
_MOST_HELD = 65_536


class _WholeCharacterBody(httpx2.AsyncByteStream):
    """``response``'s body, decoded, with escaped lone surrogates replaced; each chunk goes on up to its last
    byte that cannot be in an escape, the rest (usually none, or a few bytes) with the next chunk."""

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held = b""
        async for chunk in self._response.aiter_bytes():
            text = held + chunk
            cut = len(text.rstrip(_ESCAPE_BYTES))
            if not cut and len(text) <= _MOST_HELD:
                held = text
                continue
            cut = cut or len(text)
            held = text[cut:]
            yield _lone_surrogates_replaced(text[:cut])
        if held:
            yield _lone_surrogates_replaced(held)

    async def aclose(self) -> None:
        await self._response.aclose()


class WholeCharacterAnswers(httpx2.AsyncBaseTransport):
    """``transport``, whose JSON and event-stream answers come with each escaped lone surrogate as U+FFFD.

    ``"\\ud83d"`` is valid JSON that pydantic refuses ("unexpected end of hex escape"), and with it the SDK the
    whole answer ("not valid JSON-RPC"); the model's own text is made whole (apps.core.text.whole_characters),
    and so is a tool's here, before the SDK parses it. The replacement is as long as the escape, so
    MCP_MAX_ANSWER_BYTES counts the same.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        content_type = response.headers.get("content-type", "").lower()
        if not content_type.startswith(("application/json", "text/event-stream")):
            return response
        return decoded_response(response, request, _WholeCharacterBody(response))

    async def aclose(self) -> None:
        await self._transport.aclose()


class MessageEndpointError(httpx2.SSEError):
    """An SSE server's event stream named no message endpoint in time, or one the SDK refuses.

    An ``SSEError``, as the SDK's SSE transport raises it on: any other error before the endpoint it keeps,
    waiting for a reader that is not there yet, until the session's own limit.
    """

    def words(self) -> str:
        raise NotImplementedError


class NoMessageEndpoint(MessageEndpointError):
    """No ``endpoint`` event within the service's timeout of the event stream's start."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        super().__init__(f"No endpoint event within {seconds} s.")

    def words(self) -> str:
        return _("The server opened an event stream but named no message endpoint within %(seconds)d s: check "
                 "the URL's path (often /sse for SSE) and the transport.") % {"seconds": self.seconds}  # fmt: skip


class ForeignMessageEndpoint(MessageEndpointError):
    """A message endpoint on another origin than the event stream's, which the SDK refuses."""

    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        # Without the query (a session id) or userinfo, as the SDK names a redirect it did not follow.
        self.endpoint = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"[:200]
        super().__init__(f"Endpoint on another origin: {self.endpoint}")

    def words(self) -> str:
        return _("The server named a message endpoint on another host (%(endpoint)s); it is not used.") % {
            "endpoint": self.endpoint
        }


class _EndpointWatchedBody(httpx2.AsyncByteStream):
    """``response``'s event stream, as it comes, watched until its first ``endpoint`` event: past ``seconds``
    without one it raises :class:`NoMessageEndpoint`, and for one on another origin than ``url``'s (as the SDK
    compares them) :class:`ForeignMessageEndpoint`."""

    def __init__(self, response: httpx2.Response, *, url: str, seconds: int) -> None:
        self._response = response
        self._url = url
        self._seconds = seconds
        self._deadline = anyio.current_time() + seconds
        self._event = b""
        self._data: list[bytes] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._response.aiter_bytes())
        parts: list[bytes] = []  # of the line being read
        named = False
        while not named:
            try:
                with anyio.fail_after(max(self._deadline - anyio.current_time(), 0)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise NoMessageEndpoint(self._seconds) from None
            if b"\n" in chunk or b"\r" in chunk:
                text = b"".join([*parts, chunk])
                cut = text.endswith(b"\r")  # the line's end, or the first half of a "\r\n": the next chunk tells
                *lines, line = re.split(rb"\r\n|\r|\n", text[:-1] if cut else text)
                parts = [line + b"\r" if cut else line]
                named = self._endpoint_named(lines)
            else:
                parts.append(chunk)
            yield chunk
        async for chunk in chunks:
            yield chunk

    def _endpoint_named(self, lines: list[bytes]) -> bool:
        """Whether ``lines``, the stream's next whole lines, end the endpoint event (on the stream's origin)."""
        for line in lines:
            field, _colon, value = line.partition(b":")
            if field == b"event":
                self._event = value.removeprefix(b" ")
            elif field == b"data":
                self._data.append(value.removeprefix(b" "))
            elif line:
                continue  # another field, or a comment
            elif self._event == b"endpoint":
                self._check(b"\n".join(self._data).decode(errors="replace"))
                return True
            else:
                self._event, self._data = b"", []
        return False

    def _check(self, endpoint: str) -> None:
        joined = urljoin(self._url, endpoint)
        ours, theirs = urlsplit(self._url), urlsplit(joined)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            raise ForeignMessageEndpoint(joined)

    async def aclose(self) -> None:
        await self._response.aclose()


class EndpointWatch(httpx2.AsyncBaseTransport):
    """``transport`` of the SSE transport's client, whose event streams are watched until their ``endpoint``
    event (:class:`_EndpointWatchedBody`), so that a server that names none, or one elsewhere, fails in the
    service's timeout and in words, not at the session's limit as "no answer"."""

    def __init__(self, transport: httpx2.AsyncBaseTransport, *, url: str, seconds: int) -> None:
        self._transport = transport
        self._url = url
        self._seconds = seconds

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        content_type = response.headers.get("content-type", "").lower()
        if request.method != "GET" or response.status_code != 200 or not content_type.startswith("text/event-stream"):
            return response
        return decoded_response(response, request, _EndpointWatchedBody(response, url=self._url,
                                                                         seconds=self._seconds))  # fmt: skip

    async def aclose(self) -> None:
        await self._transport.aclose()


def _transport(service: McpService, error_statuses: list[ErrorAnswer]) -> AbstractAsyncContextManager[Any]:
    """The SDK transport for the service, on SSRF-guarded HTTP clients whose JSON answers are bounded and
    made whole (lone surrogates), whose POSTs' error statuses go to ``error_statuses``, and, for SSE, whose
    event stream must name its message endpoint, on its own origin, within the service's timeout."""
    from apps.core.outbound import guarded_async_client

    headers = _headers(service)
    # Reads wait a little past the service's timeout, so that a tool call's own timer ends it first, which tells
    # the server to stop (call_tool); an HTTP timeout at the same moment could end the session before it did.
    timeout = httpx2.Timeout(service.timeout_seconds, read=service.timeout_seconds + _READ_GRACE)

    def bounded(transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        whole = WholeCharacterAnswers(BoundedJsonAnswers(transport, limit=settings.MCP_MAX_ANSWER_BYTES))
        return ErrorStatuses(whole, seen=error_statuses)

    if service.type == Transport.SSE:

        def watched(transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
            return EndpointWatch(bounded(transport), url=service.url, seconds=service.timeout_seconds)

        def factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
            return guarded_async_client(timeout=timeout or httpx2.Timeout(service.timeout_seconds), headers=headers,
                                        wrap_transport=watched)  # fmt: skip

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


# Seconds past the service's timeout that HTTP reads wait (_transport), and that a tool call past it waits for its
# cancellation to go out (_cancellation_sent).
_READ_GRACE = 1
_CANCELLATION_WAIT = 1


class ToolCheckingDispatcher(JSONRPCDispatcher[Any]):
    """A session's dispatcher that takes out of each tools/list answer the tools the SDK would refuse, noting
    each in ``refused`` as its name and what is wrong with it.

    The SDK checks a list's answer as a whole against the protocol version's types (``version()``, the
    session's): one tool whose ``inputSchema`` is not of ``"type": "object"``, or whose ``properties`` is not an
    object, failed the whole list as not valid MCP, and with it every tool of the server. The other tools'
    problems are ``schema_problem``'s.
    """

    def __init__(
        self,
        read_stream: Any,
        write_stream: Any,
        *,
        version: Callable[[], str | None],
        refused: list[tuple[str, str]],
    ) -> None:
        super().__init__(read_stream, write_stream)
        self._version = version
        self._refused = refused

    async def send_raw_request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        opts: CallOptions | None = None,
        *,
        _related_request_id: RequestId | None = None,
    ) -> dict[str, Any]:
        raw = await super().send_raw_request(method, params, opts, _related_request_id=_related_request_id)
        if method == "tools/list" and isinstance(raw.get("tools"), list):
            raw = {**raw, "tools": [tool for tool in raw["tools"] if self._usable(tool)]}
        return raw

    def _usable(self, tool: Any) -> bool:
        if (refused := self._refusal(tool)) is None:
            return True
        name = tool.get("name") if isinstance(tool, dict) else None
        places = [e["loc"][2:] if e["loc"][:1] == ("tools",) else e["loc"] for e in refused.errors()[:3]]
        problem = "; ".join(f"{'.'.join(str(p) for p in place) or 'the tool'}: {e['msg']}"
                            for place, e in zip(places, refused.errors(), strict=False))  # fmt: skip
        self._refused.append((str(name)[:200] if name is not None else "?", problem[:500]))
        return False

    def _refusal(self, tool: Any) -> pydantic.ValidationError | None:
        """What the SDK would refuse in ``tool``, as the whole list's check would say it, or None."""
        try:
            methods.validate_server_result("tools/list", self._version() or "2025-11-25", {"tools": [tool]})
        except pydantic.ValidationError as refused:
            return refused
        except (KeyError, ValueError):  # a version the SDK's types do not know: its version-free type says
            try:
                types.Tool.model_validate(tool)
            except pydantic.ValidationError as refused:
                return refused
        return None


class Session(ClientSession):
    """The SDK's client session, whose tool lists leave out the tools it would refuse (``refused_tools``)."""

    def __init__(self, read_stream: Any, write_stream: Any) -> None:
        self.refused_tools: list[tuple[str, str]] = []
        dispatcher = ToolCheckingDispatcher(
            read_stream, write_stream, version=lambda: self.protocol_version, refused=self.refused_tools
        )
        super().__init__(dispatcher=dispatcher)


async def _with_session[T](
    service: McpService, work: Callable[[Session], Awaitable[T]], error_statuses: list[ErrorAnswer]
) -> T:
    async with _transport(service, error_statuses) as streams, Session(streams[0], streams[1]) as session:
        await session.initialize()
        return await work(session)


def _run[T](service: McpService, work: Callable[[Session], Awaitable[T]]) -> T:
    """``work`` in a session with the service's server; a failure is an McpError in words, logged in one line
    (the SDK's own log of a broken server, a traceback at ERROR, is off: config/settings/base.py)."""
    try:
        return _in_session(service, work)
    except McpError as failure:
        logger.warning("MCP service %s of %s failed: %s", service.slug, connection.schema_name,
                       for_operators(failure.words))  # fmt: skip
        raise


def _in_session[T](service: McpService, work: Callable[[Session], Awaitable[T]]) -> T:
    error_statuses: list[ErrorAnswer] = []
    # The session's own limit, past the service's timeout, which bounds each step (connecting, each request,
    # the SSE transport's endpoint) and fails it in its own words first.
    limit = service.timeout_seconds + 5

    def session() -> T:
        return asyncio.run(asyncio.wait_for(_with_session(service, work, error_statuses), timeout=limit))

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
        if error_statuses:  # an SSE server that refused a message: the SDK left its request waiting
            raise McpError(partial(_status_words, *error_statuses[-1])) from exc
        raise McpError(lambda: _("No answer within %(seconds)d s.") % {"seconds": limit}) from exc
    except BaseException as exc:  # the SDK wraps transport errors in exception groups
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise McpError(partial(_describe, exc, error_statuses[-1] if error_statuses else None, service.url)) from exc


def _describe(exc: BaseException, error_answer: ErrorAnswer | None = None, url: str = "") -> str:
    """What went wrong, in words an admin can act on (the page shows it), in the request's language.

    ``error_answer`` is the last error status a POST of the session was answered with (and its content type), which
    the SDK's own error for it does not tell; ``url``, the service's, which a redirect may lead back to.
    """
    first = _first_leaf(exc)
    if isinstance(first, MCPError) and first.error.message == _ERROR_RESPONSE and error_answer:
        return _status_words(*error_answer)
    if isinstance(first, httpx2.HTTPStatusError):
        return _http_status_words(first.response, url)
    if isinstance(first, httpx2.ConnectError):
        from apps.core.outbound import connect_error_words

        return connect_error_words(first)[:500]
    if isinstance(first, httpx2.TimeoutException):
        return _("The server did not answer in time.")
    if isinstance(first, MCPError):
        return _mcp_error_words(first, url, error_answer)
    return _other_words(first)


def _http_status_words(response: httpx2.Response, url: str) -> str:
    """An error status the SDK raised as it is (the SSE transport's GET): a redirect it did not follow, or
    another status."""
    if response.next_request is not None:
        return _redirect_words(str(response.next_request.url), url)
    return _status_words(*_error_answer(response))


def _other_words(error: BaseException) -> str:
    if isinstance(error, MessageEndpointError):
        return error.words()
    if isinstance(error, httpx2.SSEError) and (answered := _SSE_CONTENT_TYPE.search(str(error))):
        return _wrong_content_type_words(answered.group(1))
    if isinstance(error, httpx2.SSEError) and (limit := _SSE_EVENT_LIMIT.search(str(error))):
        return _("The answer is larger than %(size)s, the most the SSE transport reads: choose streamable HTTP "
                 "for this server if it offers it.") % {"size": filesizeformat(int(limit.group(1)))}  # fmt: skip
    if isinstance(error, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError):
        return _("The server closed the connection before it had answered: check that the URL's scheme (http or "
                 "https) and port are the server's, or try again later.")  # fmt: skip
    if isinstance(error, pydantic.ValidationError):
        found = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:3])
        return _("The server's answer is not valid MCP: check that the URL is an MCP server's; if it is, ask whoever "
                 "runs it (%(what)s: %(found)s).") % {"what": error.title, "found": found[:300]}  # fmt: skip
    return _unsupported_version_words(error) or f"{type(error).__name__}: {error}"[:500]


def _unsupported_version_words(error: BaseException) -> str | None:
    """The SDK's refusal of a server that answered ``initialize`` with a protocol version it does not speak (a
    RuntimeError, said as it was: "RuntimeError: Unsupported protocol version from the server: ..."), or None."""
    if not isinstance(error, RuntimeError) or not (version := _UNSUPPORTED_VERSION.match(str(error))):
        return None
    return _("The server speaks version %(version)s of MCP, which HydroNet does not (it speaks %(versions)s): ask "
             "whoever runs the server to offer one of those.") % {
        "version": version.group(1)[:50], "versions": ", ".join(HANDSHAKE_PROTOCOL_VERSIONS)
    }  # fmt: skip


def _wrong_content_type_words(content_type: str) -> str:
    if _is_web_page(content_type):
        return _web_page_words(content_type)
    return _("The address answered with %(type)s, not as an MCP server: check the URL's path (often /mcp, or /sse "
             "for SSE) and the transport.") % {"type": content_type or "?"}  # fmt: skip


def _mcp_error_words(error: MCPError, url: str = "", error_answer: ErrorAnswer | None = None) -> str:
    """The SDK's error for a request: its timeout, an answer over MCP_MAX_ANSWER_BYTES, or the server's words;
    ``error_answer``: the last POST's error status, if any."""
    if error.error.message == "Not Found":  # the SDK's words for an HTTP 404
        return _status_words(*(error_answer if error_answer and error_answer.status == 404 else (404,)))
    if error.error.code == REQUEST_TIMEOUT:
        return _("The server did not answer in time.")
    return _mcp_message_words(error, url)


def _mcp_message_words(error: MCPError, url: str = "") -> str:
    """The SDK's own words (see the patterns below) in ours, else the server's words as they are; ``url``: the
    service's."""
    if answered := _UNEXPECTED_CONTENT_TYPE.match(error.error.message):
        return _wrong_content_type_words(answered.group(1))
    if redirect := _UNFOLLOWED_REDIRECT.match(error.error.message):
        return _redirect_words(redirect.group(1), url)
    if _ANSWER_TOO_LARGE in error.error.message:
        return _("The answer is larger than %(size)s, the most HydroNet reads from an MCP server.") % {
            "size": filesizeformat(settings.MCP_MAX_ANSWER_BYTES)
        }
    if error.error.message.startswith(_NOT_JSON):  # after the size: an answer cut at the limit is not JSON either
        return _("The address answered, but not as an MCP server does: check the URL's path (often /mcp, or /sse for "
                 "SSE) and the transport.")  # fmt: skip
    if _SDK_OWN.match(error.error.message):
        return _(
            "The server did not answer as an MCP server (%(error)s): check the URL's path (often /mcp, or /sse "
            "for SSE) and the transport; if they are right, ask whoever runs the server."
        ) % {"error": str(error)[:300]}
    # The server's own JSON-RPC error: a tool's failure (-32000 and the like), or the protocol's (a method or a
    # tool it does not know, parameters it refuses), its words telling which.
    return _("The MCP server answered with an error: %(error)s") % {"error": str(error)[:300]}


def _redirect_words(location: str, url: str) -> str:
    """A redirect to ``location`` that was not followed, from the service's ``url``.

    The SDK follows a redirect within the address's origin (a trailing slash, say) and no other; one back to the
    address itself, which it followed until its budget ran out, was said as one to follow by hand ("if that is
    the MCP server, use its URL"), which it already was.
    """
    bare = httpx2.URL(location).copy_with(userinfo=b"", query=None, fragment=None)
    if url and bare == httpx2.URL(url).copy_with(userinfo=b"", query=None, fragment=None):
        return _("The address redirects to itself (%(location)s), so it never answers: check the URL, and the "
                 "server's configuration (or that of a proxy in front of it).") % {"location": bare}  # fmt: skip
    return _("The address redirects to %(location)s, which HydroNet does not follow: if that is the MCP "
             "server, use its URL.") % {"location": bare}  # fmt: skip


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside ``exc``'s groups (the SDK wraps transport errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is_web_page(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _web_page_words(content_type: str) -> str:
    """An answer in HTML: the address is a web page (a site's landing page, a sign-in page, a framework's refusal of
    a POST without its CSRF token), whatever its status, not an MCP endpoint."""
    return _("The address is a web page (it answered with %(type)s), not an MCP endpoint: check the URL's path "
             "(often /mcp, or /sse for SSE).") % {"type": content_type.partition(";")[0].strip()[:100]}  # fmt: skip


def _status_words(status: int, content_type: str = "", challenged: bool = False, oauth: bool = False) -> str:
    """An HTTP error status of the server, with what to check where the status tells.

    An answer in HTML (``content_type``) below 500 is a web page's, whose refusal (a 403 of a site's CSRF check,
    say) says nothing of auth headers; only a 401 that asks for credentials (``challenged``) is still said as one.
    A 5xx is the server's failure in any form: a proxy's "502 Bad Gateway" page is HTML too. A 401 that asks for
    OAuth's sign-in (``oauth``), which HydroNet does not go through, says how to give the server a token instead:
    "check the auth headers" left an admin looking for a sign-in button.
    """
    if status == 401 and oauth:
        return _("The server asks for an OAuth sign-in (401), which HydroNet does not do: get an access token for "
                 "this server from whoever runs it, and add it to the auth headers as \"Authorization: Bearer "
                 "<token>\". If that header is there already, the server refused its token (expired, or for "
                 "another server).")  # fmt: skip
    if _is_web_page(content_type) and status < 500 and not (status == 401 and challenged):
        return _web_page_words(content_type)
    return _error_status_words(status)


def _error_status_words(status: int) -> str:
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
    if status == 429:
        return _("The server answered 429 (too many requests): try again later.")
    return _("The server answered %(status)d, an error: check the URL and the auth headers, or ask whoever runs the "
             "server.") % {"status": status}  # fmt: skip


# The SDK passes these on as text only: httpx2's SSEError for an event over the transport's max_sse_event_size
# and our AnswerTooLarge for a JSON answer over MCP_MAX_ANSWER_BYTES (both end in "byte limit."), the
# streamable-HTTP transport's answers that are not JSON or an event stream and redirects it did not follow,
# and the SSE transport's answer that is not an event stream (an SSEError of its own).
_ANSWER_TOO_LARGE = "byte limit"
_ERROR_RESPONSE = "Server returned an error response"  # an error status other than 404 (ErrorStatuses has it)
_UNEXPECTED_CONTENT_TYPE = re.compile(r"Unexpected content type: (.*)")
_UNFOLLOWED_REDIRECT = re.compile(r"Redirect to (\S+) not followed")
_SSE_EVENT_LIMIT = re.compile(r"exceeded the (\d+) byte limit")
_NOT_JSON = ("Failed to parse JSON response", "Failed to parse SSE message")
# The SDK's other errors of its own for a request (a closed or ended stream, a lost session, an error status
# ErrorStatuses did not see), where the server sent no error of its own.
_SDK_OWN = re.compile(r"Connection closed$|Session terminated$|SSE stream (failed|ended)|Server returned an error")
# The SDK's RuntimeError for an initialize answered with a protocol version it does not speak.
_UNSUPPORTED_VERSION = re.compile(r"Unsupported protocol version from the server: (.*)")
_SSE_CONTENT_TYPE = re.compile(r"Expected response with content type 'text/event-stream', got '([^']*)'")


# The most pages of a tool list that are asked for: a server whose cursor never ends (or comes round again) is
# stopped here, if the service's timeout has not stopped it first.
MAX_TOOL_PAGES = 50


def _stored_size(tool: ToolSpec) -> int:
    """The bytes ``tool`` takes in the stored tool list (JSON, UTF-8)."""
    stored = {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}
    return len(json.dumps(stored, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def list_tools(service: McpService) -> ToolListing:
    """The server's tools, as its tools/list answers them, page after page (the SDK asks for one page).

    At most MAX_TOOLS_PER_SERVICE tools of at most MCP_MAX_TOOL_LIST_BYTES in all, from at most MAX_TOOL_PAGES
    pages, the first ones in the server's order; past any of these, the listing stops there with ``more`` set.
    The whole listing shares the session's time (the service's timeout). Each answer is bounded
    (MCP_MAX_ANSWER_BYTES), and the list as a whole is too: fifty pages of 8 MB each took a web process past
    6 GB, and a list over PostgreSQL's 255 MB for a JSON value was a 500.
    """

    async def work(session: Session) -> ToolListing:
        tools: list[ToolSpec] = []
        unusable: list[tuple[str, str]] = []
        size = 0
        cursor: str | None = None
        for _page in range(MAX_TOOL_PAGES):
            result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            unusable.extend(session.refused_tools)
            session.refused_tools.clear()
            for tool in result.tools:
                spec = ToolSpec(name=tool.name, description=tool.description or "",
                                input_schema=dict(tool.input_schema or {}))  # fmt: skip
                size += _stored_size(spec)  # the tools left out too: checking a schema takes 2 s a megabyte
                if len(tools) == MAX_TOOLS_PER_SERVICE or size > settings.MCP_MAX_TOOL_LIST_BYTES:
                    return ToolListing(tools, more=True, unusable=tuple(unusable))
                if (problem := schema_problem(spec.input_schema)) is not None:
                    unusable.append((tool.name, problem))
                    continue
                tools.append(spec)
            cursor = result.next_cursor  # "" too is taken for the end: asked for again, it is the first page
            if cursor and len(tools) == MAX_TOOLS_PER_SERVICE:
                return ToolListing(tools, more=True, unusable=tuple(unusable))
            if not cursor:
                return ToolListing(tools, unusable=tuple(unusable))
        return ToolListing(tools, more=True, unusable=tuple(unusable))

    listing = _run(service, work)
    if listing.more:
        logger.warning("MCP service %s of %s lists more tools than are loaded; %d are", service.slug,
                       connection.schema_name, len(listing.tools))  # fmt: skip
    if listing.unusable:
        logger.warning("MCP service %s of %s lists %d tools whose input schema is not valid, left out: %s",
                       service.slug, connection.schema_name, len(listing.unusable),
                       "; ".join(f"{name}: {problem}" for name, problem in listing.unusable[:5]))  # fmt: skip
    return listing


def _decoded_size(data: str) -> str:
    """The size of what base64 ``data`` decodes to, in words (``1.0 MB``), without decoding it."""
    return filesizeformat(max(len(data) * 3 // 4 - data[-2:].count("="), 0))


def _kind(mime_type: str | None) -> str:
    """A server's MIME type as it is said in a placeholder: cut short, or "?" for none."""
    return (mime_type or "?")[:100]


def block_text(block: types.ContentBlock) -> str:
    """What the model is given, and the chat stores and shows, for one block of a tool's result.

    Text is given as it is, and so is an embedded text resource's, under a line naming its URI. What the model
    cannot read in text (an image, audio, a binary resource) is a short placeholder naming its kind, MIME type
    and size instead of its base64: a 1 MB image was 1.3 MB of base64 in the model's context (cut at
    MCP_RESULT_MAX_CHARS) and in the stored message. A link to a resource names it and its URI.
    """
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent):
        return _("[An image (%(type)s, %(size)s): not passed on to the model]") % {
            "type": _kind(block.mime_type), "size": _decoded_size(block.data)
        }  # fmt: skip
    if isinstance(block, types.AudioContent):
        return _("[Audio (%(type)s, %(size)s): not passed on to the model]") % {
            "type": _kind(block.mime_type), "size": _decoded_size(block.data)
        }  # fmt: skip
    if isinstance(block, types.ResourceLink):
        return _("[A link to the resource %(uri)s: %(name)s (%(type)s)]") % {
            "uri": str(block.uri)[:500], "name": block.name[:200], "type": _kind(block.mime_type)
        }  # fmt: skip
    resource = block.resource
    if isinstance(resource, types.TextResourceContents):
        heading = _("[The resource %(uri)s (%(type)s):]") % {"uri": str(resource.uri)[:500],
                                                             "type": _kind(resource.mime_type)}  # fmt: skip
        return f"{heading}\n{resource.text}"
    return _("[The resource %(uri)s (%(type)s, %(size)s): not passed on to the model]") % {
        "uri": str(resource.uri)[:500], "type": _kind(resource.mime_type), "size": _decoded_size(resource.blob)
    }  # fmt: skip


def result_text(result: types.CallToolResult) -> str:
    """A tool's result as the text the model is given (``block_text`` for each block, one a line), with its
    structured content as JSON when no block is text: MCP asks a server to send that JSON as text too, and most
    do, but one that sent it only structured, or next to an image, had it left out.

    A result with nothing in it (no block, or only blank text) says so: it was an empty message to the model and
    an empty box in the chat's tool panel, an error's too, with nothing to tell a tool that found nothing from one
    that failed without a word.
    """
    parts = [block_text(block) for block in result.content]
    if result.structured_content is not None and not any(isinstance(b, types.TextContent) for b in result.content):
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if text.strip():
        return text
    if result.is_error:
        return _("[The tool reported an error, and said nothing about it]")
    return _("[The tool answered with nothing]")


async def _cancellation_sent(session: Session) -> None:
    """Wait until the ``notifications/cancelled`` the SDK sends for a request past its time has gone out.

    The SDK hands that notification to the transport and raises; the session then closed at once, and its
    transport's task that was posting the notification was cancelled with it, so the server never heard and
    the tool ran on. The transport posts a session's messages in order, so a ping sent now goes out after it.
    """
    with anyio.move_on_after(_CANCELLATION_WAIT), suppress(MCPError):
        await session.send_ping()


class ToolStopped(McpError):
    """The call was stopped (``call_tool``'s ``stop``): the turn it ran for ended, its client gone."""

    def __init__(self) -> None:
        super().__init__(lambda: _("The tool call was stopped: the reply was stopped before it finished."))


# How often a tool call under way looks whether it is to stop (``call_tool``'s ``stop``).
_STOP_POLL_SECONDS = 0.05


async def _stopped_by(stop: threading.Event, scope: anyio.CancelScope) -> None:
    while not stop.is_set():
        await anyio.sleep(_STOP_POLL_SECONDS)
    scope.cancel()


def call_tool(
    service: McpService, tool: str, arguments: dict[str, Any], *, stop: threading.Event | None = None
) -> ToolOutcome:
    """Call one tool; a tool that reports an error is an outcome, not an exception.

    ``stop``, set from another thread, cancels the call as the SDK does (the server is sent
    ``notifications/cancelled``, and this waits until it has gone out) and raises ``ToolStopped``.
    """
    started = time.perf_counter()

    async def work(session: Session) -> tuple[types.CallToolResult, int]:
        scope = anyio.CancelScope()
        watch = asyncio.ensure_future(_stopped_by(stop, scope)) if stop is not None else None
        try:
            with scope:
                result = await session.call_tool(tool, arguments, read_timeout_seconds=service.timeout_seconds)
        except MCPError as error:
            if error.error.code == REQUEST_TIMEOUT:
                await _cancellation_sent(session)
            raise
        finally:
            if watch is not None:
                watch.cancel()
        if scope.cancelled_caught:  # the SDK handed the server its notifications/cancelled
            await _cancellation_sent(session)
            raise ToolStopped
        return result, int((time.perf_counter() - started) * 1000)

    result, duration_ms = _run(service, work)
    # Said here, in the request's thread and language, not in the session's event loop.
    return ToolOutcome(text=result_text(result), is_error=bool(result.is_error), duration_ms=duration_ms)
