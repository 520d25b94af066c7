"""The engine's reading of model streams: plain chunks, kept-alive connections, and malformed shapes."""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from unittest import mock

import httpx2
import openai
import pytest

from apps.chat import engine
from apps.llm.client import model_server, unreachable_words
from tests.processes import canned_server, http_server, sse_body


def _reply(text: str, tools: list[dict[str, Any]] | None = None) -> engine.ModelReply:
    server = model_server(None)
    stream = engine.open_stream(server, server.default_model, [{"role": "user", "content": text}], tools or [])
    *tokens, reply = list(engine.read_stream(stream))
    assert all(isinstance(token, engine.Token) for token in tokens)
    assert isinstance(reply, engine.ModelReply)
    assert reply.content == "".join(token.text for token in tokens)  # type: ignore[union-attr]
    return reply


def test_a_stream_read_to_its_end_leaves_the_connection_for_the_next(monkeypatch: Any) -> None:
    """openai.Stream stops at [DONE] and drops the connection; ours reads the body's end and keeps it."""
    engine._cached_client.cache_clear()  # a client of its own, with no connection yet
    opened: list[Any] = []
    create_connection = socket.create_connection

    def counting(*args: Any, **kwargs: Any) -> socket.socket:
        opened.append(args[0])
        return create_connection(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    replies = [_reply("hello"), _reply("hello again"), _reply("and once more")]
    assert all(reply.finish_reason == "stop" and reply.completion_tokens > 0 for reply in replies)
    assert len(opened) == 1, opened


def test_usage_and_tool_calls_come_from_the_chunks() -> None:
    reply = _reply("hello")
    assert reply.prompt_tokens > 0
    assert reply.completion_tokens > 0
    assert "offline demo model" in reply.content
    levels = {
        "type": "function",
        "function": {
            "name": "hydrology__get_water_levels",
            "description": "Water levels of a station",
            "parameters": {"type": "object", "properties": {"station": {"type": "string"}}},
        },
    }
    asked = _reply("站点 S001 最近的水位是多少?", tools=[levels])
    assert asked.finish_reason == "tool_calls"
    assert [(call.name, call.service, call.tool) for call in asked.tool_calls] == [
        ("hydrology__get_water_levels", "hydrology", "get_water_levels")
    ]
    assert asked.tool_calls[0].arguments is not None
    assert asked.tool_calls[0].arguments["station"] == "S001"
    assert asked.tool_calls[0].id


@pytest.mark.parametrize(
    "chunk",
    [
        ["not", "an", "object"],
        {"choices": "not a list of choices"},
        {"choices": [{"delta": "not an object"}]},
        {"choices": [{"delta": {"tool_calls": [{"index": "first"}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": float("inf")}]}}]},
        {"choices": [{"delta": {"content": 5}}]},
        {"choices": [{"delta": {"content": {"type": "text", "text": "Hi"}}}]},
        {"choices": [{"delta": {"content": ["Hi"]}}]},
        {"choices": [{"delta": {"content": [{"type": "text", "text": 5}]}}]},
        {"choices": [{"delta": {}, "finish_reason": {"reason": "stop"}}]},
    ],
)
def test_a_chunk_of_the_wrong_shape_is_a_broken_answer(chunk: Any) -> None:
    """Malformed chunks end the turn as an UpstreamError (an ``error`` event), never a crash."""

    class Stream:
        def __iter__(self) -> Any:
            yield {"choices": [{"delta": {"content": "Hello"}}]}
            yield chunk

        def close(self) -> None:
            self.closed = True

    stream = Stream()
    events = engine.read_stream(stream)  # type: ignore[arg-type]
    assert next(events) == engine.Token("Hello")
    with pytest.raises(engine.UpstreamError, match="not a chat completion chunk"):
        next(events)
    assert stream.closed


@pytest.mark.parametrize(
    ("usage", "says"),
    [
        ({"prompt_tokens": 2**62}, "prompt_tokens: 4611686018427387904"),
        ({"prompt_tokens": 5, "completion_tokens": -1}, "completion_tokens: -1"),
        ({"prompt_tokens": 10_000_001}, "prompt_tokens: 10000001"),
        ({"prompt_tokens": 1.5}, "prompt_tokens: 1.5"),
        ({"prompt_tokens": float("inf")}, "prompt_tokens: inf"),
        ({"prompt_tokens": float("nan")}, "prompt_tokens: nan"),
        ({"prompt_tokens": "many"}, "prompt_tokens: many"),
        ({"completion_tokens": True}, "completion_tokens: True"),
    ],
)
def test_an_impossible_token_count_is_a_broken_answer(usage: dict[str, Any], says: str) -> None:
    class Stream:
        def __iter__(self) -> Any:
            yield {"choices": [{"delta": {"content": "Hello"}, "finish_reason": "stop"}]}
            yield {"choices": [], "usage": usage}

        def close(self) -> None:
            pass

    events = engine.read_stream(Stream())  # type: ignore[arg-type]
    assert next(events) == engine.Token("Hello")
    with pytest.raises(engine.UpstreamError) as failed:
        next(events)
    assert str(failed.value) == f"The model server reported an impossible token count ({says})."


def test_reported_tokens_up_to_the_limit_are_taken() -> None:
    class Stream:
        def __iter__(self) -> Any:
            yield {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}
            yield {"choices": [], "usage": {"prompt_tokens": engine.MAX_REPORTED_TOKENS, "completion_tokens": 2.0}}

        def close(self) -> None:
            pass

    reply = list(engine.read_stream(Stream()))[-1]  # type: ignore[arg-type]
    assert isinstance(reply, engine.ModelReply)
    assert (reply.prompt_tokens, reply.completion_tokens) == (engine.MAX_REPORTED_TOKENS, 2)


def test_an_error_inside_the_stream_is_an_upstream_error() -> None:
    """A model server whose stream reports an error after the first piece of text."""
    body = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
        b'data: {"error": {"message": "the model fell over", "type": "server_error"}}\n\n'
    )
    with canned_server(body, content_type="text/event-stream") as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        events = engine.read_stream(engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], []))
        assert next(events) == engine.Token("Hel")
        with pytest.raises(engine.UpstreamError, match="the model fell over"):
            next(events)


@pytest.mark.parametrize(
    ("status", "content_type", "body", "says"),
    [
        (500, "text/html", b"<h1>Internal Server Error</h1>", "The model server answered 500."),
        (500, "application/json", b'{"error": {"message": "no GPUs"}}', "The model server answered 500: no GPUs"),
        (307, "text/html", b"", "The model server answered 307, a redirect, which HydroNet does not follow"),
        (200, "text/html", b"<html>Welcome</html>", "did not answer with a stream of chat completion chunks (it sent "
                                                    "text/html): check the base URL."),
        (200, "application/json", b'{"choices": []}', "(it sent application/json)"),
        (200, "text/event-stream", b"data: {not json\n\n", "a part of its answer that is not JSON."),
        (200, "text/event-stream", b'data: {"choices": 5}\n\n', "that is not a chat completion chunk."),
        # int(inf) raised OverflowError, and nesting past the parser's depth RecursionError: a 500, or a
        # stream cut off, and /v1 charged the call.
        (200, "text/event-stream", b'data: {"choices": [{"delta": {"tool_calls": [{"index": Infinity}]}}]}\n\n',
         "that is not a chat completion chunk."),
        (200, "text/event-stream", b'data: {"choices": [{"delta": {"tool_calls": [{"index": 1e400}]}}]}\n\n',
         "that is not a chat completion chunk."),
        (200, "text/event-stream", b"data: " + b"[" * 2000 + b"]" * 2000 + b"\n\n",
         "that is not a chat completion chunk."),
        (200, "text/event-stream", b'data: {"choices": []}\n\n', "stream ended before the answer was complete."),
    ],
)  # fmt: skip
def test_what_a_model_server_got_wrong_is_said_in_words(status: int, content_type: str, body: bytes, says: str) -> None:
    """Not openai's "Error code: 500 - …" nor the JSON parser's words: what the server did, and what to check."""
    with canned_server(body, status=status, content_type=content_type) as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        with pytest.raises(engine.UpstreamError) as failed:
            list(engine.read_stream(engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], [])))
    assert says in str(failed.value)
    assert "Error code" not in str(failed.value)


@pytest.mark.parametrize(
    ("wait", "attempts"),
    [({"Retry-After": "100"}, 1), ({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, 1), ({"retry-after-ms": "50"}, 3),
     ({"Retry-After": "soon"}, 3)],
)  # fmt: skip
def test_a_model_server_asking_for_a_long_wait_is_not_retried(
    settings: Any, wait: dict[str, str], attempts: int
) -> None:
    """openai waited up to two minutes before each attempt, and the turn with it: 200 s without a byte."""
    settings.LLM_MAX_RETRIES = 2
    heard: list[dict[str, str]] = []
    answer = b'{"error": {"message": "slow down"}}'
    with canned_server(answer, status=429, content_type="application/json", headers=wait, heard=heard) as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        started = time.monotonic()
        with pytest.raises(engine.UpstreamError) as failed:
            engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], [])
    assert len(heard) == attempts
    assert time.monotonic() - started < 5
    assert str(failed.value) == "The model server answered 429: slow down"


