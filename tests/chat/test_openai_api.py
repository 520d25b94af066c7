"""The OpenAI-compatible /v1 API: in-process, and with the official openai client over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.tenants.db import connection
from apps.usage.models import UsageEvent
from tests.chat.conftest import charged_tool_calls, many_calls_model, tool_call_chunk
from tests.conftest import TenantFixture, admin_of, api_key_secret, bearer, jwt_pair
from tests.processes import WebServer, canned_server, held_model_server, serve, sse_body

QUESTION = "站点 S001 最近的水位是多少?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_water_levels",
            "description": "Water levels of a station",
            "parameters": {
                "type": "object",
                "properties": {"station": {"type": "string"}, "start": {"type": "string"}, "end": {"type": "string"}},
            },
        },
    }
]

HI = {"role": "user", "content": "hi"}
GOOD_TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
BAD_TOOL_CALLS = [
    {"function": "x"},
    {"id": "c1", "type": "function", "function": "x"},
    {"id": "c1", "type": "function", "function": ["f", "{}"]},
    {"id": "c1", "type": "function", "function": {"arguments": "{}"}},
    {"id": "c1", "type": "function", "function": {"name": "", "arguments": "{}"}},
    {"id": "c1", "type": "function", "function": {"name": "f" * 65, "arguments": "{}"}},
    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
    {"id": "c1", "type": "function", "function": {"name": "f"}},
    {"id": 1, "type": "function", "function": {"name": "f", "arguments": "{}"}},
    {"id": "c" * 101, "type": "function", "function": {"name": "f", "arguments": "{}"}},
    {"type": "function", "function": {"name": "f", "arguments": "{}"}},
    {"id": "c1", "type": "retrieval", "function": {"name": "f", "arguments": "{}"}},
    "c1",
]


def completions(client: Client, **body: Any) -> Any:
    return client.post("/v1/chat/completions", body, content_type="application/json")


def stream_chunks(response: Any) -> list[dict[str, Any]]:
    """The chunks of a streamed completion, in order, before its ``[DONE]``."""
    lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


@pytest.mark.django_db
class TestInProcess:
    def test_models(self, tenant_alpha: TenantFixture) -> None:
        body = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user"))).get("/v1/models").json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["hydronet-demo"]

    def test_one_model_and_an_unknown_one(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_MODELS = ["hydronet-demo", "org/model-2"]
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "viewer")))
        one = client.get("/v1/models/hydronet-demo").json()
        assert (one["id"], one["object"]) == ("hydronet-demo", "model")
        assert client.get("/v1/models/org/model-2").json()["id"] == "org/model-2"
        missing = client.get("/v1/models/gpt-nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert tenant_alpha.client().get("/v1/models/hydronet-demo").status_code == 401

    def test_created_is_the_same_on_every_call(self, tenant_alpha: TenantFixture, demo_model_url: str) -> None:
        """It was the time of the request: the workspace's creation for the platform's models, and the first
        save of the workspace's own model server for its models."""
        from apps.core.actors import Actor
        from apps.llm.services import model_provider_save

        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        listed = client.get("/v1/models").json()["data"]
        assert [m["created"] for m in listed] == [int(tenant_alpha.tenant.created_at.timestamp())]
        assert client.get("/v1/models/hydronet-demo").json()["created"] == listed[0]["created"]
        with schema_context(tenant_alpha.tenant.schema_name):
            actor = Actor(user=admin_of(tenant_alpha))
            provider = model_provider_save(actor=actor, base_url=demo_model_url, model_ids=["own-a", "own-b"])
            model_provider_save(actor=actor, base_url=demo_model_url, model_ids=["own-a", "own-b"], name="Again")
        own = int(provider.created_at.timestamp())
        assert [m["created"] for m in client.get("/v1/models").json()["data"]] == [own, own]
        assert client.get("/v1/models/own-b").json()["created"] == own

    def test_a_whole_completion_uses_the_tenants_mcp_tools(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        body = completions(client, model="hydronet-demo", messages=[{"role": "user", "content": QUESTION}]).json()
        assert body["object"] == "chat.completion"
        message = body["choices"][0]["message"]
        assert "S001" in message["content"]
        assert "tool_calls" not in message  # HydroNet ran the tools
        assert body["usage"]["total_tokens"] > 0

    def test_calls_past_the_most_of_one_reply_are_answered_not_run(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        """As in the chat (CHAT_MAX_TOOL_CALLS_PER_REPLY): the first ones run, the model reads the others were not."""
        settings.CHAT_MAX_TOOL_CALLS_PER_REPLY = 3
        sent: list[list[dict[str, Any]]] = []
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(many_calls_model(5, sent), content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(client, messages=[{"role": "user", "content": "Stations?"}])
        assert response.status_code == 200, response.content
        assert response.json()["choices"][0]["message"] == {"role": "assistant", "content": "Done.", "refusal": None}
        results = [message for message in sent[-1] if message["role"] == "tool"]
        assert [message["tool_call_id"] for message in results] == [f"call_{n}" for n in range(5)]
        assert all("S001" in message["content"] for message in results[:3])
        assert [message["content"] for message in results[3:]] == [
            "Not run: the model asked for 5 tool calls in one reply; at most 3 are run."
        ] * 2
        assert charged_tool_calls(tenant_alpha) == 3

    def test_client_tools_are_passed_through(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        body = completions(client, messages=[{"role": "user", "content": QUESTION}], tools=TOOLS).json()
        choice = body["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_water_levels"
        assert json.loads(call["function"]["arguments"])["station"] == "S001"

    def test_a_body_as_deep_as_allowed_reaches_the_model_server(self, tenant_alpha: TenantFixture) -> None:
        """100 levels, the most a body may nest, go through the serializers, the openai client and the model
        server's request without anything of ours recursing out of Python's stack; one more is a 400."""
        deep: Any = []
        for _ in range(94):  # 95 arrays, in the body's object, tools, the tool, its function and parameters
            deep = [deep]
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        for levels, status in ((deep, 200), ([deep], 400)):
            tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "default": levels}}}
            response = completions(client, messages=[{"role": "user", "content": "hi"}], tools=[tool])
            assert response.status_code == status, response.content

    def test_streaming_format(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        response = completions(
            client, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
        assert chunks[-1]["usage"]["total_tokens"] > 0

    def test_a_stream_may_be_asked_for_with_accept(self, tenant_alpha: TenantFixture) -> None:
        """``Accept: text/event-stream``, as SSE clients send it, was a 406."""
        client = tenant_alpha.client(HTTP_ACCEPT="text/event-stream", **bearer(api_key_secret(tenant_alpha, "user")))
        response = completions(client, messages=[{"role": "user", "content": "hi"}], stream=True)
        assert response.status_code == 200
        assert b"".join(response.streaming_content).decode().endswith("data: [DONE]\n\n")
        refused = completions(client, messages=[], stream=True)
        assert refused.status_code == 400
        assert refused.json()["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize("credential", ["jwt", "none", "other-tenant-key"])
    def test_only_this_tenants_api_keys(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, credential: str
    ) -> None:
        headers = {
            "jwt": lambda: bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]),
            "none": dict,
            "other-tenant-key": lambda: bearer(api_key_secret(tenant_beta, "admin")),
        }[credential]()
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **headers)
        response = completions(client, messages=[{"role": "user", "content": "hi"}])
        assert response.status_code == 401
        says_so = "takes an API key" in response.json()["error"]["message"]
        assert says_so == (credential == "jwt")  # a login's token: told what this endpoint takes

    def test_a_viewer_key_may_not_chat(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "viewer")))
        response = completions(client, messages=[{"role": "user", "content": "hi"}])
        assert response.status_code == 403
        assert response.json()["error"]["details"] == {"permission": "create_conversation"}
        assert (response.json()["error"]["type"], response.json()["error"]["param"]) == ("permission_error", None)

    def test_errors_carry_openais_type_under_v1_only(self, tenant_alpha: TenantFixture) -> None:
        unauthenticated = completions(tenant_alpha.client(), messages=[{"role": "user", "content": "hi"}])
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["type"] == "authentication_error"
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        unknown = completions(client, model="gpt-nope", messages=[{"role": "user", "content": "hi"}]).json()["error"]
        assert (unknown["code"], unknown["type"], unknown["param"]) == ("unknown_model", "invalid_request_error",
                                                                        "model")  # fmt: skip
        failed = completions(client, messages=[{"role": "user", "content": "hi #error500"}]).json()["error"]
        assert (failed["code"], failed["type"]) == ("upstream_error", "api_error")
        other_api = tenant_alpha.client().get("/api/auth/me").json()["error"]
        assert "type" not in other_api  # the rest of the API keeps the one format

    @pytest.mark.parametrize(
        "body",
        [{"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]}, {"model": "nope", "messages": [
            {"role": "user", "content": "hi"}]}, {}],
    )  # fmt: skip
    def test_bad_requests_are_400s(self, tenant_alpha: TenantFixture, body: dict[str, Any]) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        assert completions(client, **body).status_code == 400

    @pytest.mark.parametrize(
        ("option", "value"),
        [("temperature", 2.5), ("temperature", "hot"), ("top_p", -0.1), ("max_tokens", 0), ("max_tokens", "many"),
         ("max_completion_tokens", 2**31), ("presence_penalty", 3), ("frequency_penalty", -2.5), ("n", 2),
         ("stop", ["a", "b", "c", "d", "e"]), ("stop", 7), ("stop", [""]), ("seed", 2**64), ("tool_choice", "always"),
         ("tool_choice", {"type": "function"}), ("tool_choice", "auto"), ("response_format", {"type": "yaml"}),
         ("response_format", {"type": "json_schema"}), ("stream_options", {"include_usage": "perhaps"}),
         ("tools", [{"type": "function"}]), ("tools", [{"type": "retrieval", "function": {"name": "x"}}]),
         ("tools", [{"type": "function", "function": {"name": "x", "parameters": "an object"}}]),
         ("messages", [{"role": "user", "content": 123}]), ("messages", [{"role": "user", "content": {"a": 1}}]),
         ("messages", [{"role": "user", "content": [{"type": "text"}]}]), ("messages", [{"role": "user"}]),
         ("messages", [{"role": "user", "content": []}]), ("messages", [{"role": "tool", "content": None}]),
         # JSON types, as OpenAI takes them: not what an HTML form would send.
         ("stream", "yes"), ("stream", 1), ("stream_options", {"include_usage": "true"}), ("temperature", "0.5"),
         ("top_p", True), ("max_tokens", "10"), ("max_tokens", 10.0), ("max_tokens", True), ("n", "1"),
         ("seed", "7"), ("presence_penalty", "1"), ("model", 5), ("model", True),
         ("messages", [{"role": "user", "content": "hi", "name": 5}]),
         # An assistant's tool calls in OpenAI's shape only: each was sent on, charged, and broke the model server.
         *(("messages", [{"role": "assistant", "content": None, "tool_calls": [call]}, HI]) for call in BAD_TOOL_CALLS),
         ("messages", [{"role": "user", "content": "hi", "tool_calls": [GOOD_TOOL_CALL]}]),
         # An empty list of tools ran the workspace's own, and charged them; OpenAI refuses it.
         ("tools", []), ("parallel_tool_calls", True), ("parallel_tool_calls", "no"), ("reasoning_effort", 5),
         ("stream_options", {"include_usage": True}),  # without stream: true, as OpenAI
         # What changes the answer and is not honoured: each was dropped, and the answer came without it.
         ("logprobs", True), ("logprobs", 0), ("top_logprobs", 2), ("logit_bias", {"50256": -100}),
         ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
         ("prediction", {"type": "content", "content": "x"}), ("service_tier", "flex"),
         ("functions", [{"name": "f", "parameters": {}}]), ("function_call", "auto")],
    )  # fmt: skip
    def test_a_bad_option_is_a_400_and_costs_nothing(
        self, tenant_alpha: TenantFixture, option: str, value: Any
    ) -> None:
        from django.utils import timezone
        from django_redis import get_redis_connection

        from apps.usage.meter import month_key

        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        counter = month_key(tenant_alpha.tenant.schema_name, timezone.now().date())
        calls_before = get_redis_connection("default").hget(counter, "calls")
        response = completions(client, **{"messages": [{"role": "user", "content": "hi"}], option: value})
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert option in error["details"]
        assert (error["type"], error["param"]) == ("invalid_request_error", option)  # OpenAI's fields too
        # OpenAI's clients show the message alone ("Error code: 400 - …"): it names the field and the problem.
        assert error["message"].startswith("输入无效。" + option + "："), error["message"]
        assert len(error["message"]) > len("输入无效。" + option + "：")
        assert get_redis_connection("default").hget(counter, "calls") == calls_before  # not charged

    def test_null_is_the_same_as_leaving_an_option_out(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        parts = [{"type": "text", "text": "hello"}]
        body = completions(client, messages=[{"role": "user", "content": parts}], stream=None, tools=None)
        assert body.status_code == 200, body.content
        assert body.json()["object"] == "chat.completion"
        called = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}  # fmt: skip
        answered = {"role": "tool", "tool_call_id": "c1", "content": "{}"}
        history = [{"role": "user", "content": "hi"}, called, answered]
        assert completions(client, messages=history).status_code == 200

    def test_null_in_a_messages_optional_fields_is_the_same_as_leaving_them_out(
        self, tenant_alpha: TenantFixture, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        """A reply sent back as openai's ``model_dump()`` gives it has ``"tool_calls": null``, which OpenAI takes:
        it was a 400 "may not be null"."""
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        reply = openai.types.chat.ChatCompletionMessage(role="assistant", content="Hello.").model_dump()
        assert reply["tool_calls"] is None
        history = [
            {"role": "user", "content": "hi", "name": None, "tool_calls": None, "tool_call_id": None},
            reply,
            {"role": "user", "content": "and again", "name": None},
        ]
        response = completions(client, messages=history, tools=TOOLS)  # the client's tools: one model request
        assert response.status_code == 200, response.content
        sent = [m for m in model_requests[0] if m["role"] != "system"]
        assert sent == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "and again"},
        ]

    def test_a_tool_calls_type_may_be_left_out_and_reaches_the_model_server_filled_in(
        self, tenant_alpha: TenantFixture, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        """OpenAI requires ``type``, but it says nothing ("function" is the only one) and clients left it out before
        tool calls were checked: it is taken, and sent on as OpenAI's shape for model servers that require it."""
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        untyped = {"id": "c1", "function": {"name": "get_water_levels", "arguments": '{"station": "S001"}'}}
        history = [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [untyped]},
            {"role": "tool", "tool_call_id": "c1", "content": "[]"},
        ]
        response = completions(client, messages=history, tools=TOOLS)
        assert response.status_code == 200, response.content
        assert model_requests[0][1]["tool_calls"] == [{**untyped, "type": "function"}]

    def test_at_most_2000_messages_counted_before_any_is_checked(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """2.5 MB of ``{}`` are 870,000 messages, which were checked one by one, each refused in words: 34 s of the
        server's time for a 400, as often as a key's rate limit allowed."""
        from django.utils import timezone
        from django_redis import get_redis_connection

        from apps.usage.meter import month_key

        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        counter = month_key(tenant_alpha.tenant.schema_name, timezone.now().date())
        calls_before = get_redis_connection("default").hget(counter, "calls")
        too_many = completions(client, messages=[{}] * 2001)
        assert too_many.status_code == 400
        error = too_many.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_input", "messages")
        assert error["details"] == {"messages": ["Send at most 2000 messages in one request."]}  # not 2001 errors
        assert get_redis_connection("default").hget(counter, "calls") == calls_before  # not charged
        assert completions(client, messages=[{"role": "user", "content": "hi"}] * 2000).status_code == 200
        settings.CHAT_MAX_REQUEST_MESSAGES = 3
        fewer = completions(client, messages=[{"role": "user", "content": "hi"}] * 4).json()["error"]
        assert fewer["details"] == {"messages": ["Send at most 3 messages in one request."]}

    def test_a_list_is_refused_for_its_length_before_its_items_and_at_its_first_bad_item(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """``tools`` was refused for its length (128) only after each of its items was checked, and each bad item of
        a list got an error of its own: a body of a million bad items took half a minute to refuse."""
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        hi = {"role": "user", "content": "hi"}
        tools = completions(client, messages=[hi], tools=[0] * 129).json()["error"]
        assert tools["details"] == {"tools": ["Ensure this field has no more than 128 elements."]}
        calls = completions(client, messages=[hi, {"role": "assistant", "tool_calls": [0, 1, 2]}]).json()["error"]
        assert calls["details"] == {
            "messages": {"1": {"tool_calls": {"0": ['Expected a dictionary of items but got type "int".']}}}
        }

    def test_an_error_in_the_stream_has_the_v1_error_format(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        response = completions(client, messages=[{"role": "user", "content": "hi #broken"}], stream=True)
        lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2].removeprefix("data: "))["error"]
        assert error == {"code": "upstream_error", "message": error["message"], "details": {}, "type": "api_error",
                         "param": None}  # fmt: skip

    def test_an_options_error_follows_the_requests_language(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="zh-hans", **bearer(api_key_secret(tenant_alpha, "user")))
        for option, value in (("n", 3), ("stop", 7), ("tool_choice", "auto")):
            error = completions(client, messages=[{"role": "user", "content": "hi"}], **{option: value}).json()["error"]
            assert any("\u4e00" <= ch <= "\u9fff" for ch in error["details"][option][0]), error

    def test_a_named_tool_choice_must_name_one_of_the_requests_tools(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        choice = {"type": "function", "function": {"name": "get_rainfall"}}
        response = completions(
            client, messages=[{"role": "user", "content": QUESTION}], tools=TOOLS, tool_choice=choice
        )
        assert response.status_code == 400
        assert "tool_choice" in response.json()["error"]["details"]

    def test_good_options_reach_the_model_server(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        body = completions(
            client, messages=[{"role": "user", "content": "hello"}], max_tokens=3, temperature=0, top_p=1, seed=7,
            stop=["\n\n"], n=1, response_format={"type": "text"}, user="someone", store=False,
        ).json()  # fmt: skip
        assert body["choices"][0]["finish_reason"] == "length"  # the demo model cuts at max_tokens
        assert len(body["choices"][0]["message"]["content"]) <= 3 * 4
        chosen = {"type": "function", "function": {"name": "get_water_levels"}}
        body = completions(client, messages=[{"role": "user", "content": QUESTION}], tools=TOOLS, tool_choice=chosen)
        assert body.json()["choices"][0]["finish_reason"] == "tool_calls"

    def test_options_that_ask_for_nothing_pass_and_passed_options_reach_the_model_server(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """parallel_tool_calls (with the request's tools) and reasoning_effort were dropped; OpenAI's defaults of the
        options HydroNet does not honour are no reason to refuse a request."""
        bodies: list[dict[str, Any]] = []

        def answer(request: bytes) -> bytes:
            bodies.append(json.loads(request))
            return sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]})

        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(answer, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(
                client, messages=[HI], tools=TOOLS, parallel_tool_calls=False, reasoning_effort="low",
                logprobs=False, top_logprobs=None, logit_bias={}, modalities=["text"], service_tier="auto",
                audio=None, prediction=None, functions=None, function_call=None,
            )  # fmt: skip
        assert response.status_code == 200, response.content
        (sent,) = bodies
        assert (sent["parallel_tool_calls"], sent["reasoning_effort"]) == (False, "low")
        assert not {"logprobs", "logit_bias", "modalities", "service_tier"} & set(sent)

    @pytest.mark.parametrize("stream", [True, False])
    def test_the_answer_is_every_rounds_text_streamed_or_not(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any, stream: bool
    ) -> None:
        """Streamed, the text before a tool call came first and ran into the answer after it; whole, only the
        answer after it came: two answers to one question."""
        call = {"index": 0, "id": "call_0", "function": {"name": "hydrology__list_stations", "arguments": "{}"}}

        def answer(request: bytes) -> bytes:
            if any(message["role"] == "tool" for message in json.loads(request)["messages"]):
                return sse_body({"choices": [{"index": 0, "delta": {"content": "Three stations."},
                                              "finish_reason": "stop"}]})  # fmt: skip
            return sse_body(
                {"choices": [{"index": 0, "delta": {"content": "Let me look."}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]},
            )

        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(answer, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(client, messages=[{"role": "user", "content": "Stations?"}], stream=stream)
            if stream:
                deltas = [chunk["choices"][0]["delta"] for chunk in stream_chunks(response)]
                content = "".join(delta.get("content", "") for delta in deltas)
            else:
                content = response.json()["choices"][0]["message"]["content"]
        assert content == "Let me look.\n\nThree stations."

    @pytest.mark.parametrize("stream", [True, False])
    def test_the_models_refusal_is_openais_refusal(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        """It was dropped: an answer of no content, and nothing said why."""
        body = sse_body(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "refusal": "I can't "}}]},
            {"choices": [{"index": 0, "delta": {"refusal": "help with that."}, "finish_reason": "stop"}]},
        )
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(client, messages=[HI], stream=stream, response_format={"type": "json_object"})
            if stream:
                deltas = [chunk["choices"][0]["delta"] for chunk in stream_chunks(response)]
                said = (
                    "".join(d.get("content") or "" for d in deltas),
                    "".join(d.get("refusal") or "" for d in deltas),
                )
            else:
                message = response.json()["choices"][0]["message"]
                said = (message["content"], message["refusal"])
        assert said == ("" if stream else None, "I can't help with that.")

    def test_only_the_first_choice_of_the_model_servers_is_read(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """A server that sent two choices (HydroNet asks for one) had them run together into one answer."""
        body = sse_body({"choices": [{"index": 0, "delta": {"content": "A"}}, {"index": 1, "delta": {"content": "B"}}]},
                        {"choices": [{"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]},
                        {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]})  # fmt: skip
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            choice = completions(client, messages=[HI]).json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("Aa", "stop")

    def test_every_chunk_of_a_completion_has_its_created(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each chunk said the second it was written; OpenAI's say the completion's."""
        from apps.openai_api import apis

        seconds = iter(range(1_800_000_000, 1_900_000_000))
        monkeypatch.setattr(apis.time, "time", lambda: next(seconds))
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        chunks = stream_chunks(completions(client, messages=[HI], stream=True))
        assert len(chunks) > 2
        assert len({chunk["created"] for chunk in chunks}) == 1

    @pytest.mark.parametrize("role", ["system", "developer"])
    def test_the_clients_own_instructions_replace_hydronets(
        self, tenant_alpha: TenantFixture, model_requests: list[list[dict[str, Any]]], role: str
    ) -> None:
        """A developer message, OpenAI's newer name for a system one, came after HydroNet's system prompt."""
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        assert completions(client, messages=[{"role": role, "content": "Be brief."}, HI]).status_code == 200
        assert [message["role"] for message in model_requests[-1]] == [role, "user"]

    @pytest.mark.parametrize("body", ["null", "[]"])
    def test_a_problem_of_the_whole_body_names_no_param(self, tenant_alpha: TenantFixture, body: str) -> None:
        """param was "non_field_errors", which no request has."""
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        error = client.post("/v1/chat/completions", body, content_type="application/json").json()["error"]
        assert error["param"] is None
        assert error["message"].startswith("The input is not valid. "), error["message"]
        assert len(error["message"]) > len("The input is not valid. ")

    @pytest.mark.parametrize("tools", [None, TOOLS], ids=["workspace-tools", "own-tools"])
    def test_a_completion_past_the_most_seconds_is_stopped(
        self, tenant_alpha: TenantFixture, settings: Any, tools: Any
    ) -> None:
        settings.CHAT_TURN_MAX_SECONDS = 1
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        started = time.monotonic()
        response = completions(client, messages=[{"role": "user", "content": "hi #long"}], tools=tools)
        assert time.monotonic() - started < 2.5  # "#long" streams for about 3 s
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["message"] == "The answer took longer than 1 s, the most a turn may take; it was stopped there."

    def test_options_apply_to_every_round_of_a_turn_with_the_tenants_tools(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        body = completions(client, messages=[{"role": "user", "content": QUESTION}], max_tokens=5).json()
        assert body["choices"][0]["finish_reason"] == "length"  # the answer after the tool call, cut too
        assert len(body["choices"][0]["message"]["content"]) <= 5 * 4
        assert body["usage"]["completion_tokens"] > 5  # the tool call's round, then the answer's

    def test_a_stream_ends_with_the_usage_only_when_asked(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))

        def chunks(**extra: Any) -> list[dict[str, Any]]:
            response = completions(client, messages=[{"role": "user", "content": "hi"}], stream=True, **extra)
            lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
            assert lines[-1] == "data: [DONE]"
            return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]

        plain = chunks()
        assert all(chunk["choices"] for chunk in plain)  # OpenAI's own clients read choices[0] of each
        assert all("usage" not in chunk for chunk in plain)
        asked = chunks(stream_options={"include_usage": True})
        assert asked[-1]["choices"] == []
        assert asked[-1]["usage"]["total_tokens"] > 0
        assert all(chunk["choices"] for chunk in asked[:-1])

    def test_the_schema_documents_every_option_though_a_request_builds_only_its_own(
        self, tenant_alpha: TenantFixture
    ) -> None:
        from apps.openai_api.apis import _OPTION_FIELDS, ChatCompletionsApi

        schemas = tenant_alpha.client().get("/api/schema/?format=json").json()["components"]["schemas"]
        documented = set(schemas["ChatCompletionsInputRequest"]["properties"])
        assert documented >= _OPTION_FIELDS | {"model", "messages", "stream", "tools"}
        given = ChatCompletionsApi.InputSerializer(data={"messages": [], "temperature": 1})
        assert set(given.fields) == {"model", "messages", "stream", "tools", "temperature"}

    @pytest.mark.parametrize("status", [400, 413, 422])
    def test_a_request_the_model_server_refuses_is_a_400_in_its_words(
        self, tenant_alpha: TenantFixture, settings: Any, status: int
    ) -> None:
        """Too long for the model's context, say: the client's request, not a failure a retry would mend."""
        said = json.dumps({"error": {"message": "This model's maximum context length is 8192 tokens."}}).encode()
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(said, status=status, content_type="application/json") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            settings.LLM_MAX_RETRIES = 0
            whole = completions(client, messages=[{"role": "user", "content": "hi"}])
        assert whole.status_code == 400, whole.content
        error = whole.json()["error"]
        assert error["code"] == "upstream_rejected"
        assert error["type"] == "invalid_request_error"
        assert error["message"] == (
            f"The model server answered {status}: This model's maximum context length is 8192 tokens."
        )
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # given back

    def test_a_model_server_that_fails_on_its_side_is_still_a_502(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        for status in (401, 404, 429, 503):
            with canned_server(b'{"error": {"message": "no"}}', status=status, content_type="application/json") as root:
                settings.LLM_BASE_URL = f"{root}/v1"
                settings.LLM_MAX_RETRIES = 0
                answer = completions(client, messages=[{"role": "user", "content": "hi"}])
            assert (answer.status_code, answer.json()["error"]["code"]) == (502, "upstream_error"), status

    def test_an_upstream_failure_is_a_502(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        response = completions(client, messages=[{"role": "user", "content": "hi #error500"}])
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"

    def test_an_impossible_token_count_is_a_502_and_no_call(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": -1}},
        ]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            whole = completions(client, messages=[{"role": "user", "content": "hi"}])
            streamed = completions(client, stream=True, messages=[{"role": "user", "content": "hi"}])
        assert whole.status_code == 502
        assert whole.json()["error"]["message"] == (
            "The model server reported an impossible token count (completion_tokens: -1)."
        )
        assert b"impossible token count" in b"".join(streamed.streaming_content)
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # both calls were given back

    @pytest.mark.parametrize("stream", [True, False])
    def test_surrogates_from_the_model_are_whole_characters(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool
    ) -> None:
        """A lone surrogate (``json.loads`` keeps "\\ud800" as one) could not be encoded: the stream died without
        an error chunk, and a whole answer was a 500 after its call was recorded. A pair may come split."""
        body = sse_body({"choices": [{"index": 0, "delta": {"content": "Hi \ud83d"}}]},
                        {"choices": [{"index": 0, "delta": {"content": "\ude00 \ud800!"}}]},
                        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop\udc00"}]})  # fmt: skip
        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(client, messages=[{"role": "user", "content": "hi"}], stream=stream)
            if stream:
                lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
                assert lines[-1] == "data: [DONE]"
                choices = [json.loads(line.removeprefix("data: "))["choices"][0] for line in lines[:-1]]
                content = "".join(choice["delta"].get("content", "") for choice in choices)
                finish = choices[-1]["finish_reason"]
            else:
                assert response.status_code == 200, response.content
                choice = response.json()["choices"][0]
                content, finish = choice["message"]["content"], choice["finish_reason"]
        assert (content, finish) == ("Hi \U0001f600 \ufffd!", "stop\ufffd")

    @pytest.mark.parametrize("stream", [True, False])
    @pytest.mark.parametrize(
        "chunk", ['{"choices": [{"delta": {"tool_calls": [{"index": Infinity}]}}]}', "[" * 2000 + "]" * 2000],
        ids=["infinity", "nested"],
    )  # fmt: skip
    def test_a_chunk_that_is_no_chunk_is_a_502_and_no_call(
        self, tenant_alpha: TenantFixture, settings: Any, stream: bool, chunk: str
    ) -> None:
        """int(inf) raised OverflowError, and a chunk nested past the parser's depth RecursionError: a 500, or a
        stream cut off without an error chunk, and the call was charged (0 tokens) instead of given back."""
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        body = sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, chunk)
        with canned_server(body, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            response = completions(client, messages=[{"role": "user", "content": "hi"}], stream=stream)
            if stream:
                lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
        if stream:
            assert lines[-1] == "data: [DONE]"
            error = json.loads(lines[-2].removeprefix("data: "))["error"]
        else:
            assert response.status_code == 502
            error = response.json()["error"]
        assert (error["code"], error["message"]) == (
            "upstream_error", "The model server sent a part of its answer that is not a chat completion chunk."
        )  # fmt: skip
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0  # given back

    def test_a_turn_that_fails_after_charged_rounds_tells_clients_not_to_retry(
        self, tenant_alpha: TenantFixture, hydrology: Any, settings: Any
    ) -> None:
        """openai's clients retry a 502 twice: each retry ran the turn again, and charged its rounds again."""
        asked = {"index": 0, "id": "c1", "function": {"name": "hydrology__list_stations", "arguments": "{}"}}
        tool_round = sse_body(
            {"choices": [{"index": 0, "delta": {"tool_calls": [asked]}, "finish_reason": "tool_calls"}]}
        )

        def answer(request: bytes) -> bytes:
            answered = any(message["role"] == "tool" for message in json.loads(request)["messages"])
            return b"data: {not json\n\n" if answered else tool_round

        client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
        with canned_server(answer, content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            failed = completions(client, messages=[{"role": "user", "content": "the stations?"}])
        assert failed.status_code == 502
        assert failed["x-should-retry"] == "false"
        with schema_context(tenant_alpha.tenant.schema_name):
            assert sorted(UsageEvent.objects.values_list("kind", flat=True)) == ["model", "tool"]  # the first round
        with canned_server(b"data: {not json\n\n", content_type="text/event-stream") as root:
            settings.LLM_BASE_URL = f"{root}/v1"
            given_back = completions(client, messages=[{"role": "user", "content": "the stations?"}])
        assert given_back.status_code == 502
        assert "x-should-retry" not in given_back  # nothing was charged: a retry may try again


# --- Over real HTTP, through gunicorn ------------------------------------------------------


@pytest.fixture
def live_key(django_db_blocker: Any, tenant_alpha: TenantFixture) -> Iterator[str]:
    """A committed API key of tenant alpha, for the server process to see."""
    with django_db_blocker.unblock():
        secret = api_key_secret(tenant_alpha, "user")
    yield secret
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        ApiKey.objects.filter(prefix=secret[3:15]).delete()
        connection.set_schema_to_public()


def openai_client(web_server: WebServer, key: str) -> openai.OpenAI:
    # Python cannot resolve *.localhost: connect to 127.0.0.1 and name the tenant in the Host header.
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{web_server.port}/v1",
        api_key=key,
        default_headers={"Host": f"alpha.localhost:{web_server.port}"},
        http_client=httpx2.Client(timeout=30),
        max_retries=0,
    )


def test_the_official_openai_client(web_server: WebServer, live_key: str) -> None:
    client = openai_client(web_server, live_key)
    assert [m.id for m in client.models.list()] == ["hydronet-demo"]
    assert client.models.retrieve("hydronet-demo").id == "hydronet-demo"
    whole = client.chat.completions.create(model="hydronet-demo", messages=[{"role": "user", "content": "hello"}])
    assert "offline demo model" in (whole.choices[0].message.content or "")
    assert whole.usage is not None
    assert whole.usage.total_tokens > 0
    stream = client.chat.completions.create(
        model="hydronet-demo", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices[0].delta.content]  # as OpenAI's docs
    assert len(pieces) > 3
    assert "offline demo model" in "".join(pieces)
    with pytest.raises(openai.AuthenticationError):
        openai_client(web_server, "hn_not_a_key_at_all_xxxxxxxxxxxx").models.list()
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="hydronet-demo", messages=[{"role": "user", "content": "hi"}], top_p=3)
    assert (refused.value.code, refused.value.type, refused.value.param) == ("invalid_input", "invalid_request_error",
                                                                           "top_p")  # fmt: skip


def test_a_client_gone_while_the_model_is_asked_still_has_its_call_recorded_and_upstream_cancelled(
    web_server: WebServer, live_key: str, demo_model_url: str, django_db_blocker: Any, tenant_alpha: TenantFixture
) -> None:
    """The client hangs up before the model server answers (#slow: 3 s): the web server finds it gone when it
    writes the first chunk and closes the stream there, before the turn's own stream was read."""
    from tests.chat.test_streaming_live import demo_stats

    def ledger_rows() -> int:
        with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
            count = UsageEvent.objects.count()
            connection.set_schema_to_public()
        return count

    rows, cancelled = ledger_rows(), demo_stats(demo_model_url)["streams_cancelled"]
    body = {"stream": True, "messages": [{"role": "user", "content": "hi #slow #long"}]}
    headers = {"Host": f"alpha.localhost:{web_server.port}", "Authorization": f"Bearer {live_key}"}
    with pytest.raises(httpx2.ReadTimeout), httpx2.Client(timeout=0.5) as client:
        client.post(f"http://127.0.0.1:{web_server.port}/v1/chat/completions", json=body, headers=headers)
    deadline = time.monotonic() + 15
    while demo_stats(demo_model_url)["streams_cancelled"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo_stats(demo_model_url)["streams_cancelled"] == cancelled + 1  # the model server was told
    deadline = time.monotonic() + 5
    while ledger_rows() == rows and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ledger_rows() == rows + 1  # charged when the model was asked, and recorded: Redis and the ledger agree


def test_the_official_openai_client_does_not_retry_a_turn_that_was_charged(tmp_path: Path, live_key: str) -> None:
    """A turn that recorded a round, then failed (the model asked for a tool though none was offered): openai's
    client, with its default two retries, ran it three times, and each time the round was charged."""
    asked = {"index": 0, "id": "c1", "function": {"name": "hydrology__list_stations", "arguments": "{}"}}
    requests: list[bytes] = []

    def answer(request: bytes) -> bytes:
        requests.append(request)
        return sse_body({"choices": [{"index": 0, "delta": {"tool_calls": [asked]}, "finish_reason": "tool_calls"}]})

    with (
        canned_server(answer, content_type="text/event-stream") as root,
        serve(tmp_path, f"{root}/v1", workers=1, threads=2) as server,
    ):
        client = openai_client(server, live_key).with_options(max_retries=2)  # openai's default
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="hydronet-demo", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_error"
    assert len(requests) == 1


def test_the_official_openai_client_reads_a_reasoning_models_thinking(tmp_path: Path, live_key: str) -> None:
    """DeepSeek-R1 and Qwen3 stream their thinking as ``reasoning_content``, and clients built for DeepSeek's API
    show it: /v1 dropped it. It comes as DeepSeek's does, a delta per piece as it came and in the message, in
    fields openai's client keeps (``model_extra``)."""
    thoughts = ["The user greets; ", "answer briefly."]
    body = sse_body(
        *[
            {"choices": [{"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None}]}
            for piece in thoughts
        ],
        {"choices": [{"index": 0, "delta": {"content": "Hello!"}, "finish_reason": "stop"}]},
    )
    with (
        canned_server(body, content_type="text/event-stream") as root,
        serve(tmp_path, f"{root}/v1", workers=1, threads=2) as server,
    ):
        client = openai_client(server, live_key)
        asked: Any = {"model": "hydronet-demo", "messages": [{"role": "user", "content": "hi"}]}
        whole = client.chat.completions.create(**asked)
        chunks = list(client.chat.completions.create(**asked, stream=True))
    message = whole.choices[0].message
    assert (message.content, getattr(message, "reasoning_content", None)) == ("Hello!", "".join(thoughts))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert [getattr(delta, "reasoning_content", None) for delta in deltas if delta.model_extra] == thoughts
    assert "".join(delta.content or "" for delta in deltas) == "Hello!"
    assert chunks[-1].choices[0].finish_reason == "stop"


class TestAKeyRevokedMidTurn:
    """An admin revokes the key while its turn runs (the model answering, then asking for a tool): openai's client
    is told why, in an error it raises, and does not retry, for the model's round was charged."""

    # The model begins its answer, waits there for the test (the key is revoked), then asks for a tool.
    ANSWERS = [[{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me look. "}}]},
                tool_call_chunk("hydrology__list_stations")]]  # fmt: skip

    @staticmethod
    def revoke(django_db_blocker: Any, tenant: TenantFixture, secret: str) -> None:
        from apps.accounts.services import api_key_revoke
        from apps.core.actors import Actor

        with django_db_blocker.unblock(), schema_context(tenant.tenant.schema_name):
            key = ApiKey.objects.get(prefix=secret[3:15])
            api_key_revoke(actor=Actor(user=admin_of(tenant)), api_key=key)
            connection.set_schema_to_public()

    def test_streamed_the_client_raises_an_api_error_with_the_code(
        self, tmp_path: Path, live_key: str, live_hydrology: Any, tenant_alpha: TenantFixture, django_db_blocker: Any
    ) -> None:
        with (
            held_model_server(self.ANSWERS, hold=0) as model,
            serve(tmp_path, model.url, workers=1, threads=2) as server,
        ):
            client = openai_client(server, live_key).with_options(max_retries=2)  # openai's default
            stream = client.chat.completions.create(
                model="hydronet-demo", messages=[{"role": "user", "content": "the stations?"}], stream=True
            )
            said = []

            def read() -> None:
                for chunk in stream:
                    said.append(chunk.choices[0].delta.content)
                    if chunk.choices[0].delta.content:
                        self.revoke(django_db_blocker, tenant_alpha, live_key)
                        model.go_on.set()

            with pytest.raises(openai.APIError) as stopped:
                read()
        assert "Let me look. " in said
        assert type(stopped.value) is openai.APIError  # from the error chunk: no status, as the stream began 200
        assert stopped.value.code == "access_changed"
        assert (
            stopped.value.message == "在撰写此回复期间，您对本工作区的访问权限已变更，因此回复已停止。"
        )  # no Accept-Language
        assert len(model.requests) == 1
        assert self.ledger(tenant_alpha, django_db_blocker, live_key) == ["model"]

    def test_not_streamed_the_client_raises_permission_denied_and_does_not_retry(
        self, tmp_path: Path, live_key: str, live_hydrology: Any, tenant_alpha: TenantFixture, django_db_blocker: Any
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with (
            held_model_server(self.ANSWERS, hold=0) as model,
            serve(tmp_path, model.url, workers=1, threads=2) as server,
        ):
            client = openai_client(server, live_key).with_options(max_retries=2)  # openai's default
            with ThreadPoolExecutor(1) as pool:
                asked = pool.submit(
                    lambda: client.chat.completions.create(
                        model="hydronet-demo", messages=[{"role": "user", "content": "the stations?"}]
                    )
                )
                assert model.asked.wait(30)
                self.revoke(django_db_blocker, tenant_alpha, live_key)
                model.go_on.set()
                with pytest.raises(openai.PermissionDeniedError) as refused:
                    asked.result(30)
        assert refused.value.status_code == 403
        assert refused.value.code == "access_changed"
        assert refused.value.response.headers["x-should-retry"] == "false"
        assert len(model.requests) == 1  # not asked again: the client did not retry
        assert self.ledger(tenant_alpha, django_db_blocker, live_key) == ["model"]

    @staticmethod
    def ledger(tenant: TenantFixture, django_db_blocker: Any, secret: str) -> list[str]:
        """The key's calls in the ledger."""
        with django_db_blocker.unblock(), schema_context(tenant.tenant.schema_name):
            key = ApiKey.objects.get(prefix=secret[3:15])
            kinds = list(UsageEvent.objects.filter(api_key_id=key.pk).order_by("id").values_list("kind", flat=True))
            connection.set_schema_to_public()
        return kinds
