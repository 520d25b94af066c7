"""/v1 as the tools built for OpenAI's API use it (openai's clients, browser apps, LangChain and the like)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from django.test import Client

from tests.chat.test_openai_api import completions, stream_chunks
from tests.conftest import TenantFixture, api_key_secret, bearer
from tests.processes import canned_server, sse_body

HI = {"role": "user", "content": "hi"}
THOUGHTS = ["The user greets; ", "I should answer"]


@pytest.mark.django_db
@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_that_is_only_reasoning_is_given_once(tenant_alpha: TenantFixture, settings: Any, stream: bool) -> None:
    """A reasoning model cut off while thinking (finish_reason ``length``) said nothing but its reasoning: the chat
    shows that as the answer, and /v1 gave it twice, as ``reasoning_content`` and again as ``content``, so a
    client built for DeepSeek's API showed the thinking and then the same text as the answer. /v1 gives what the
    model server gave, as DeepSeek's API does: the reasoning, and no content."""
    body = sse_body(
        *[{"choices": [{"index": 0, "delta": {"reasoning_content": t}, "finish_reason": None}]} for t in THOUGHTS],
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    )
    client = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, "user")))
    with canned_server(body, content_type="text/event-stream") as root:
        settings.LLM_BASE_URL = f"{root}/v1"
        response = completions(client, messages=[HI], max_tokens=8, stream=stream)
    assert response.status_code == 200
    if not stream:
        choice = response.json()["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": None, "refusal": None,
                                     "reasoning_content": "".join(THOUGHTS)}  # fmt: skip
        assert choice["finish_reason"] == "length"
        return
    deltas = [chunk["choices"][0] for chunk in stream_chunks(response) if chunk["choices"]]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == ""
    assert [d["delta"]["reasoning_content"] for d in deltas if "reasoning_content" in d["delta"]] == THOUGHTS
    assert deltas[-1]["finish_reason"] == "length"


PREFLIGHT: dict[str, Any] = {
    "HTTP_ORIGIN": "https://chat.example.org",
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization,content-type,x-stainless-os",
}


@pytest.mark.django_db
class TestCrossOrigin:
    """Browser apps (Open WebUI's direct connections, openai's JavaScript client with dangerouslyAllowBrowser) call
    /v1 from their own origin: the browser first asks, without the key, whether it may (a preflight). That was a
    401, so no page could call /v1 at all. /v1 takes API keys only, never cookies: any origin may call it."""

    def test_a_preflight_is_allowed_without_the_key(self, tenant_alpha: TenantFixture) -> None:
        response = tenant_alpha.client().options("/v1/chat/completions", **PREFLIGHT)
        assert response.status_code == 204
        assert response["Access-Control-Allow-Origin"] == "*"
        assert response["Access-Control-Allow-Headers"] == "authorization,content-type,x-stainless-os"
        assert "POST" in response["Access-Control-Allow-Methods"]
        assert "Access-Control-Allow-Credentials" not in response

    def test_answers_errors_and_streams_are_readable_by_the_page(self, tenant_alpha: TenantFixture) -> None:
        origin = {"HTTP_ORIGIN": "https://chat.example.org"}
        client = tenant_alpha.client(**origin, **bearer(api_key_secret(tenant_alpha, "user")))
        answers = [
            client.get("/v1/models"),
            tenant_alpha.client(**origin).get("/v1/models"),  # 401
            completions(client, messages=[HI], n=2),  # 400
            completions(client, messages=[HI], stream=True),
        ]
        assert [a.status_code for a in answers] == [200, 401, 400, 200]
        assert all(a["Access-Control-Allow-Origin"] == "*" for a in answers)
        assert all("X-RateLimit-Remaining" in a["Access-Control-Expose-Headers"] for a in answers)
        assert stream_chunks(answers[3])

    def test_the_rest_of_the_api_stays_same_origin(self, tenant_alpha: TenantFixture) -> None:
        """It takes a login's session cookie: another origin's page must not read it."""
        response = tenant_alpha.client().options("/api/models", **PREFLIGHT)
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Origin" not in tenant_alpha.client().get("/api/models")


@pytest.mark.django_db
def test_a_compressed_body_is_refused_as_such(tenant_alpha: TenantFixture) -> None:
    """A client that gzips its requests was told its body "is not valid JSON", and looked for a fault in its JSON."""
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
    body = gzip.compress(json.dumps({"messages": [HI]}).encode())
    response = client.post("/v1/chat/completions", body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 415
    assert response.json()["error"]["message"] == "Send the body uncompressed: Content-Encoding “gzip” is not accepted."
    identity = client.post("/v1/chat/completions", {"messages": [HI]}, content_type="application/json",
                           HTTP_CONTENT_ENCODING="identity")  # fmt: skip
    assert identity.status_code == 200


@pytest.mark.django_db
class TestWrongPaths:
    """The most common mistake in setting up a client is its base URL: the host without /v1 (Open WebUI, LibreChat
    and Dify take it as typed), or /v1 twice. The first got the HTML page of an unknown address, which openai's
    clients show whole as the error's message; the second "Not found." and no word of what is found."""

    def test_openai_paths_without_v1_say_where_the_api_is(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        for answer in (completions_at(client, "/chat/completions"), client.get("/models")):
            assert (answer.status_code, answer["Content-Type"]) == (404, "application/json")
            error = answer.json()["error"]
            assert (error["code"], error["type"]) == ("not_found", "invalid_request_error")
            assert error["message"].endswith("take the base URL with /v1 at its end: http://alpha.localhost/v1")

    def test_an_unknown_v1_path_names_itself_and_the_paths_there_are(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, "user")))
        answer = completions_at(client, "/v1/v1/chat/completions")
        assert answer.status_code == 404
        assert answer.json()["error"]["message"] == (
            "Nothing answers POST /v1/v1/chat/completions. /v1 answers GET /v1/models, GET /v1/models/{model} and "
            "POST /v1/chat/completions."
        )
        assert client.get("/api/nothing").json()["error"]["message"] == "Not found."


def completions_at(client: Client, path: str) -> Any:
    return client.post(path, {"messages": [HI]}, content_type="application/json")
