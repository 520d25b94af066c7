"""What real OpenAI-compatible model servers (DeepSeek, Qwen on vLLM, Ollama, OpenRouter, Azure-style gateways)
send that OpenAI's own does not, over HTTP on loopback: through the engine, the chat API and /v1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.chat import engine
from apps.chat.models import Message
from apps.usage.models import UsageEvent
from tests.chat.conftest import member_client
from tests.conftest import TenantFixture, api_key_secret, bearer, jwt_pair
from tests.processes import canned_server, sse_body

HI = {"role": "user", "content": "hi"}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **more: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
            **more}  # fmt: skip


def read(body: bytes) -> list[engine.Token | engine.Thinking | engine.Reasoning | engine.ModelReply | engine.Waiting]:
    with canned_server(body, content_type="text/event-stream") as root:
        server = engine.ModelServer(base_url=f"{root}/v1", api_key="k", models=("m",), tenant_supplied=False)
        return list(engine.read_stream(engine.open_stream(server, "m", [HI], [])))


def reply_of(body: bytes) -> engine.ModelReply:
    *_, reply = read(body)
    assert isinstance(reply, engine.ModelReply)
    return reply


HI_CHUNK = json.dumps(chunk({"content": "Hi"}, "stop")).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"data:\n\n" + sse_body(chunk({"content": "Hi"}, "stop")),  # a blank data field, a keep-alive
        b"data: \n\n" + sse_body(chunk({"content": "Hi"}, "stop")),
        b": OPENROUTER PROCESSING\r\n\r\n: ping\r\n\r\nevent: message\r\ndata: " + HI_CHUNK
        + b"\r\n\r\ndata: [DONE]\r\n\r\n",
        b'event: ping\ndata: {"type": "ping"}\n\n' + sse_body(chunk({"content": "Hi"}, "stop")),
        b"data: " + HI_CHUNK + b"\n\n",  # no [DONE]: the body ends after the finish_reason
    ],
    ids=["blank-data", "blank-data-space", "comments-crlf-event", "ping-event", "no-done"],
)  # fmt: skip
def test_keep_alives_line_endings_and_an_end_without_done_are_read_as_the_answer(body: bytes) -> None:
    """A blank ``data:`` event was parsed as JSON: the whole turn failed ("a part of its answer that is not JSON")."""
    reply = reply_of(body)
    assert (reply.content, reply.finish_reason) == ("Hi", "stop")


def test_a_tool_calls_name_repeated_in_every_piece_is_its_name() -> None:
    """Some servers send the whole name with every piece of the arguments: it was joined into
    ``h__fh__fh__f``, an unknown tool."""
    reply = reply_of(sse_body(
        chunk({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "h__f",
                                                                                     "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "h__f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "h__f", "arguments": "1}"}}]}, "tool_calls"),
    ))  # fmt: skip
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("h__f", {"x": 1})]


def test_parallel_calls_interleaved_from_index_1_stay_apart() -> None:
    reply = reply_of(sse_body(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 1, "id": "a", "function": {"name": "h__f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 2, "id": "b", "function": {"name": "h__g", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 2, "function": {"arguments": '{"y": 2}'}}]}),
        chunk({}, "tool_calls"),
    ))  # fmt: skip
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [("a", "h__f", {}), ("b", "h__g", {"y": 2})]


REASONING_THEN_ANSWER = sse_body(
    chunk({"role": "assistant", "content": None, "reasoning_content": "secret-thought "}),
    chunk({"reasoning": "more thought"}),
    chunk({"content": "S001: 165.7 m"}),
    chunk({}, "stop"),
)
ONLY_REASONING = sse_body(chunk({"reasoning_content": "Let me think "}), chunk({"reasoning_content": "…"}, "length"))


def test_reasoning_is_not_the_answer_but_an_answer_of_only_reasoning_is_not_empty() -> None:
    """DeepSeek-R1 and Qwen3 stream their thinking as ``reasoning_content`` (or ``reasoning``) before the answer;
    a reply cut off while thinking was stored as an empty answer. Each piece of the reasoning comes as it is read
    (``Reasoning``, for /v1), before the chunk's text."""
    *tokens, reply = read(REASONING_THEN_ANSWER)
    assert isinstance(reply, engine.ModelReply)
    assert tokens == [engine.Reasoning("secret-thought "), engine.THINKING, engine.Reasoning("more thought"),
                      engine.Token("S001: 165.7 m")]  # fmt: skip
    assert (reply.content, reply.reasoning) == ("S001: 165.7 m", "secret-thought more thought")
    *tokens, reply = read(ONLY_REASONING)
    assert isinstance(reply, engine.ModelReply)
    assert [token for token in tokens if not isinstance(token, engine.Reasoning)] == [
        engine.THINKING,
        engine.Token("Let me think …", reasoning=True),
    ]
    assert (reply.content, reply.reasoning) == ("Let me think …", "Let me think …")
    assert reply.content_is_reasoning
    assert reply.finish_reason == "length"


