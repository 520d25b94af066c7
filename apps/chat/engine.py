"""One assistant turn: ask the model, run the tools it asks for, ask again, and stream it all.

This module knows nothing of the database. ``run_turn`` yields events as they
happen (each token the moment the model sends it); apps.chat.services stores
them and apps.chat.apis turns them into Server-Sent Events. The OpenAI-style
``messages`` list is extended in place with the assistant's tool calls and the
tools' results, as the model needs to see them in the next round.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Protocol

import httpx2
import openai
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from openai.types.chat import ChatCompletion

from apps.chat.waits import WAITING, Waiting, relayed, waited
from apps.core import shutdown
from apps.core.languages import Words, words_of
from apps.core.text import whole_characters
from apps.llm.client import AnswerTooLarge, ModelServer, openai_client, status_words, unreachable_words
from apps.mcp import client as mcp_client
from apps.mcp.models import McpService
from apps.mcp.tool_names import SEPARATOR

if TYPE_CHECKING:
    from openai._streaming import ServerSentEvent, SSEBytesDecoder


class UpstreamError(Exception):
    """The model server failed: down, slow, an error status, malformed JSON or a broken stream.

    ``message`` is said in the active language; ``words`` builds it in any (apps.core.languages), for the
    failed reply that stores it. They may quote the server's own words.
    """

    def __init__(self, message: str | Words, *, status: int | None = None) -> None:
        built = words_of(message)
        self.words: Words = lambda: whole_characters(built())
        self.message = self.words()
        super().__init__(self.message)
        self.status = status


@dataclass(frozen=True)
class BoundTool:
    """An MCP tool as the model sees it: ``<service slug>__<tool name>``."""

    exposed_name: str
    service: McpService
    tool_name: str
    description: str
    input_schema: dict[str, Any]

    def openai_spec(self) -> dict[str, Any]:
        schema = self.input_schema if self.input_schema.get("type") == "object" else {"type": "object"}
        return {
            "type": "function",
            "function": {
                "name": self.exposed_name,
                "description": f"[{self.service.name}] {self.description}"[:1024],
                "parameters": {"properties": {}, **schema},
            },
        }


def bind_tools(services: Iterable[McpService]) -> list[BoundTool]:
    """The cached tools of ``services`` but the disabled ones, each once, under names no two tools share
    (apps.mcp.tool_names)."""
    return [
        BoundTool(
            exposed_name=tool.exposed_name,
            service=service,
            tool_name=tool.name,
            description=tool.description,
            input_schema=tool.input_schema,
        )
        for service in services
        for tool in service.offered_tools  # not those kept from the model by the admins
    ]


# --- Events -------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A piece of the model's answer as it comes; ``refusal``: of its refusal (OpenAI's ``delta.refusal``, the
    model declining, e.g. with a ``response_format``), which the chat shows as the answer and /v1 passes on as
    OpenAI's own."""

    text: str
    refusal: bool = False
    #: The model's reasoning said as its answer, because it said nothing else (``_Accumulator.end``): the chat
    #: shows it as the answer; /v1 has passed it on as ``reasoning_content`` already, and does not again.
    reasoning: bool = False


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    service: str
    tool: str
    arguments: dict[str, Any] | None
    raw_arguments: str


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    result: str
    is_error: bool
    duration_ms: int
    truncated: bool


@dataclass(frozen=True)
class ModelReply:
    """The end of one model call: what it said, the tools it asked for, and its reported usage."""

    content: str
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    refusal: str = ""
    reasoning: str = ""  # a reasoning model's thinking before its answer: /v1 passes it on, nothing stores it
    #: ``content`` is the reasoning, the model having said nothing else (``Token.reasoning``): not /v1's content.
    content_is_reasoning: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def said(self) -> str:
        """What a reader is shown of it: its text, or the model's refusal (only one of them comes, as a rule)."""
        return self.content + self.refusal


@dataclass(frozen=True)
class Thinking:
    """The model is reasoning (``reasoning_content``), not answering yet: said at its first piece of reasoning, then
    at most every ``THINKING_EVERY_SECONDS`` while it goes on, so that the member sees why no answer comes, and the
    chat's stream is not idle meanwhile (a proxy closes an idle one). The reasoning itself is not passed on."""


THINKING = Thinking()


@dataclass(frozen=True)
class Reasoning:
    """A piece of a reasoning model's thinking (``reasoning_content`` or ``reasoning``), as it comes: /v1 passes it
    on as DeepSeek's API does (``reasoning_content``); the chat neither shows nor stores it (``THINKING`` only)."""

    text: str


# How often a model that goes on reasoning is said to be thinking (one small event each time).
THINKING_EVERY_SECONDS = 10.0

Event = Token | Thinking | Reasoning | ToolCall | ToolResult | ModelReply | Waiting
ToolRunner = Callable[[BoundTool, dict[str, Any]], mcp_client.ToolOutcome]

__all__ = ["WAITING", "Waiting"]  # apps.chat.waits': said while a turn waits (a tool call, a silent model)

# The stop of the tool call running in this thread (``_tool_outcome``), for ``run_mcp_tool``.
_running = threading.local()


@dataclass(frozen=True)
class Current:
    """What a running turn may use now, as its ``recheck`` read it: the model server, and the tools offered."""

    server: ModelServer
    tools: list[BoundTool]


