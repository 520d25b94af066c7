"""/v1 as the tools built for OpenAI's API use it (openai's clients, browser apps, LangChain and the like)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.conftest import TenantFixture, api_key_secret, bearer
from tests.processes import canned_server, sse_body

HI = {"role": "user", "content": "hi"}
THOUGHTS = ["The user greets; ", "I should answer"]


def completions(client: Client, **body: Any) -> Any:
    return client.post("/v1/chat/completions", body, content_type="application/json")


def stream_chunks(response: Any) -> list[dict[str, Any]]:
    lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


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

