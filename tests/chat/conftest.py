"""Chat tests talk to the offline demo servers over real HTTP on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.core.actors import Actor
from tests.conftest import TenantFixture, admin_of, bearer, jwt_pair, make_member


@pytest.fixture(autouse=True)
def _model_server(settings: Any, demo_model_url: str) -> None:
    settings.LLM_BASE_URL = demo_model_url
    settings.LLM_MODELS = ["hydronet-demo"]
    settings.LLM_API_KEY = "test"
    settings.LLM_MAX_RETRIES = 0


@pytest.fixture
def hydrology(tenant_alpha: TenantFixture, demo_mcp_url: str) -> Any:
    """The demo MCP server registered (and tested, so its tools are cached) in tenant alpha."""
    from apps.mcp.services import mcp_service_create, mcp_service_test

    with schema_context(tenant_alpha.tenant.schema_name):
        actor = Actor(user=admin_of(tenant_alpha))
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
