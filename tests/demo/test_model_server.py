"""The demo model server: its pure planning functions, then the real thing over HTTP on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx2
import openai
import pytest

from demo.hydrology import flood_warning_levels, rainfall, stations, water_levels
from demo.model_server import (
    LONG_CHUNKS,
    LONG_MIN_DELAY_MS,
    MODEL_ID,
    Reply,
    choose_tool_call,
    plan_reply,
    split_pieces,
    summarise_tool_result,
)
from demo.testing import run_model_server


def function_tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}


STRING = {"type": "string"}
DATED = {"station": STRING, "start": STRING, "end": STRING}
TOOLS = [
    function_tool("hydrology__list_stations", {}),
    function_tool("hydrology__get_water_levels", DATED),
    function_tool("hydrology__get_rainfall", DATED),
    function_tool("hydrology__get_flood_warning_levels", {"station": STRING}),
]
QUESTION = "站点 S001 最近的水位是多少?"
TODAY = date(2025, 7, 10)
RECENT = {"start": "2025-07-08", "end": "2025-07-10"}  # TODAY - 2 days .. TODAY
WEEK = {"start": "2025-07-04", "end": "2025-07-10"}  # a week: TODAY and the six days before


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are HydroNet."}, {"role": "user", "content": text}]


def chat(url: str, **payload: Any) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/chat/completions", json={"model": MODEL_ID, **payload}, timeout=15)


def events(url: str, **payload: Any) -> list[str]:
    """The ``data:`` payloads of a streamed completion, ``[DONE]`` included."""
    with httpx2.stream(
        "POST", f"{url}/v1/chat/completions", json={"model": MODEL_ID, "stream": True, **payload}, timeout=15
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def stats(url: str) -> dict[str, int]:
    response = httpx2.get(f"{url}/_demo/stats", timeout=5)
    response.raise_for_status()
    data: dict[str, int] = response.json()
    return data


def utc_today() -> date:
    return datetime.now(UTC).date()


# --- Pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "hello world", QUESTION, "你好，世界。Line one\nline two\n\n  indented  ", "2025-07-01 S001：165.32 m"]
)
def test_split_pieces_round_trips(text: str) -> None:
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert all(len(p.strip()) <= 40 for p in pieces)


@pytest.mark.parametrize(
    ("text", "name", "arguments"),
    [
        (QUESTION, "hydrology__get_water_levels", {"station": "S001", **RECENT}),
        ("站点S002的水位", "hydrology__get_water_levels", {"station": "S002", **RECENT}),
        ("water level at s003 please", "hydrology__get_water_levels", {"station": "S003", **RECENT}),
        ("S004 最近降雨多吗", "hydrology__get_rainfall", {"station": "S004", **RECENT}),
        ("How much rain fell at S005?", "hydrology__get_rainfall", {"station": "S005", **RECENT}),
        ("S006 的警戒水位是多少", "hydrology__get_flood_warning_levels", {"station": "S006"}),
        ("flood warning level for S007", "hydrology__get_flood_warning_levels", {"station": "S007"}),
        ("有哪些站点？", "hydrology__list_stations", {}),
        # The chat page's suggested questions (apps.chat.views.SUGGESTIONS), in both languages.
        (
            "What are the latest water levels at station S001?",
            "hydrology__get_water_levels",
            {"station": "S001", **RECENT},
        ),
        (
            "How much rain fell at station S002 over the past week?",
            "hydrology__get_rainfall",
            {"station": "S002", **WEEK},
        ),
        ("站点 S002 过去一周的降雨量是多少？", "hydrology__get_rainfall", {"station": "S002", **WEEK}),
        (
            "What are the flood warning levels at station S003?",
            "hydrology__get_flood_warning_levels",
            {"station": "S003"},
        ),
        ("站点 S003 的防洪警戒水位是多少？", "hydrology__get_flood_warning_levels", {"station": "S003"}),
        ("list the stations", "hydrology__list_stations", {}),
    ],
)
def test_tool_choice_by_keywords(text: str, name: str, arguments: dict[str, str]) -> None:
    call = choose_tool_call(text, TOOLS, today=TODAY)
    assert call is not None
    assert call.name == name
    assert json.loads(call.arguments) == arguments
    assert call.id.startswith("call_")
    assert call == choose_tool_call(text, TOOLS, today=TODAY)  # deterministic, id included


@pytest.mark.parametrize("text", ["你好", "S001 怎么样", "水位是多少", "tell me a joke"])
def test_no_tool_without_a_match(text: str) -> None:
    assert choose_tool_call(text, TOOLS, today=TODAY) is None


def test_a_question_that_names_an_offered_tool_calls_it() -> None:
    """Before any keyword, and only by its whole name: how a test makes the demo model call a tool named in
    Chinese (offered as ``names__ShuiWei``)."""
    tools = [*TOOLS, function_tool("names__ShuiWei", {"station": STRING}), function_tool("names__ShuiWei_2", {})]
    call = choose_tool_call("调用names__ShuiWei查询 S002 的雨量", tools, today=TODAY)
    assert call is not None
    assert (call.name, json.loads(call.arguments)) == ("names__ShuiWei", {"station": "S002"})
    second = choose_tool_call("call names__ShuiWei_2", tools, today=TODAY)
    assert second is not None
    assert second.name == "names__ShuiWei_2"
    assert choose_tool_call("call names__ShuiWei_3", tools, today=TODAY) is None


def test_only_offered_tools_and_declared_arguments() -> None:
    only_levels = [function_tool("get_water_levels", {"station": STRING})]
    assert choose_tool_call("S001 降雨", only_levels, today=TODAY) is None
    assert choose_tool_call("有哪些站点", only_levels, today=TODAY) is None
    call = choose_tool_call("S009 水位", only_levels, today=TODAY)
    assert call is not None
    assert call.name == "get_water_levels"
    assert json.loads(call.arguments) == {"station": "S009"}
    assert choose_tool_call(QUESTION, TOOLS, "none", today=TODAY) is None
    forced = choose_tool_call("hello", TOOLS, {"type": "function", "function": {"name": "hydrology__get_rainfall"}})
    assert forced is not None
    assert forced.name == "hydrology__get_rainfall"


def test_summaries_of_each_tool_result() -> None:
    levels = water_levels("S001", "2025-07-01", "2025-07-03")
    values = [r["level_m"] for r in levels["readings"]]
    summary = summarise_tool_result(json.dumps(levels))
    assert f"{values[-1]:.2f} m" in summary
    assert f"{min(values):.2f}" in summary
    assert f"{max(values):.2f}" in summary
    assert "2025-07-03T23:00:00Z" in summary

    rain = rainfall("S002", "2025-07-01", "2025-07-07")
    assert f"{rain['total_mm']} mm" in summarise_tool_result(json.dumps(rain))

    warning = flood_warning_levels("S003")
    assert str(warning["warning_level_m"]) in summarise_tool_result(json.dumps(warning))

    listing = summarise_tool_result(json.dumps(stations(), ensure_ascii=False))
    assert "10" in listing
    assert "长江·寸滩站" in listing

    generic = summarise_tool_result("x" * 1000)
    assert "x" * 300 in generic
    assert "x" * 301 not in generic


def test_the_demo_question_without_tools_says_a_tool_is_needed_and_where() -> None:
    """A new workspace, with no MCP service, asked the demo question; the answer told it to try the very same
    question, to the same answer."""
    content = plan_reply(user(QUESTION)).content
    assert content is not None
    assert "no tool was offered" in content
    assert "“工具”页面" in content
    assert "Try:" not in content
    other = plan_reply(user("What is hydrology?")).content  # no tool would answer it: the hint stays
    assert other is not None
    assert "Try:" in other
    offered = plan_reply(user("站点 S001 最近的降雨量"), tools=[TOOLS[0]]).content  # a tool, not that one
    assert offered is not None
    assert "Try:" in offered


def test_max_tokens_truncates_text() -> None:
    reply = plan_reply(user("hello"), max_tokens=3)
    assert reply.finish_reason == "length"
    assert reply.content is not None
    assert len(reply.content) <= 12
    assert Reply.text("abc").finish_reason == "stop"


def test_long_reply_has_the_promised_number_of_pieces() -> None:
    reply = plan_reply(user("please #long"))
    assert len(reply.pieces) == LONG_CHUNKS
    assert all(reply.pieces)


# --- Over HTTP --------------------------------------------------------------------------------


def test_models(demo_model_root: str) -> None:
    listing = httpx2.get(f"{demo_model_root}/v1/models", timeout=5)
    assert listing.status_code == 200
    model = {"id": MODEL_ID, "object": "model", "created": listing.json()["data"][0]["created"], "owned_by": "hydronet"}
    assert listing.json() == {"object": "list", "data": [model]}
    assert httpx2.get(f"{demo_model_root}/v1/models/{MODEL_ID}", timeout=5).json() == model
    missing = httpx2.get(f"{demo_model_root}/v1/models/gpt-9", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_plain_answer_says_it_is_the_demo_model(demo_model_root: str) -> None:
    response = chat(demo_model_root, messages=user("What is hydrology?"), temperature=0.7)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL_ID
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    content = choice["message"]["content"]
    assert content.startswith("（离线演示模型 / offline demo model）")
    assert "HydroNet offline demo model" in content
    assert "What is hydrology?" in content
    assert "S001" in content
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = chat(demo_model_root, messages=user("What is hydrology?"), temperature=0.7).json()
    assert again["choices"] == body["choices"]
    assert again["usage"] == usage
    assert again["id"] == body["id"]


def test_tool_call_then_answer_from_the_result(demo_model_root: str) -> None:
    messages = user(QUESTION)
    body = chat(demo_model_root, messages=messages, tools=TOOLS, tool_choice="auto").json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "hydrology__get_water_levels"
    arguments = json.loads(call["function"]["arguments"])
    today = utc_today()
    assert arguments["station"] == "S001"
    assert arguments["end"] in {today.isoformat(), (today - timedelta(days=1)).isoformat()}  # around midnight
    assert date.fromisoformat(arguments["end"]) - date.fromisoformat(arguments["start"]) == timedelta(days=2)
    assert set(arguments) == {"station", "start", "end"}

    result = water_levels(**arguments)
    values = [r["level_m"] for r in result["readings"]]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)},
    ]
    answer = chat(demo_model_root, messages=messages, tools=TOOLS).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    content = answer["message"]["content"]
    assert content.startswith("（离线演示模型 / offline demo model）")
    assert f"{values[-1]:.2f} m" in content
    assert f"{min(values):.2f}" in content
    assert f"{max(values):.2f}" in content


def test_streamed_text(demo_model_root: str) -> None:
    payload = {"messages": user("Tell me about S001"), "stream_options": {"include_usage": True}}
    data = events(demo_model_root, **payload)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content_chunks = [c for c in chunks[1:-2] if c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 10
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    streamed = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    plain = chat(demo_model_root, messages=payload["messages"]).json()
    assert streamed == plain["choices"][0]["message"]["content"]
    assert usage == plain["usage"]


def test_streamed_tool_call_arguments_reassemble(demo_model_root: str) -> None:
    data = events(demo_model_root, messages=user("S002 降雨"), tools=TOOLS)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in c for c in chunks)  # not asked for
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    head = deltas[1][0]
    assert head["index"] == 0
    assert head["id"].startswith("call_")
    assert head["type"] == "function"
    assert head["function"] == {"name": "hydrology__get_rainfall", "arguments": ""}
    fragments = [d[0]["function"]["arguments"] for d in deltas[2:] if d]
    assert len(fragments) > 1
    arguments = json.loads("".join(fragments))
    assert arguments["station"] == "S002"
    assert set(arguments) == {"station", "start", "end"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_official_openai_client(demo_model_root: str) -> None:
    with httpx2.Client() as http_client:
        client = openai.OpenAI(base_url=f"{demo_model_root}/v1", api_key="x", http_client=http_client)
        assert [m.id for m in client.models.list()] == [MODEL_ID]

        completion = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content
        assert "offline demo model" in completion.choices[0].message.content
        assert completion.usage is not None

        called = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": QUESTION}],
            tools=TOOLS,  # type: ignore[arg-type]  # plain dicts, as the app sends them
        )
        tool_calls = called.choices[0].message.tool_calls
        assert tool_calls is not None
        assert tool_calls[0].type == "function"
        assert tool_calls[0].function.name == "hydrology__get_water_levels"

    client = openai.OpenAI(base_url=f"{demo_model_root}/v1", api_key="x")  # its own default http client
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == completion.choices[0].message.content
    assert usage is not None
    assert usage.total_tokens == completion.usage.total_tokens

    quiet = openai.OpenAI(base_url=f"{demo_model_root}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        quiet.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "#ratelimit"}])
    with pytest.raises(openai.InternalServerError):
        quiet.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "#error500"}])
    with pytest.raises(openai.NotFoundError):
        quiet.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


def test_api_key_is_required_when_configured() -> None:
    with run_model_server(api_key="sekrit", token_delay_ms=0) as url:
        missing = httpx2.get(f"{url}/v1/models", timeout=5)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = chat(url, messages=user("hi"))
        assert wrong.status_code == 401
        good = httpx2.get(f"{url}/v1/models", headers={"Authorization": "Bearer sekrit"}, timeout=5)
        assert good.status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sekrit")
        assert client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}]).choices
        assert httpx2.get(f"{url}/_demo/stats", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": MODEL_ID}).encode(), "messages"),
        (json.dumps({"model": MODEL_ID, "messages": []}).encode(), "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "model"),
        (json.dumps({"model": MODEL_ID, "messages": [{"content": "hi"}]}).encode(), "messages[0]"),
    ],
)
def test_bad_requests(demo_model_root: str, raw: bytes, param: str | None) -> None:
    response = httpx2.post(f"{demo_model_root}/v1/chat/completions", content=raw, timeout=5)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": "x"}]}, *user("hi")]},
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": ["f", "{}"]}]}, *user("hi")]},
        {"messages": [{"role": "assistant", "tool_calls": 5}, *user("hi")]},
        {"messages": [{"role": "assistant", "tool_calls": "calls"}, *user("hi")]},
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": "f"}]},
                {"role": "tool", "tool_call_id": "c", "content": "[]"},
            ]
        },
        {"messages": user(QUESTION), "tools": [{"type": "function", "function": "get_water_levels"}]},
        {"messages": user(QUESTION), "tools": TOOLS, "tool_choice": {"type": "function", "function": "f"}},
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_body_of_unexpected_shapes_is_answered(demo_model_root: str, payload: dict[str, Any], stream: bool) -> None:
    """What is not of the shape the server reads is skipped: a tool call whose function was a string was a 500, and
    openai's clients retried it, twice."""
    response = chat(demo_model_root, stream=stream, stream_options={"include_usage": True}, **payload)
    assert response.status_code == 200, response.text