class _Pinging(BaseHTTPRequestHandler):
    """A model server that answers one token, then only what makes no chunk: an SSE comment (or, with ``?event``
    in the path, a data line of an event that never ends) every 0.1 s, for up to 10 s."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n')
        endless = "event" in self.path
        with contextlib.suppress(OSError):
            for _ in range(100):
                self.wfile.write(b"data: x\n" if endless else b": ping\n\n")
                self.wfile.flush()
                time.sleep(0.1)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("path", ["/v1", "/event/v1"], ids=["comments", "endless-event"])
def test_a_server_that_sends_no_chunk_is_stopped_at_the_deadline_and_keeps_the_claim(path: str) -> None:
    """The deadline and the claim were looked at only when a chunk came: a server sending only comments, or one
    event that never ends, held a turn (and its web thread, and its workspace's place) for as long as it went on,
    and its conversation's hold lapsed under it."""
    kept: list[float] = []
    with http_server(_Pinging) as root:
        server = engine.ModelServer(base_url=f"{root}{path}", api_key="k", models=("m",), tenant_supplied=False)
        started = time.monotonic()
        with mock.patch.object(engine, "KEEP_CLAIM_EVERY_SECONDS", 0.3):
            stream = engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], [])
            events = engine.read_stream(stream, deadline=started + 1.5, keep_claim=lambda: kept.append(1))
            assert next(events) == engine.Token("Hi")
            with pytest.raises(engine.UpstreamError) as failed:
                list(events)  # WAITING each second nothing came (apps.chat.waits), then the failure
    assert 1.4 < time.monotonic() - started < 3
    assert str(failed.value).startswith("The answer took longer than")
    assert len(kept) >= 3