#: Read before each AI call of a turn after its first: raises (ApplicationError) when the turn may not go on.
Recheck = Callable[[], Current]


class CallMeter(Protocol):
    """Meters each AI call of a turn (apps.usage.meter.Meter): charge before, then record or release."""

    def charge(self, kind: str) -> Any: ...
    def record(self, ticket: Any, tokens: int = 0) -> None: ...
    def release(self, ticket: Any) -> None: ...
    def keep_claim(self) -> None: ...


def run_mcp_tool(tool: BoundTool, arguments: dict[str, Any]) -> mcp_client.ToolOutcome:
    """Call the tool through the MCP SDK; a failure becomes an error outcome for the model, with its duration."""
    started = time.perf_counter()
    try:
        return mcp_client.call_tool(tool.service, tool.tool_name, arguments, stop=getattr(_running, "stop", None))
    except mcp_client.McpError as exc:
        return mcp_client.ToolOutcome(
            text=_("The tool call failed: %(error)s") % {"error": exc},
            is_error=True,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )


def _client(server: ModelServer) -> openai.OpenAI:
    # Clients are reused: building one (its connection pool and TLS context) costs milliseconds.
    return _cached_client(server, settings.LLM_TIMEOUT_SECONDS, settings.LLM_CONNECT_TIMEOUT_SECONDS,
                          settings.LLM_MAX_RETRIES)  # fmt: skip


@lru_cache(maxsize=64)
def _cached_client(server: ModelServer, timeout: float, connect_timeout: float, retries: int) -> openai.OpenAI:
    return openai_client(server)


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


# After [DONE], the most of the body read for its end, and for how long: a server that kept sending after it
# (keep-alive comments, blank events) held the turn, and a web thread, for as long as it sent.
DRAIN_MAX_BYTES = 4096
DRAIN_MAX_SECONDS = 1.0


