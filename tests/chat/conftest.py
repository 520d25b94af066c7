"""Chat tests talk to the offline demo servers over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.core.actors import Actor
from tests.conftest import TenantFixture, admin_of, bearer, jwt_pair, make_member
from tests.processes import sse_body


@pytest.fixture(autouse=True)
def _model_server(settings: Any, demo_model_url: str) -> None:
    settings.LLM_BASE_URL = demo_model_url
    settings.LLM_MODELS = ["hydronet-demo"]
    settings.LLM_API_KEY = "test"
    settings.LLM_MAX_RETRIES = 0


@pytest.fixture
def hydrology(tenant_alpha: TenantFixture, demo_mcp_url: str) -> Any:
    """The demo MCP server registered (and tested, so its tools are cached) in tenant alpha."""
    return registered_hydrology(tenant_alpha, demo_mcp_url)


def registered_hydrology(tenant: TenantFixture, demo_mcp_url: str) -> Any:
    from apps.mcp.services import mcp_service_create, mcp_service_test

    with schema_context(tenant.tenant.schema_name):
        actor = Actor(user=admin_of(tenant))
        service = mcp_service_create(actor=actor, name="Hydrology", url=demo_mcp_url, slug="hydrology")
        mcp_service_test(actor=actor, service=service)
        service.refresh_from_db()
        return service


def member_client(tenant: TenantFixture, role: str = "user") -> Any:
    member = make_member(tenant, role)
    client = tenant.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant, member)["access"]))
    client.member = member  # type: ignore[attr-defined]
    return client


@pytest.fixture
def model_requests(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """The messages of every model request a turn sends, in order; the requests still go to the demo model."""
    from apps.chat import engine

    sent: list[list[dict[str, Any]]] = []
    real_open_stream = engine.open_stream

    def spy(server: Any, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        sent.append([dict(m) for m in messages])
        return real_open_stream(server, model, messages, *args, **kwargs)

    monkeypatch.setattr(engine, "open_stream", spy)
    return sent


def many_calls_model(count: int, sent: list[list[dict[str, Any]]]) -> Callable[[bytes], bytes]:
    """A model server's answers, for ``canned_server``: ``count`` calls of hydrology's ``list_stations`` in one
    reply (ids ``call_0``...), then "Done." once a request brings tool results. Each request's messages go to
    ``sent``."""
    calls = [{"index": n, "id": f"call_{n}", "function": {"name": "hydrology__list_stations", "arguments": "{}"}}
             for n in range(count)]  # fmt: skip

    def answer(request: bytes) -> bytes:
        messages = json.loads(request)["messages"]
        sent.append(messages)
        if any(message["role"] == "tool" for message in messages):
            return sse_body({"choices": [{"index": 0, "delta": {"content": "Done."}, "finish_reason": "stop"}]})
        return sse_body({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": "tool_calls"}]})

    return answer


def charged_tool_calls(tenant: TenantFixture) -> int:
    """The tool calls charged in ``tenant`` (its usage events not yet flushed)."""
    from django.db.models import Sum

    from apps.usage.models import UsageEvent

    with schema_context(tenant.tenant.schema_name):
        return int(UsageEvent.objects.filter(kind="tool").aggregate(n=Sum("calls"))["n"] or 0)


@pytest.fixture
def live_hydrology(django_db_blocker: Any, tenant_alpha: TenantFixture, demo_mcp_url: str) -> Iterator[Any]:
    """``hydrology``, committed, for a web server process to see; removed again after the test."""
    from apps.mcp.services import mcp_service_delete

    with django_db_blocker.unblock():
        service = registered_hydrology(tenant_alpha, demo_mcp_url)
    yield service
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        mcp_service_delete(actor=Actor(label="tests"), service=service)


def tool_call_chunk(name: str, arguments: str = "{}", call_id: str = "call_0") -> dict[str, Any]:
    """A model's streamed reply that asks for one tool call, as one chunk."""
    call = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}


def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