def test_one_event_past_its_most_bytes_is_a_failure_though_the_stream_is_not(settings: Any) -> None:
    """One event of 30 MB, under the stream's 32 MiB, grew a web process by 166 MB, held whole by the decoder."""
    settings.LLM_MAX_EVENT_BYTES = 2048
    small = [{"choices": [{"index": 0, "delta": {"content": "word "}}]}] * 100  # 6 kB in all, in small events
    # Larger than a network read (httpcore's 64 KiB): within one read, the bytes after its last blank line count.
    big = {"choices": [{"index": 0, "delta": {"content": "y" * 200_000}}]}
    for chunks, fails in ((small, False), ([*small[:3], big], True)):
        with canned_server(sse_body(*chunks), content_type="text/event-stream") as root:
            server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
            events = engine.read_stream(engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], []))
            if fails:
                with pytest.raises(engine.UpstreamError, match=r"answer passed 2\.0\xa0KB"):
                    list(events)
            else:
                assert list(events)[-1].content == "word " * 100  # type: ignore[union-attr]


@pytest.mark.parametrize(("left", "attempts"), [(None, 3), (5.0, 1)])
def test_near_the_deadline_a_request_is_sent_once(settings: Any, left: float | None, attempts: int) -> None:
    """openai's retries (each up to LLM_TIMEOUT_SECONDS, then a wait) ran a turn three minutes past its deadline."""
    settings.LLM_MAX_RETRIES = 2
    heard: list[dict[str, str]] = []
    with canned_server(b"{}", status=500, content_type="application/json", heard=heard) as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        deadline = math.inf if left is None else time.monotonic() + left
        with pytest.raises(engine.UpstreamError, match="answered 500"):
            engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], [], deadline=deadline)
    assert len(heard) == attempts