def test_reasoning_split_inside_a_character_is_passed_on_whole() -> None:
    """A surrogate pair split across two chunks (escaped text, re-chunked by a gateway): a lone surrogate in a /v1
    chunk would fail to encode, mid-stream."""
    *tokens, reply = read(sse_body(chunk({"reasoning_content": "a\ud83d"}), chunk({"reasoning_content": "\ude00b"}),
                                   chunk({"content": "Hi"}, "stop")))  # fmt: skip
    assert [token for token in tokens if isinstance(token, engine.Reasoning)] == [
        engine.Reasoning("a"),
        engine.Reasoning("\U0001f600b"),
    ]
    assert isinstance(reply, engine.ModelReply)
    assert reply.reasoning == "a\U0001f600b"


def test_a_model_that_goes_on_reasoning_is_said_to_be_thinking_now_and_then(monkeypatch: Any) -> None:
    """Reasoning streamed for minutes before any answer: the member saw nothing, and the chat's stream sent nothing
    (a proxy closes a stream idle for a minute)."""
    monkeypatch.setattr(engine, "THINKING_EVERY_SECONDS", 0.0)
    events = read(sse_body(*[chunk({"reasoning_content": "x"})] * 3, chunk({"content": "Hi"}, "stop")))
    said = [event for event in events if not isinstance(event, engine.Reasoning)]
    assert said[:4] == [engine.THINKING] * 3 + [engine.Token("Hi")]
    monkeypatch.setattr(engine, "THINKING_EVERY_SECONDS", 60.0)
    events = read(sse_body(*[chunk({"reasoning_content": "x"})] * 3, chunk({"content": "Hi"}, "stop")))
    said = [event for event in events if not isinstance(event, engine.Reasoning)]
    assert said[:2] == [engine.THINKING, engine.Token("Hi")]


def test_reasoning_counts_against_the_replys_most_characters(settings: Any) -> None:
    """A model that reasoned without end was read for as long as it went on."""
    settings.CHAT_MAX_REPLY_CHARS = 50
    with pytest.raises(engine.UpstreamError, match="passed 50 characters"):
        read(sse_body(*[chunk({"reasoning_content": "x" * 20})] * 3, chunk({"content": "Hi"}, "stop")))


def _refusing_stream_options(sent: list[dict[str, Any]]) -> tuple[Any, Any]:
    """A server (older vLLM, Azure) that answers 400 to ``stream_options``, and streams "Hi" otherwise, with no
    usage. ``sent`` gets each request's body."""

    def status(request: bytes) -> int:
        sent.append(json.loads(request))
        return 400 if "stream_options" in sent[-1] else 200

    def body(request: bytes) -> bytes:
        if "stream_options" in json.loads(request):
            return b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
        return sse_body(chunk({"content": "Hi"}, "stop"))

    return status, body