class ChunkStream(openai.Stream[dict[str, Any]]):
    """openai's stream of chat completion chunks, as plain dicts, read to the end of the body.

    ``openai.Stream`` builds a pydantic model for every chunk and stops reading
    at ``[DONE]``; the chunked body's last bytes then stay unread, so httpx drops
    the connection and the next request to the model server connects anew. This
    subclass (openai's ``extract_stream_chunk_type`` documents subclassing
    ``Stream``) keeps openai's SSE decoding and error mapping, yields each chunk
    as ``json.loads`` gives it, and reads the body to its end, which returns the
    connection to the pool. The first token reaches the client about 1 ms
    sooner (docs/benchmarks.md). Every OpenAI-compatible server we know ends the
    body right after ``[DONE]``. One that keeps sending after it is read for at
    most ``DRAIN_MAX_BYTES`` more, for ``DRAIN_MAX_SECONDS``; then the response is
    closed unread, which closes the connection instead of pooling it. One that
    sends nothing more but keeps the body open holds the turn's ``done`` until
    the read timeout (``LLM_TIMEOUT_SECONDS``). Either way the answer, complete
    at ``[DONE]``, stands. ``done`` says whether ``[DONE]`` came.

    ``deadline`` and ``keep_claim`` (set by ``read_stream``) are checked on every read from the network, not every
    chunk: a server that sends only SSE comments, or an event that never ends, sends no chunk at all, and held its
    turn past the deadline for as long as it went on (QA, 2026-12-07).
    """

    deadline: float = math.inf
    keep_claim: Callable[[], None] | None = None

    done = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._decoder = _DecodedUntilDrained(self._decoder, self)

    def cut(self) -> None:
        """Shut the connection to the model server down, from any thread: a read blocked on it (``relayed``)
        returns, and the server sees the connection closed. Closing the socket alone does neither on Linux."""
        network = self.response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __stream__(self) -> Iterator[dict[str, Any]]:
        events = self._iter_events()
        try:
            for sse in events:
                if not sse.data or sse.data.isspace():  # a blank ``data:``, a keep-alive some servers send
                    continue
                if sse.data.startswith("[DONE]"):
                    self.done = True
                    with contextlib.suppress(httpx2.HTTPError, openai.OpenAIError):  # a body left open or cut
                        for _rest in events:  # the end of the body: nothing, in practice
                            pass
                    return
                try:
                    data = json.loads(sse.data)
                except RecursionError as exc:  # nested deeper than the parser goes: JSON, not a chunk
                    raise ValueError("a chunk is nested too deeply") from exc
                if not isinstance(data, dict):
                    raise ValueError("a chunk is not a JSON object")
                if data.get("error"):
                    error = data["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    if not isinstance(message, str) or not message:
                        message = "An error occurred during streaming"
                    raise openai.APIError(
                        message=message,
                        request=self.response.request,
                        body=error,
                    )
                yield data
        finally:
            self.response.close()


class _DecodedUntilDrained:
    """openai's SSE decoder, fed the body's bytes, and after ``[DONE]`` at most ``DRAIN_MAX_BYTES`` more, for at
    most ``DRAIN_MAX_SECONDS``: past that the body is left as it is, unread, and the stream ends.

    A body past ``LLM_MAX_STREAM_BYTES`` (decoded), or one event past ``LLM_MAX_EVENT_BYTES``, raises
    ``AnswerTooLarge``: the decoder holds an event whole until it ends, and one line of 60 MB grew a web process by
    700 MB, one of 30 MB (under the stream's bound) by 166 MB (QA, 2026-12-07). Past the stream's ``deadline``
    it raises ``TurnTooLong``; every ``KEEP_CLAIM_EVERY_SECONDS`` it calls the stream's ``keep_claim``."""

    def __init__(self, decoder: SSEBytesDecoder, stream: ChunkStream) -> None:
        self.decoder = decoder
        self.stream = stream

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[ServerSentEvent]:
        return self.decoder.iter_bytes(self._bounded(iterator))

    def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        return self.decoder.aiter_bytes(iterator)  # openai's async streams; ours is not one

    def _bounded(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        left, deadline = DRAIN_MAX_BYTES, math.inf
        most, most_event = settings.LLM_MAX_STREAM_BYTES, settings.LLM_MAX_EVENT_BYTES
        read = event = 0  # bytes of the body; of the event under way, as far as a blank line ends one
        tail = b""  # the end of the last read, for a blank line cut in two between reads
        stream = self.stream
        keep_at = time.monotonic() + KEEP_CLAIM_EVERY_SECONDS if stream.keep_claim is not None else math.inf
        for chunk in chunks:
            now = time.monotonic()
            if now > stream.deadline:
                raise TurnTooLong
            if now > shutdown.stop_turns_at():
                raise ServerStopping
            if now > keep_at and stream.keep_claim is not None:
                keep_at = now + KEEP_CLAIM_EVERY_SECONDS
                stream.keep_claim()
            read += len(chunk)
            window = tail + chunk
            ended = max(window.rfind(b"\n\n"), window.rfind(b"\r\r"), window.rfind(b"\n\r\n"))
            event = len(window) - ended if ended >= 0 else event + len(chunk)
            tail = window[-2:]
            if read > most or event > most_event:
                raise AnswerTooLarge(most if read > most else most_event)
            if stream.done:
                left -= len(chunk)
                if left < 0 or time.monotonic() > deadline:
                    return
            yield chunk
            if self.stream.done and deadline == math.inf:  # [DONE] was in that chunk
                deadline = time.monotonic() + DRAIN_MAX_SECONDS


def open_stream(
    server: ModelServer,
    model: str,
    messages: list[dict[str, Any]],
    tool_specs: list[dict[str, Any]],
    *,
    deadline: float = math.inf,
    **options: Any,
) -> ChunkStream:
    """Send a streamed chat completion; return the open stream once the server has answered.

    ``tool_specs`` are OpenAI function tools; ``options`` go to the model server
    as they are (temperature, max_tokens, tool_choice...). Raises UpstreamError.
    Near the turn's ``deadline`` (closer than the attempts openai could make take) the request is sent once,
    with the time left as its timeout: openai's retries ran a turn three minutes past it (QA, 2026-12-07).
    Usage is asked for (``_ASK_USAGE``); a server that refuses ``stream_options`` is asked again without it, once,
    and so from then on (``_NO_STREAM_OPTIONS``): its turns failed, every one. Its tokens are then what it
    reports unasked, else 0.
    """
    asks_usage = server.base_url not in _NO_STREAM_OPTIONS
    kwargs: dict[str, Any] = {**(_ASK_USAGE if asks_usage else {}), **options}
    if tool_specs:
        kwargs["tools"] = tool_specs
    hurried = _hurried(deadline)
    try:
        # The undocumented-endpoint form of the client (openai's README): the same request,
        # retries, errors and SSE decoding as chat.completions.create, without re-validating
        # messages we built ourselves, which cost several milliseconds of the first token.
        return _client(server).post(
            "/chat/completions",
            body={"model": model, "messages": messages, "stream": True, **kwargs},
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=ChunkStream,
            **hurried,
        )
    except openai.APIStatusError as exc:
        if asks_usage and _refuses_stream_options(exc):
            _no_stream_options(server)
            return open_stream(server, model, messages, tool_specs, deadline=deadline, **options)
        raise UpstreamError(partial(status_words, exc), status=exc.status_code) from exc
    except (openai.OpenAIError, httpx2.HTTPError, ValueError) as exc:
        if time.monotonic() > deadline:
            raise UpstreamError(too_long_words) from exc
        raise UpstreamError(partial(unreachable_words, exc)) from exc


# Usage in the stream's last chunk (OpenAI's ``include_usage``), which servers that know it send only when asked.
_ASK_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}
# The base URLs of the model servers that refused ``stream_options`` (some vLLM and Azure versions answer a 400
# naming it), in this process: asked without it from then on, not twice each turn. At most
# ``_NO_STREAM_OPTIONS_MOST``, then forgotten together (a server that learnt it is asked again).
_NO_STREAM_OPTIONS: set[str] = set()
_NO_STREAM_OPTIONS_MOST = 256


def _refuses_stream_options(exc: openai.APIStatusError) -> bool:
    """A 400 or 422 whose words (openai's message quotes the body) name ``stream_options``."""
    return exc.status_code in (400, 422) and "stream_options" in exc.message


def _no_stream_options(server: ModelServer) -> None:
    if len(_NO_STREAM_OPTIONS) >= _NO_STREAM_OPTIONS_MOST:
        _NO_STREAM_OPTIONS.clear()
    _NO_STREAM_OPTIONS.add(server.base_url)


def _hurried(deadline: float) -> dict[str, Any]:
    """openai's request options for a request sent with ``deadline`` ahead: none while every attempt openai could
    make (the timeouts and the waits between them) fits before it; else one attempt, in the time left."""
    left = deadline - time.monotonic()
    retries = settings.LLM_MAX_RETRIES
    attempts = (settings.LLM_TIMEOUT_SECONDS + settings.LLM_CONNECT_TIMEOUT_SECONDS) * (1 + retries)
    if left > attempts + retries * max(settings.LLM_MAX_RETRY_AFTER_SECONDS, OPENAI_MAX_BACKOFF_SECONDS):
        return {}
    if left <= 0:
        raise UpstreamError(too_long_words)
    timeout = httpx2.Timeout(min(settings.LLM_TIMEOUT_SECONDS, left),
                             connect=min(settings.LLM_CONNECT_TIMEOUT_SECONDS, left))  # fmt: skip
    return {"options": {"timeout": timeout, "max_retries": 0}}


def read_stream(
    stream: ChunkStream, *, deadline: float = math.inf, keep_claim: Callable[[], None] | None = None
) -> Iterator[Token | Thinking | Reasoning | ModelReply | Waiting]:
    """Tokens as they come (and ``THINKING`` while the model reasons, each piece of its reasoning as ``Reasoning``),
    then the reply as a whole. Closing it cancels the upstream request.

    ``deadline`` (``time.monotonic``): a read from the model server after it ends the reply, as a failure (a
    server that trickles forever held the turn, its web thread and the workspace's place for as long);
    ``keep_claim`` is called every ``KEEP_CLAIM_EVERY_SECONDS`` while it sends. The stream is read in a thread of
    its own (``waits.relayed``): ``WAITING`` each second nothing came, so that a client gone meanwhile is found and
    the request cancelled then, not when the model next sends something.
    """
    reply = _Accumulator(most=settings.CHAT_MAX_REPLY_CHARS)
    stream.deadline, stream.keep_claim = deadline, keep_claim  # checked on every network read (ChunkStream)
    try:
        for chunk in relayed(iter(stream), interrupt=getattr(stream, "cut", lambda: None)):
            if isinstance(chunk, Waiting):
                yield WAITING
                continue
            tokens = reply.feed(chunk)
            if reply.reasoned:  # before the chunk's text, as the model thinks before it answers
                yield Reasoning(reply.reasoned)
                reply.reasoned = ""
            yield from tokens
            if reply.thinking:  # a piece of reasoning came, the first or the first for a while
                reply.thinking = False
                yield THINKING
    except json.JSONDecodeError as exc:
        raise UpstreamError(lambda: _("The model server sent a part of its answer that is not JSON.")) from exc
    except (ImpossibleUsage, TooManyToolCalls, ReplyTooLong, TurnTooLong, AnswerTooLarge, ServerStopping) as exc:
        raise UpstreamError(_past_a_limit_words(exc)) from exc
    except ValueError as exc:  # _Accumulator's: JSON, not a chunk
        raise UpstreamError(
            lambda: _("The model server sent a part of its answer that is not a chat completion chunk.")
        ) from exc
    except openai.APIStatusError as exc:
        raise UpstreamError(partial(status_words, exc)) from exc
    except (openai.APITimeoutError, httpx2.TimeoutException) as exc:  # a hurried request's timeout: the deadline
        raise UpstreamError(too_long_words if time.monotonic() > deadline else partial(unreachable_words, exc)) from exc
    except (openai.APIConnectionError, httpx2.TransportError) as exc:  # their words: "Connection error.", httpx's
        raise UpstreamError(
            lambda: _("The model server's answer broke off: the connection closed before it was complete.")
        ) from exc
    except (openai.OpenAIError, httpx2.HTTPError) as exc:  # an error the server sent in the stream: its words
        said = str(exc)
        raise UpstreamError(lambda: _("The model server's answer broke off: %(error)s") % {"error": said}) from exc
    finally:
        stream.close()  # on a disconnect too: this cancels the upstream request
    yield from reply.end()
    yield _ended(reply, stream)


def _past_a_limit_words(exc: Exception) -> Callable[[], str]:
    """Why a stream that went past one of the limits on a reply failed, in words."""
    if isinstance(exc, ImpossibleUsage):
        count = str(exc)
        return lambda: _("The model server reported an impossible token count (%(count)s).") % {"count": count}
    if isinstance(exc, TooManyToolCalls):
        return lambda: (
            _("The model asked for more than %(most)d tool calls in one reply.") % {"most": MAX_TOOL_CALLS_READ}
        )
    if isinstance(exc, ServerStopping):
        return stopping_words
    if isinstance(exc, ReplyTooLong):
        return lambda: (
            _("The model's answer passed %(most)d characters, the most HydroNet takes; it was stopped there.")
            % {"most": settings.CHAT_MAX_REPLY_CHARS}
        )
    if isinstance(exc, AnswerTooLarge):
        size = exc.limit
        return lambda: (
            _("The model server's answer passed %(size)s; it was stopped there.") % {"size": filesizeformat(size)}
        )
    return too_long_words


def _ended(reply: _Accumulator, stream: ChunkStream) -> ModelReply:
    """The reply of a stream that ended: complete, or why it is not."""
    if not reply.finish and getattr(stream, "done", False) and reply.seen:
        reply.finish = "tool_calls" if reply.calls else "stop"  # [DONE] ends an answer, said or not
    if not reply.finish:
        sent = stream.response.headers.get("content-type", "").partition(";")[0].strip()
        if not reply.seen and sent != "text/event-stream":  # a web page, or a reply that is not streamed
            raise UpstreamError(partial(_not_streamed_words, sent))
        raise UpstreamError(lambda: _("The model server's stream ended before the answer was complete."))
    return reply.result()


def _not_streamed_words(sent: str) -> str:
    return _("The model server did not answer with a stream of chat completion chunks (it sent %(type)s): "
             "check the base URL.") % {"type": sent or _("no content type")}  # fmt: skip


def _too_many_rounds_words(rounds: int) -> str:
    return _("The model still asked for tools after %(rounds)d rounds of tool calls, the most a turn has.") % {
        "rounds": rounds
    }


# A tool call's id is stored with its result (Message.tool_call_id) and sent back with it in later turns.
MAX_TOOL_CALL_ID_CHARS = 100
# The most tokens a model server may report for one side of one call. Larger, negative or not a whole
# number is a broken server: such a count overflowed the ledger's batch and stalled the tenant's flush.
MAX_REPORTED_TOKENS = 10_000_000


class ImpossibleUsage(ValueError):
    """The model server reported a token count no call can have."""


# The most tool calls one reply may ask for. Past CHAT_MAX_TOOL_CALLS_PER_REPLY they are not run, but each is
# still answered, stored and sent back to the model: a reply of a million calls was read into memory whole and
# wrote a million messages. One of more is a broken answer, and nothing of it is run or stored as a call.
MAX_TOOL_CALLS_READ = 1000


class TooManyToolCalls(ValueError):
    """A reply asked for more than ``MAX_TOOL_CALLS_READ`` tool calls."""


class ReplyTooLong(Exception):
    """A reply's text, refusal and tool calls' arguments passed ``CHAT_MAX_REPLY_CHARS`` characters together."""


class TurnTooLong(Exception):
    """A turn ran past its deadline (``CHAT_TURN_MAX_SECONDS`` from its start)."""


class ServerStopping(Exception):
    """The web process was told to stop (a deploy) and its turns' grace is over (``apps.core.shutdown``)."""


# The longest openai waits between two attempts when the server names no wait (its MAX_RETRY_DELAY).
OPENAI_MAX_BACKOFF_SECONDS = 8.0

# How often a turn whose model stream goes on renews its conversation's hold (``CallMeter.keep_claim``, one round
# trip): the hold's ttl is for a worker that died, and an answer streamed for longer let a second turn in.
KEEP_CLAIM_EVERY_SECONDS = 60.0


def stopping_words() -> str:
    return _("HydroNet's server restarted during this answer (an update); it was stopped here. Try again to go on.")


def too_long_words() -> str:
    return _("The answer took longer than %(seconds)d s, the most a turn may take; it was stopped there.") % {
        "seconds": settings.CHAT_TURN_MAX_SECONDS
    }


def _reported_tokens(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    in_range = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS
    if not in_range or value != int(value):  # NaN and infinities are out of range
        raise ImpossibleUsage(f"{name}: {str(value)[:40]}")
    return int(value)


def _refusal_text(refusal: Any) -> str:
    """A delta's refusal: a string, or nothing. Anything else is a chunk of the wrong shape (ValueError)."""
    if not isinstance(refusal, str | None):
        raise ValueError(f"a delta's refusal is not a string: {type(refusal).__name__}")
    return refusal or ""


def _content_text(content: Any) -> str:
    """A delta's content: a string, or OpenAI's list of parts, of which the text parts' text. Anything else is a
    chunk of the wrong shape (ValueError)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ValueError(f"a delta's content is neither a string nor a list of parts: {type(content).__name__}")
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or (part.get("type") == "text" and not isinstance(part.get("text"), str)):
            raise ValueError("a part of a delta's content is not a part, or a text part without text")
        if part.get("type") == "text":
            texts.append(part["text"])
    return "".join(texts)


class _Accumulator:
    """Assembles streamed chunks into one reply: content, refusal, tool calls by index, usage, finish reason.

    Only the first choice (index 0) is read: HydroNet asks for one (``n`` is never sent on), and a server that sends
    more anyway had their texts run together into one answer."""

    def __init__(self, *, most: int) -> None:
        self.most = most  # characters of text, refusal and tool calls' arguments (ReplyTooLong past it)
        self.size = 0
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.held = {False: "", True: ""}  # per kind of text: a high surrogate that ended it, waiting for its low one
        self.calls: dict[int, _Call] = {}
        self.reasoning: list[str] = []  # a reasoning model's thinking before its answer (not shown, not sent back)
        self.reasoned = ""  # the reasoning of the chunk just fed, to pass on (``Reasoning``)
        self.held_reasoning = ""  # as ``held``, for the reasoning
        self.thinking = False  # a piece of reasoning came that is to be said (``Thinking``)
        self.think_at = 0.0  # when a piece of reasoning is said next (time.monotonic)
        self.usage = (0, 0)
        self.finish = ""
        self.seen = False  # any chunk at all
        self.content_is_reasoning = False  # the answer is the reasoning (``end``)

    def feed(self, chunk: dict[str, Any]) -> list[Token]:
        """Take one chunk; return the pieces of text it adds. A chunk of the wrong shape raises ValueError."""
        self.seen = True
        try:
            return self._feed(chunk)
        except (AttributeError, TypeError, OverflowError) as exc:  # OverflowError: an index of int(inf)
            raise ValueError(f"a chunk has the wrong shape: {str(chunk)[:200]}") from exc

    def end(self) -> list[Token]:
        """The stream ended: the text still held back (a high surrogate no low one followed), as U+FFFD; for a
        reply that is only reasoning, the reasoning."""
        tokens = [Token(whole_characters(held), refusal) for refusal, held in self.held.items() if held]
        self.held = {False: "", True: ""}
        if not (tokens or self.content or self.refusal or self.calls) and self.reasoning:
            # A reasoning model that said nothing but its reasoning (cut off while thinking, or a server whose
            # reasoning parser kept the whole answer): that is the answer, rather than an empty one.
            said = whole_characters("".join(self.reasoning)).replace("\x00", "\ufffd")
            self.size -= sum(len(piece) for piece in self.reasoning)  # counted once: now as the answer
            tokens = [Token(said, reasoning=True)]
            self.content_is_reasoning = True
        self._keep(tokens)
        return tokens

    def _text(self, piece: str, refusal: bool) -> list[Token]:
        """``piece`` of the answer, as whole characters. A pair of surrogates may come split across two chunks
        (a server or gateway that re-chunks escaped text): a high one at the end waits for the next text."""
        text = self.held[refusal] + piece
        self.held[refusal] = text[-1] if text and "\ud800" <= text[-1] <= "\udbff" else ""
        # NUL as PostgreSQL stores it (services.storable): the client sees what is stored.
        text = whole_characters(text[: len(text) - len(self.held[refusal])]).replace("\x00", "\ufffd")
        return [Token(text, refusal)] if text else []

    def _reasoning_text(self, piece: str) -> None:
        """``piece`` of the reasoning, as whole characters (as ``_text``), kept and to be passed on."""
        text = self.held_reasoning + piece
        self.held_reasoning = text[-1] if text and "\ud800" <= text[-1] <= "\udbff" else ""
        text = whole_characters(text[: len(text) - len(self.held_reasoning)]).replace("\x00", "\ufffd")
        if text:
            self.reasoning.append(text)
            self.reasoned += text
            self.size += len(text)

    def _keep(self, tokens: list[Token]) -> None:
        for token in tokens:
            self.size += len(token.text)
            (self.refusal if token.refusal else self.content).append(token.text)
        if self.size > self.most:
            raise ReplyTooLong

    def _feed(self, chunk: dict[str, Any]) -> list[Token]:
        tokens: list[Token] = []
        usage = chunk.get("usage")
        if usage:
            self.usage = (_reported_tokens(usage, "prompt_tokens"), _reported_tokens(usage, "completion_tokens"))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            tokens += self._said(delta)
            for part in delta.get("tool_calls") or ():
                call = self.calls.setdefault(self._index(part), _Call())
                if len(self.calls) > MAX_TOOL_CALLS_READ:
                    raise TooManyToolCalls(len(self.calls))
                call_id = part.get("id")
                if not isinstance(call_id, str | None) or len(call_id or "") > MAX_TOOL_CALL_ID_CHARS:
                    raise ValueError(f"a tool call's id is not a string of at most 100 characters: {call_id!r:.60}")
                call.id = whole_characters(call_id) if call_id else call.id
                function = part.get("function")
                if function:
                    name, arguments = function.get("name"), function.get("arguments")
                    if not isinstance(name, str | None) or not isinstance(arguments, str | None):
                        raise ValueError("a tool call's name or arguments are not strings")
                    if name and name != call.name:  # some servers repeat the whole name in every piece
                        call.name += name  # streamed in pieces, as openai's own accumulator joins them
                    call.arguments.append(arguments or "")
                    self.size += len(arguments or "")
            finish = choice.get("finish_reason")
            if not isinstance(finish, str | None):
                raise ValueError(f"a finish_reason is not a string: {finish!r:.60}")
            self.finish = whole_characters(finish) if finish else self.finish  # /v1 sends it on
        self._keep(tokens)
        return tokens

    def _said(self, delta: dict[str, Any]) -> list[Token]:
        """A delta's text, refusal and reasoning: the pieces of text of the first two."""
        tokens: list[Token] = []
        content = _content_text(delta.get("content"))
        if content:
            tokens += self._text(content, refusal=False)
        refusal = _refusal_text(delta.get("refusal"))
        if refusal:
            tokens += self._text(refusal, refusal=True)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # DeepSeek's; vLLM's and OpenRouter's
        if isinstance(reasoning, str):  # not the answer; counted with it, against the reply's limit
            self._reasoning_text(reasoning)
            now = time.monotonic()
            if now >= self.think_at:
                self.thinking, self.think_at = True, now + THINKING_EVERY_SECONDS
        return tokens

    def _index(self, part: dict[str, Any]) -> int:
        """The call a streamed piece belongs to: its ``index``; without one (some servers send parallel calls
        so), a new id starts the next call and a piece without an id continues the last."""
        if part.get("index") is not None:
            return int(part["index"])
        last = max(self.calls, default=0)
        known = self.calls[last].id if last in self.calls else ""
        return last + 1 if part.get("id") and known and part.get("id") != known else last

    def result(self) -> ModelReply:
        return ModelReply(
            content="".join(self.content),
            tool_calls=[_tool_call(call) for _n, call in sorted(self.calls.items())],
            prompt_tokens=self.usage[0],
            completion_tokens=self.usage[1],
            finish_reason=self.finish,
            refusal="".join(self.refusal),
            reasoning="".join(self.reasoning),
            content_is_reasoning=self.content_is_reasoning,
        )


# How deep a tool call's arguments may nest. Deeper ones, which no tool's schema asks for, overflowed the
# recursion of the JSON parser or of what stores and sends them (a 500).
MAX_ARGUMENTS_DEPTH = 64


def _tool_call(call: _Call) -> ToolCall:
    # Joined before they are made whole: a pair of surrogates may come split across two pieces.
    name, raw = whole_characters(call.name), whole_characters("".join(call.arguments))
    try:
        arguments = _json_value(json.loads(raw)) if raw.strip() else {}
    except (ValueError, RecursionError):
        arguments = None
    service, _sep, tool = name.partition(SEPARATOR)
    return ToolCall(
        # Unique: a later turn's call is another call (the index is the server's: any size).
        id=call.id or f"call_{uuid.uuid4().hex}",
        name=name,
        service=service,
        tool=tool or name,
        arguments=arguments if isinstance(arguments, dict) else None,
        raw_arguments=raw,
    )


def _json_value(value: Any, depth: int = 0) -> Any:
    """What ``json.loads`` gave, as JSON can carry it on: text as whole characters (an escaped surrogate is one
    alone too); ValueError for NaN and the infinities (1e999 is one), which ``json.loads`` takes but the
    browser's JSON.parse and PostgreSQL's jsonb refuse, and for nesting deeper than ``MAX_ARGUMENTS_DEPTH``."""
    if isinstance(value, str):
        return whole_characters(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a JSON number: {value}")
    if isinstance(value, dict | list) and depth >= MAX_ARGUMENTS_DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(value, dict):
        return {whole_characters(key): _json_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item, depth + 1) for item in value]
    return value


def _call_outcome(
    call: ToolCall, tool: BoundTool | None, meter: CallMeter, run_tool: ToolRunner
) -> mcp_client.ToolOutcome:
    """What a tool call comes to: the tool's answer (one AI call), or why it could not run."""
    if tool is None:
        unknown = _("Unknown tool %(name)s.") % {"name": repr(call.name[:200])}
        return mcp_client.ToolOutcome(text=unknown, is_error=True, duration_ms=0)
    if call.arguments is None:
        not_object = _("The arguments are not a JSON object: %(arguments)s") % {
            "arguments": repr(call.raw_arguments[:200])
        }
        return mcp_client.ToolOutcome(text=not_object, is_error=True, duration_ms=0)
    ticket = meter.charge("tool")
    try:
        return run_tool(tool, call.arguments)
    finally:
        meter.record(ticket)


def _tool_outcome(
    call: ToolCall, tool: BoundTool | None, meter: CallMeter, run_tool: ToolRunner, recheck: Recheck
) -> Generator[Waiting, None, mcp_client.ToolOutcome]:
    """``_call_outcome`` once ``recheck`` let the turn go on, with ``tool`` as it offers it now (its service as it
    is now: an edited address or headers); not run when it is offered no more. The tool runs in a thread of its
    own (``waits.waited``), ``WAITING`` each second meanwhile: closed before the tool answers (the client went
    away), the MCP call is cancelled (``run_mcp_tool``'s stop). The call is recorded either way: it was at work."""
    if tool is not None:
        name = tool.exposed_name
        tool = next((now for now in recheck().tools if now.exposed_name == name), None)
        if tool is None:
            return _withdrawn(call)
    if tool is None or call.arguments is None:
        return _call_outcome(call, tool, meter, run_tool)
    arguments, chosen = call.arguments, tool

    def work(stop: threading.Event) -> mcp_client.ToolOutcome:
        _running.stop = stop
        try:
            return run_tool(chosen, arguments)
        finally:
            _running.stop = None

    ticket = meter.charge("tool")
    try:
        return (yield from waited(work))
    finally:
        meter.record(ticket)


def _withdrawn(call: ToolCall) -> mcp_client.ToolOutcome:
    """The answer to a call of a tool that was turned off or removed since the turn offered it: not run."""
    text = _("The tool %(name)s was turned off or removed while this reply was being written; it was not run.") % {
        "name": repr(call.name[:200])
    }
    return mcp_client.ToolOutcome(text=text, is_error=True, duration_ms=0)


def _not_run(asked: int, most: int) -> mcp_client.ToolOutcome:
    """The answer to a call past the first ``most`` of a reply that asked for ``asked``: not run, and why."""
    text = ngettext(
        "Not run: the model asked for %(count)d tool calls in one reply; at most %(most)d is run.",
        "Not run: the model asked for %(count)d tool calls in one reply; at most %(most)d are run.",
        most,
    ) % {"count": asked, "most": most}
    return mcp_client.ToolOutcome(text=text, is_error=True, duration_ms=0)


def _truncate(text: str) -> tuple[str, bool]:
    limit = settings.MCP_RESULT_MAX_CHARS
    if len(text) <= limit:
        return text, False
    return text[:limit] + "\n…[truncated]", True


def abandon_round(stream: Any, meter: CallMeter, ticket: Any) -> None:
    """A round whose stream was opened but never read (the client went away first): the upstream request is
    cancelled and the call recorded, as ``metered_round`` does for a client that goes away mid-stream."""
    try:
        stream.close()
    finally:
        meter.record(ticket)


def metered_round(
    stream: Any, meter: CallMeter, ticket: Any, *, deadline: float = math.inf
) -> Iterator[Token | Thinking | Reasoning | ModelReply | Waiting]:
    """``read_stream`` (until ``deadline``, keeping the meter's claim), with the call recorded with its tokens, or
    released if the model server failed (a round stopped at the deadline or for its length too).

    A client that goes away mid-stream leaves the call recorded: the model did the work.
    """
    try:
        for event in read_stream(stream, deadline=deadline, keep_claim=meter.keep_claim):
            if isinstance(event, ModelReply):
                meter.record(ticket, event.tokens)
            yield event
    except UpstreamError:
        meter.release(ticket)
        raise
    finally:
        meter.record(ticket)  # a no-op once recorded or released


def _in_time(deadline: float) -> None:
    """Raise UpstreamError once the turn is past its deadline: no round and no tool call starts after it."""
    if time.monotonic() > deadline:
        raise UpstreamError(too_long_words)
    if time.monotonic() > shutdown.stop_turns_at():
        raise UpstreamError(stopping_words)


def run_turn(
    *,
    server: ModelServer,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[BoundTool],
    max_rounds: int,
    max_calls_per_reply: int,
    meter: CallMeter,
    first_stream: Any = None,
    first_ticket: Any = None,
    options: Mapping[str, Any] | None = None,
    run_tool: ToolRunner = run_mcp_tool,
    deadline: float = math.inf,
    recheck: Recheck | None = None,
) -> Generator[Event, None, None]:
    """Ask the model; while it asks for tools (at most ``max_rounds`` times) run them and ask again.

    Yields tokens, each model reply, each tool call and each tool result, in
    order. Raises UpstreamError when the model server fails. A tool that fails
    (unreachable, unknown, bad arguments, an error result) is reported to the
    model as that tool's result, so the model can explain or recover. Of the
    calls one reply asks for, the first ``max_calls_per_reply`` run, one after
    another; each one after them is answered "not run" (an error result, not
    charged), as the model server needs an answer to every call of the reply.
    ``first_stream`` is the first round's request when the caller already sent
    it (``open_stream`` with all ``tools``, charged as ``first_ticket``), to
    overlap it with its own work. ``options`` (temperature, max_tokens...) go with
    every round's request, as they went with the first. No round and no tool call starts after
    ``deadline`` (``time.monotonic``), and a model stream still going then is stopped: UpstreamError.

    Every model round and every tool invocation is one AI call: ``meter``
    charges it before it starts (a quota that runs out mid-turn raises
    QuotaExceeded here), records it with its tokens once it ended, and releases
    it if the model server failed or the request could not be sent. A turn the
    client abandons records the call in progress: the model did the work.

    ``recheck`` runs before each call after the first (each tool's, each later round's): what it raises ends the
    turn there (the member or key lost access, the workspace was suspended, the model was taken off the list);
    the server and tools it gives are the ones used from then on, so a tool turned off since the model asked
    for it is answered "not run", and one edited runs at its new address (docs/architecture.md).
    """
    by_name = {tool.exposed_name: tool for tool in tools}
    recheck = recheck or (lambda: Current(server=server, tools=tools))
    rounds = 0
    while True:
        if rounds == 0 and first_stream is not None:
            stream, ticket = first_stream, first_ticket
        else:
            _in_time(deadline)
            current = recheck()
            server, tools = current.server, current.tools
            by_name = {tool.exposed_name: tool for tool in tools}
            offered = tools if rounds < max_rounds else []
            ticket = meter.charge("model")
            try:
                specs = [tool.openai_spec() for tool in offered]
                stream = open_stream(server, model, messages, specs, deadline=deadline, **(options or {}))
            except BaseException:  # the model server failed, or anything else did: no answer to charge for
                meter.release(ticket)
                raise
        reply: ModelReply | None = None
        for event in metered_round(stream, meter, ticket, deadline=deadline):
            if isinstance(event, ModelReply):
                reply = event
            yield event
        assert reply is not None
        if not reply.tool_calls:
            return
        if rounds >= max_rounds or not tools:  # no tool was offered this round: none runs, the turn ends here
            if rounds == 0:
                raise UpstreamError(lambda: _("The model asked for a tool, though none was offered."))
            raise UpstreamError(partial(_too_many_rounds_words, max_rounds))
        messages.append(
            {
                "role": "assistant",
                "content": reply.content or None,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
                    for c in reply.tool_calls
                ],
            }
        )
        asked_for = len(reply.tool_calls)
        for n, asked in enumerate(reply.tool_calls):
            tool = by_name.get(asked.name)
            # Named by its service and the server's own name, which the exposed name's halves may not be.
            call = asked if tool is None else replace(asked, service=tool.service.slug, tool=tool.tool_name)
            _in_time(deadline)
            yield call
            if n < max_calls_per_reply:
                outcome = yield from _tool_outcome(call, tool, meter, run_tool, recheck)
            else:
                outcome = _not_run(asked_for, max_calls_per_reply)
            text, truncated = _truncate(outcome.text)
            yield ToolResult(
                call=call, result=text, is_error=outcome.is_error, duration_ms=outcome.duration_ms, truncated=truncated
            )
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
        rounds += 1