def test_a_model_server_that_does_not_answer_in_time_is_said_so(settings: Any) -> None:
    settings.LLM_TIMEOUT_SECONDS = 7
    request = httpx2.Request("POST", "http://model.example/v1/chat/completions")
    assert unreachable_words(openai.APITimeoutError(request)) == "The model server did not answer within 7 s."
    assert unreachable_words(openai.APIConnectionError(request=request)).startswith("The model server could not be")


class Chunks:
    """A model stream of the given chunks, as ``open_stream`` returns them."""

    def __init__(self, *chunks: dict[str, Any]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        yield from self.chunks

    def close(self) -> None:
        pass


def _calls(*parts: dict[str, Any]) -> engine.ModelReply:
    chunks = [{"choices": [{"delta": {"tool_calls": [part]}}]} for part in parts]
    *_, reply = engine.read_stream(Chunks(*chunks, {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}))  # type: ignore[arg-type]
    assert isinstance(reply, engine.ModelReply)
    return reply


def test_a_tool_call_streamed_in_pieces_is_joined() -> None:
    """The name in three pieces became "_stations", the last piece, an unknown tool."""
    reply = _calls(
        {"index": 0, "id": "call_1", "function": {"name": "hydro", "arguments": ""}},
        {"index": 0, "function": {"name": "logy__list", "arguments": '{"a"'}},
        {"index": 0, "function": {"name": "_stations", "arguments": ": 1}"}},
    )
    assert [(c.id, c.name, c.service, c.tool, c.arguments) for c in reply.tool_calls] == [
        ("call_1", "hydrology__list_stations", "hydrology", "list_stations", {"a": 1})
    ]


def test_calls_sent_without_an_id_get_ids_no_other_call_has() -> None:
    """``call_<index>`` alone repeated in every round and turn: a later call took an earlier one's result."""
    first = _calls({"index": 0, "function": {"name": "h__list_stations", "arguments": "{}"}},
                   {"index": 1, "function": {"name": "h__list_stations", "arguments": "{}"}})  # fmt: skip
    again = _calls({"index": 10**96, "function": {"name": "h__list_stations", "arguments": "{}"}})  # 97 digits
    ids = [c.id for c in first.tool_calls + again.tool_calls]
    assert len(set(ids)) == 3
    assert all(i.startswith("call_") and len(i) <= engine.MAX_TOOL_CALL_ID_CHARS for i in ids)


def test_parallel_calls_without_an_index_stay_apart() -> None:
    """Without ``index`` two calls merged into one, the first lost and the arguments '{}{"station": "S001"}'."""
    reply = _calls(
        {"id": "call_1", "function": {"name": "h__list_stations", "arguments": "{}"}},
        {"id": "call_2", "function": {"name": "h__get_water_levels", "arguments": '{"station"'}},
        {"function": {"arguments": ': "S001"}'}},
    )
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_1", "h__list_stations", {}), ("call_2", "h__get_water_levels", {"station": "S001"}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "part",
    [
        {"index": 0, "id": "x" * 101, "function": {"name": "h__t", "arguments": "{}"}},
        {"index": 0, "id": 5, "function": {"name": "h__t", "arguments": "{}"}},
        {"index": 0, "id": "c", "function": {"name": 5, "arguments": "{}"}},
        {"index": 0, "id": "c", "function": {"name": "h__t", "arguments": {"a": 1}}},
    ],
)
def test_a_tool_call_of_the_wrong_types_is_a_broken_answer(part: dict[str, Any]) -> None:
    """A name that is not a string or arguments given as an object crashed the turn (a 500); an id longer
    than its column failed when the result was stored (a 500, the turn cut off)."""
    with pytest.raises(engine.UpstreamError, match="not a chat completion chunk"):
        _calls(part)