def test_unknown_model(demo_model_root: str) -> None:
    response = httpx2.post(
        f"{demo_model_root}/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# --- Fault injection ------------------------------------------------------------------------


def test_error500(demo_model_root: str) -> None:
    response = chat(demo_model_root, messages=user("boom #error500"))
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_ratelimit(demo_model_root: str) -> None:
    response = chat(demo_model_root, messages=user("again #ratelimit"), stream=True)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_malformed(demo_model_root: str) -> None:
    response = chat(demo_model_root, messages=user("#malformed"))
    assert response.status_code == 200
    assert response.text == "{not json"
    data = events(demo_model_root, messages=user("#malformed"))
    assert "{not json" in data


def test_broken_stream_stops_without_finish_or_done(demo_model_root: str) -> None:
    received: list[str] = []
    with httpx2.stream(
        "POST",
        f"{demo_model_root}/v1/chat/completions",
        json={"model": MODEL_ID, "stream": True, "messages": user("#broken")},
        timeout=15,
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            received.extend(line for line in response.iter_lines() if line.startswith("data: "))
    chunks = [json.loads(line.removeprefix("data: ")) for line in received]
    assert len(chunks) >= 2
    assert any(c["choices"][0]["delta"].get("content") for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_broken_plain_response_is_truncated(demo_model_root: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        chat(demo_model_root, messages=user("#broken"))


def test_slow(demo_model_root: str) -> None:
    started = time.monotonic()
    response = chat(demo_model_root, messages=user("take your time #slow"))
    assert time.monotonic() - started >= 2.9
    assert response.status_code == 200
    assert "offline demo model" in response.json()["choices"][0]["message"]["content"]


def test_long_streams_200_content_chunks(demo_model_root: str) -> None:
    """For about three seconds whatever the server's pace (the tests' is 5 ms): a browser test stops it, or tries
    to leave the page, while it streams."""
    started = time.monotonic()
    data = events(demo_model_root, messages=user("#long"))
    assert time.monotonic() - started >= (LONG_CHUNKS - 1) * LONG_MIN_DELAY_MS / 1000
    assert data[-1] == "[DONE]"
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[1:-1]]
    assert len([c for c in contents if c]) == LONG_CHUNKS


def _wait_for(url: str, condition: str, expected: int) -> dict[str, int]:
    deadline = time.monotonic() + 5
    while (now := stats(url))[condition] < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def test_client_disconnect_cancels_the_stream(demo_model_root: str) -> None:
    before = stats(demo_model_root)
    with (
        httpx2.Client(timeout=15) as client,
        client.stream(
            "POST",
            f"{demo_model_root}/v1/chat/completions",
            json={"model": MODEL_ID, "stream": True, "messages": user("#long")},
        ) as response,
    ):
        lines: Iterator[str] = response.iter_lines()
        seen = 0
        for line in lines:
            seen += line.startswith("data: ")
            if seen == 5:
                break
    started = time.monotonic()
    after = _wait_for(demo_model_root, "streams_cancelled", before["streams_cancelled"] + 1)
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1
    assert time.monotonic() - started < 0.8  # well before the 200 chunks x 5 ms would have finished
    assert after["streams_started"] == before["streams_started"] + 1
    assert after["streams_completed"] == before["streams_completed"]