@pytest.mark.django_db
class TestThroughTheApis:
    def test_a_server_refusing_stream_options_is_asked_without_them_once_and_from_then_on(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """Every turn failed with the server's 400, for every member, for ever."""
        sent: list[dict[str, Any]] = []
        status, body = _refusing_stream_options(sent)
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
        path = f"/api/conversations/{conversation}/messages"
        try:
            with canned_server(body, status=status, content_type="text/event-stream") as root:
                settings.LLM_BASE_URL = f"{root}/v1"
                first = client.post(path, {"content": "hi"}, content_type="application/json")
                second = client.post(path, {"content": "again", "stream": True}, content_type="application/json")
        finally:
            engine._NO_STREAM_OPTIONS.clear()
        assert (first.status_code, first.json()["message"]["content"]) == (200, "Hi")
        assert b"event: done" in b"".join(second.streaming_content)
        assert ["stream_options" in request for request in sent] == [True, False, False]
        with schema_context(tenant_alpha.tenant.schema_name):
            replies = Message.objects.filter(conversation_id=conversation, role="assistant").order_by("id")
            assert [(m.content, m.status, m.tokens_used) for m in replies] == [("Hi", "complete", 0)] * 2
            assert UsageEvent.objects.count() == 2  # each turn one call, though its tokens are unknown

    def test_a_400_that_is_not_about_stream_options_is_not_sent_again(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        sent: list[bytes] = []

        def status(request: bytes) -> int:
            sent.append(request)
            return 400

        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
        with canned_server(b'{"error": {"message": "context too long"}}', status=status) as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = client.post(f"/api/conversations/{conversation}/messages", {"content": "hi"},
                                   content_type="application/json")  # fmt: skip
        assert (response.status_code, len(sent)) == (502, 1)
        assert not engine._NO_STREAM_OPTIONS

    @pytest.mark.parametrize(
        ("usage", "tokens"),
        [
            # OpenAI's include_usage: a last chunk of no choices
            ([chunk({"content": "Hi"}), chunk({}, "stop"), {"choices": [], "usage": {"prompt_tokens": 5,
                                                                                      "completion_tokens": 2}}], 7),
            # some gateways: the usage so far in every chunk, not to be added up
            ([chunk({"content": "H"}, usage={"prompt_tokens": 5, "completion_tokens": 1}),
              chunk({"content": "i"}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 2})], 7),
            ([chunk({"content": "Hi"}, "stop", usage=None)], 0),  # a server that reports none
        ],
        ids=["last-chunk", "cumulative", "none"],
    )  # fmt: skip
    def test_the_tokens_stored_are_the_usage_reported_once(
        self, tenant_alpha: TenantFixture, settings: Any, usage: list[dict[str, Any]], tokens: int
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
        with canned_server(sse_body(*usage), content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = client.post(f"/api/conversations/{conversation}/messages", {"content": "hi"},
                                   content_type="application/json")  # fmt: skip
        said = response.json()["message"]
        assert (response.status_code, said["content"], said["tokens_used"]) == (200, "Hi", tokens)

    def test_reasoning_is_neither_shown_stored_nor_sent_back_as_the_answer(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        sent: list[bytes] = []

        def answer(request: bytes) -> bytes:
            sent.append(request)
            return REASONING_THEN_ANSWER

        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
        path = f"/api/conversations/{conversation}/messages"
        with canned_server(answer, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            streamed = b"".join(client.post(path, {"content": "hi", "stream": True},
                                            content_type="application/json").streaming_content)  # fmt: skip
            client.post(path, {"content": "and now?"}, content_type="application/json")
        assert b"event: done" in streamed
        assert streamed.startswith(b"event: thinking\ndata: {}\n\nevent: token\n")
        assert b"thought" not in streamed
        assert b"thought" not in sent[1]  # the history the model reads
        with schema_context(tenant_alpha.tenant.schema_name):
            replies = Message.objects.filter(conversation_id=conversation, role="assistant")
            assert {m.content for m in replies} == {"S001: 165.7 m"}

    def test_an_answer_of_only_reasoning_is_stored_and_shown_as_the_answer(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
        with canned_server(ONLY_REASONING, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            streamed = b"".join(client.post(f"/api/conversations/{conversation}/messages",
                                            {"content": "hi", "stream": True},
                                            content_type="application/json").streaming_content)  # fmt: skip
        assert 'event: token\ndata: {"text":"Let me think …"}' in streamed.decode()
        with schema_context(tenant_alpha.tenant.schema_name):
            reply = Message.objects.get(conversation_id=conversation, role="assistant")
            assert (reply.content, reply.status) == ("Let me think …", "incomplete")  # cut off while thinking

    @pytest.mark.parametrize("stream", [False, True])
    def test_v1_passes_the_reasoning_on_and_answers_with_a_server_refusing_stream_options(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        sent: list[dict[str, Any]] = []
        status, body = _refusing_stream_options(sent)
        client: Any = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        try:
            with canned_server(REASONING_THEN_ANSWER, content_type="text/event-stream") as root:
                settings.LLM_BASE_URL = f"{root}/v1"
                reasoned = client.post("/v1/chat/completions", {"messages": [HI], "stream": stream},
                                       content_type="application/json")  # fmt: skip
                reasoned_text = b"".join(reasoned.streaming_content) if stream else reasoned.content
            with canned_server(body, status=status, content_type="text/event-stream") as root:
                settings.LLM_BASE_URL = f"{root}/v1"
                refused = client.post("/v1/chat/completions", {"messages": [HI], "stream": stream},
                                      content_type="application/json")  # fmt: skip
                refused_text = b"".join(refused.streaming_content) if stream else refused.content
        finally:
            engine._NO_STREAM_OPTIONS.clear()
        assert (reasoned.status_code, refused.status_code) == (200, 200)
        assert b"S001: 165.7 m" in reasoned_text
        if stream:  # each piece as its own delta, as it came
            assert b'"delta":{"reasoning_content":"secret-thought "}' in reasoned_text
            assert b'"delta":{"reasoning_content":"more thought"}' in reasoned_text
        else:
            message = json.loads(reasoned_text)["choices"][0]["message"]
            assert message["reasoning_content"] == "secret-thought more thought"
        assert b'"Hi"' in refused_text
        assert b"reasoning_content" not in refused_text  # only a model that reasons has it


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_stopped_at_the_length_limit_is_stored_and_shown_cut_short(
    tenant_alpha: TenantFixture, settings: Any, stream: bool
) -> None:
    """``finish_reason: "length"`` (``max_tokens`` reached), after a role-only first chunk and ``content: null``
    deltas, with the finish on a last chunk of an empty delta: stored complete, cut off mid-sentence unsaid."""
    body = sse_body(chunk({"role": "assistant"}), chunk({"content": None}), chunk({"content": "The level is"}),
                    chunk({}, "length"))  # fmt: skip
    client = member_client(tenant_alpha)
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
    with canned_server(body, content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        response = client.post(f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": stream},
                               content_type="application/json")  # fmt: skip
        said = b"".join(response.streaming_content).decode() if stream else response.json()["message"]["status"]
    assert ('"status":"incomplete"' in said) if stream else (said == "incomplete")
    with schema_context(tenant_alpha.tenant.schema_name):
        reply = Message.objects.get(conversation_id=conversation, role="assistant")
        assert (reply.content, reply.status) == ("The level is", "incomplete")


FILTERED = sse_body(chunk({"role": "assistant"}), chunk({"content": "The level is"}), chunk({}, "content_filter"))
FILTERED_WORDS = "The model server's content filter stopped this reply."


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_stopped_by_the_content_filter_is_stored_incomplete_and_says_why(
    tenant_alpha: TenantFixture, settings: Any, stream: bool
) -> None:
    """``finish_reason: "content_filter"`` (Azure's, OpenAI's): it was stored complete, cut off mid-sentence (or
    empty: "The model's answer was empty.") without a word of why. Stored ``incomplete`` as a ``length`` stop, with
    words of its own, on the page, in ``done``, the message and the download."""
    from tests.chat.test_pages import member_and_client

    member, page_client = member_and_client(tenant_alpha)
    client: Any = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, member)["access"]))
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
    with canned_server(FILTERED, content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        response = client.post(f"/api/conversations/{conversation}/messages", {"content": "hi", "stream": stream},
                               content_type="application/json")  # fmt: skip
    if stream:
        done = json.loads(b"".join(response.streaming_content).decode().split("event: done\ndata: ")[1])
        assert (done["status"], done["error"]) == ("incomplete", FILTERED_WORDS)
    else:
        said = response.json()["message"]
        assert (said["status"], said["error"]) == ("incomplete", FILTERED_WORDS)
    with schema_context(tenant_alpha.tenant.schema_name):
        reply = Message.objects.get(conversation_id=conversation, role="assistant")
        assert (reply.content, reply.status, reply.error) == ("The level is", "incomplete", FILTERED_WORDS)
    page = page_client.get(f"/chat/{conversation}/").content.decode().split('data-testid="messages"')[1]
    assert f'<div class="bubble-note">{FILTERED_WORDS.replace("'", "&#x27;")}</div>' in page
    assert "This reply stopped before it was complete." not in page
    download = client.get(f"/api/conversations/{conversation}/export").content.decode()
    assert f"*{FILTERED_WORDS}*" in download


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True])
def test_v1_passes_a_content_filter_stop_on(tenant_alpha: TenantFixture, settings: Any, stream: bool) -> None:
    client: Any = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
    with canned_server(FILTERED, content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        response = client.post("/v1/chat/completions", {"messages": [HI], "stream": stream},
                               content_type="application/json")  # fmt: skip
        body = b"".join(response.streaming_content) if stream else response.content
    assert response.status_code == 200
    if stream:
        assert b'"delta":{},"finish_reason":"content_filter"' in body
    else:
        choice = json.loads(body)["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("The level is", "content_filter")