class Meter:
    def __init__(self) -> None:
        self.charged: list[str] = []

    def charge(self, kind: str) -> str:
        self.charged.append(kind)
        return kind

    def record(self, ticket: Any, tokens: int = 0) -> None:
        pass

    def release(self, ticket: Any) -> None:
        pass

    def keep_claim(self) -> None:
        pass


def _asks_for_a_tool(*args: Any, **kwargs: Any) -> Chunks:
    part = {"index": 0, "id": "call_1", "function": {"name": "h__list_stations", "arguments": "{}"}}
    return Chunks({"choices": [{"delta": {"tool_calls": [part]}, "finish_reason": "tool_calls"}]})


@pytest.mark.parametrize(("tools", "says"), [(1, "after 2 rounds of tool calls"), (0, "though none was offered")])
def test_a_model_that_keeps_asking_for_tools_is_stopped(monkeypatch: Any, tools: int, says: str) -> None:
    """The last round offered no tools but still ran what the model asked for: a model that never stopped
    calling made 4,645 rounds in one turn, each one charged."""
    monkeypatch.setattr(engine, "open_stream", _asks_for_a_tool)
    service = engine.McpService(name="h")
    bound = [engine.BoundTool("h__list_stations", service, "list_stations", "", {})][:tools]
    ran: list[str] = []

    def run_tool(tool: engine.BoundTool, arguments: dict[str, Any]) -> Any:
        ran.append(tool.tool_name)
        return engine.mcp_client.ToolOutcome(text="S001", is_error=False, duration_ms=1)

    meter = Meter()
    turn = engine.run_turn(server=None, model="m", messages=[], tools=bound, max_rounds=2, meter=meter,  # type: ignore[arg-type]
                           max_calls_per_reply=16, run_tool=run_tool)  # fmt: skip
    events: list[Any] = []
    with pytest.raises(engine.UpstreamError, match=says):
        events.extend(turn)
    assert ran == ["list_stations"] * 2 * tools  # two rounds of tools, then none
    assert meter.charged == (["model", "tool", "model", "tool", "model"] if tools else ["model"])


def test_of_one_replys_calls_the_first_run_and_the_others_are_answered_not_run(monkeypatch: Any) -> None:
    parts = [{"index": n, "id": f"call_{n}", "function": {"name": "h__list_stations", "arguments": "{}"}}
             for n in range(3)]  # fmt: skip
    replies = iter([Chunks({"choices": [{"delta": {"tool_calls": parts}, "finish_reason": "tool_calls"}]}),
                    Chunks({"choices": [{"delta": {"content": "Done."}, "finish_reason": "stop"}]})])  # fmt: skip
    monkeypatch.setattr(engine, "open_stream", lambda *args, **kwargs: next(replies))
    bound = [engine.BoundTool("h__list_stations", engine.McpService(name="h"), "list_stations", "", {})]
    ran: list[dict[str, Any]] = []

    def run_tool(tool: engine.BoundTool, arguments: dict[str, Any]) -> Any:
        ran.append(arguments)
        return engine.mcp_client.ToolOutcome(text="S001", is_error=False, duration_ms=1)

    meter, messages = Meter(), [{"role": "user", "content": "Stations?"}]
    events = list(engine.run_turn(server=None, model="m", messages=messages, tools=bound, max_rounds=2,  # type: ignore[arg-type]
                                  max_calls_per_reply=1, meter=meter, run_tool=run_tool))  # fmt: skip
    results = [event for event in events if isinstance(event, engine.ToolResult)]
    not_run = "Not run: the model asked for 3 tool calls in one reply; at most 1 is run."
    assert [(r.call.id, r.result, r.is_error) for r in results] == [
        ("call_0", "S001", False), ("call_1", not_run, True), ("call_2", not_run, True),
    ]  # fmt: skip
    assert len(ran) == 1
    assert meter.charged == ["model", "tool", "model"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["call_0", "call_1", "call_2"]


def test_a_reply_of_more_tool_calls_than_are_read_is_a_broken_answer() -> None:
    """Calls past CHAT_MAX_TOOL_CALLS_PER_REPLY are not run but are answered and stored, one message each: a reply
    of a million was read whole and wrote a million messages."""
    part = {"function": {"name": "h__list_stations", "arguments": "{}"}}
    most = [{"index": n, **part} for n in range(engine.MAX_TOOL_CALLS_READ)]
    assert len(_calls(*most).tool_calls) == 1000
    with pytest.raises(engine.UpstreamError) as refused:
        _calls(*most, {"index": 10**6, **part})
    assert str(refused.value) == "The model asked for more than 1000 tool calls in one reply."


def test_done_ends_an_answer_that_named_no_finish_reason() -> None:
    """Content, then ``[DONE]``, no ``finish_reason``: the answer was stored as failed ("ended before the
    answer was complete")."""
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "S001: 165.7 m"}}]}\n\ndata: [DONE]\n\n'
    with canned_server(body, content_type="text/event-stream") as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        *_, reply = engine.read_stream(engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], []))
    assert isinstance(reply, engine.ModelReply)
    assert (reply.content, reply.finish_reason) == ("S001: 165.7 m", "stop")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextlib.contextmanager
def _answer_then(after_done: Callable[[socket.socket], None]) -> Iterator[tuple[engine.ModelServer, threading.Thread]]:
    """A model server on a raw socket that streams "Hi" and ``[DONE]`` in a chunked body, then leaves the
    connection to ``after_done`` (the body's last chunk never comes): the server, and the thread serving it."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n'

    def serve() -> None:
        conn, _address = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(_chunk(answer) + _chunk(b"data: [DONE]\n\n"))
            after_done(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        yield engine.ModelServer(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", models=("m",),
                                 tenant_supplied=False), thread  # fmt: skip
    finally:
        listener.close()


def _read_hi(server: engine.ModelServer) -> engine.ModelReply:
    *_, reply = engine.read_stream(engine.open_stream(server, "m", [{"role": "user", "content": "hi"}], []))
    assert isinstance(reply, engine.ModelReply)
    return reply


def test_an_answer_complete_at_done_stands_when_the_server_keeps_the_body_open(settings: Any) -> None:
    """After ``[DONE]`` the body's end is read so that the connection can be used again; a server that kept
    it open made the read time out, and the complete answer was stored as failed."""
    settings.LLM_TIMEOUT_SECONDS = 1
    settings.LLM_MAX_RETRIES = 0
    with _answer_then(lambda _conn: time.sleep(3)) as (server, _thread):  # and never the last chunk
        reply = _read_hi(server)
    assert (reply.content, reply.finish_reason) == ("Hi", "stop")


def test_content_sent_as_parts_is_their_text() -> None:
    """OpenAI's list of parts showed as a Python repr in the answer ("[{'type': 'text', ...}]")."""
    parts = [{"type": "text", "text": "Hi"}, {"type": "refusal", "refusal": "no"}, {"type": "text", "text": " there"}]
    *tokens, reply = engine.read_stream(Chunks({"choices": [{"delta": {"content": parts}, "finish_reason": "stop"}]}))  # type: ignore[arg-type]
    assert tokens == [engine.Token("Hi there")]
    assert isinstance(reply, engine.ModelReply)
    assert reply.content == "Hi there"


def test_surrogates_alone_are_replaced_and_a_pair_split_across_chunks_is_joined() -> None:
    """``json.loads`` keeps "\\ud800" as a lone surrogate, which no UTF-8 encoder takes: the token event, the stored
    reply and /v1's chunks failed (a 500, a stream cut off). A server that re-chunks may split a pair."""
    call = {"index": 0, "id": "c\ud800", "function": {"name": "h__t\ud83d", "arguments": '{"s": "\ud83d'}}
    more = {"index": 0, "function": {"name": "\ude00", "arguments": '\ude00", "t": "\ud800", "u": "\\udc00"}'}}
    *tokens, reply = engine.read_stream(
        Chunks(
            {"choices": [{"delta": {"content": "a\ud83d"}}]},
            {"choices": [{"delta": {"content": "\ude00b\udc00c\ud800"}}]},  # the pair joined; a low one alone
            {"choices": [{"delta": {"content": "d"}}]},  # a high one, then no low one
            {"choices": [{"delta": {"content": "\udbff", "tool_calls": [call]}}]},
            {"choices": [{"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}]},
        )  # type: ignore[arg-type]
    )  # the stream ends on a high one
    assert [token.text for token in tokens] == ["a", "\U0001f600b\ufffdc", "\ufffdd", "\ufffd"]  # type: ignore[union-attr]
    assert isinstance(reply, engine.ModelReply)
    assert reply.content == "a\U0001f600b\ufffdc\ufffdd\ufffd"
    [asked] = reply.tool_calls
    assert (asked.id, asked.name, asked.tool) == ("c\ufffd", "h__t\U0001f600", "t\U0001f600")
    assert asked.raw_arguments == '{"s": "\U0001f600", "t": "\ufffd", "u": "\\udc00"}'
    assert asked.arguments == {"s": "\U0001f600", "t": "\ufffd", "u": "\ufffd"}  # an escaped one too


@pytest.mark.parametrize(
    "arguments",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": [-Infinity]}', '{"a": 1e999}', '{"a": ' + "[" * 1000 + "]" * 1000 + "}",
     '{"a": ' + "[" * 2000 + "]" * 2000 + "}"],
)  # fmt: skip
def test_arguments_json_cannot_carry_are_not_arguments(arguments: str) -> None:
    """``json.loads`` takes NaN and infinities (1e999 is one): the ``tool_call`` event carried a NaN the browser's
    JSON.parse refuses, and storing the tool message failed ("Token NaN is invalid"), a 500. Nesting deep enough
    raised RecursionError (a 500) in the parser or in what stores and sends them."""
    [asked] = _calls({"index": 0, "id": "c", "function": {"name": "h__t", "arguments": arguments}}).tool_calls
    assert (asked.arguments, asked.raw_arguments) == (None, arguments)  # the tool says so, as for '[1]'


@pytest.mark.parametrize("after", [b": keep-alive\n\n", b"data: \n\n", b"\n"])
def test_a_server_that_keeps_sending_after_done_is_left(settings: Any, after: bytes) -> None:
    """Keep-alive comments or blank events after ``[DONE]`` kept the read of the body's end going for as long as
    they came: the turn's ``done`` never came, and a web thread was held. The connection is closed instead."""
    settings.LLM_TIMEOUT_SECONDS = 2
    settings.LLM_MAX_RETRIES = 0

    def keep_sending(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client closed the connection
            for _n in range(400):  # 8 s
                conn.sendall(_chunk(after))
                time.sleep(0.02)

    with _answer_then(keep_sending) as (server, thread):
        started = time.monotonic()
        reply = _read_hi(server)
        assert time.monotonic() - started < 2.5
    assert (reply.content, reply.finish_reason) == ("Hi", "stop")
    thread.join(5)
    assert not thread.is_alive()  # the connection was closed, not kept for the next request
