"""Tools whose names clash once cleaned up for the model, listed twice, or too many for one request.

The server is ``tests.chat.awkward_mcp``'s ``/clash/mcp``: ``a.b``, ``a_b``, ``a b``, ``dup`` twice,
``get.water_levels`` and ``get_water_levels``, each answering ``ran <its name>``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.chat.engine import bind_tools, run_mcp_tool
from apps.chat.services import tools_for
from apps.core.actors import Actor
from apps.mcp.models import McpService
from apps.mcp.services import mcp_service_create, mcp_service_test
from tests.accounts.test_pages import logged_in
from tests.chat.conftest import member_client
from tests.chat.test_chat_api import new_conversation, post, sse, stored
from tests.chat.test_services_and_providers import admin, send
from tests.conftest import TEST_ACTOR, TenantFixture, admin_of

pytestmark = pytest.mark.django_db

OPENAI_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
EXPOSED = {
    "a.b": "clash__a_b",
    "a_b": "clash__a_b_2",
    "a b": "clash__a_b_3",
    "dup": "clash__dup",
    "get.water_levels": "clash__get_water_levels",
    "get_water_levels": "clash__get_water_levels_2",
}


@pytest.fixture
def clash(tenant_alpha: TenantFixture, awkward_mcp_url: str) -> Any:
    """The clashing server registered as ``clash`` in tenant alpha, its tools loaded."""
    with schema_context(tenant_alpha.tenant.schema_name):
        actor = Actor(user=admin_of(tenant_alpha))
        url = awkward_mcp_url.removesuffix("/mcp") + "/clash/mcp"
        service = mcp_service_create(actor=actor, name="Clash", url=url, slug="clash")
        mcp_service_test(actor=actor, service=service)
        service.refresh_from_db()
        return service


def test_each_tool_is_offered_once_under_a_name_of_its_own_and_runs_itself(
    tenant_alpha: TenantFixture, clash: Any
) -> None:
    """Three functions all named clash__a_b were offered, and each call ran ``a b``; ``dup`` was offered twice."""
    with schema_context(tenant_alpha.tenant.schema_name):
        tools = tools_for(Actor(user=admin_of(tenant_alpha)))
        names = [tool.openai_spec()["function"]["name"] for tool in tools]
        assert dict(zip([tool.tool_name for tool in tools], names, strict=True)) == EXPOSED
        assert len(names) == len(set(names)) == len(EXPOSED)
        assert all(OPENAI_FUNCTION_NAME.fullmatch(name) for name in names)
        ran = {tool.exposed_name: run_mcp_tool(tool, {}).text for tool in tools}
    assert ran == {exposed: f"ran {name}" for name, exposed in EXPOSED.items()}


def test_a_call_runs_the_tool_its_name_stands_for_and_says_which(tenant_alpha: TenantFixture, clash: Any) -> None:
    """The demo model calls ``clash__get_water_levels``, which stands for ``get.water_levels``, the first
    listed: the call runs that tool, and the events and the stored message name it as its server does."""
    client = member_client(tenant_alpha)
    conversation = new_conversation(client)
    events = sse(post(client, f"/api/conversations/{conversation}/messages",
                      {"content": "站点 S001 最近的水位是多少?", "stream": True}))  # fmt: skip
    call, result = dict(events)["tool_call"], dict(events)["tool_result"]
    assert (call["name"], call["service"], call["tool"]) == ("clash__get_water_levels", "clash", "get.water_levels")
    assert (result["tool"], result["result"], result["is_error"]) == ("get.water_levels", "ran get.water_levels", False)
    _user, asked, tool, _final = stored(tenant_alpha, conversation)
    assert asked.tool_calls[0]["name"] == "clash__get_water_levels"  # as the model knows it, for the next turn
    assert (tool.service, tool.tool) == ("clash", "get.water_levels")


def test_disabled_tools_name_the_servers_tools_and_leave_the_others_names_alone(
    tenant_alpha: TenantFixture, clash: Any
) -> None:
    """The API lists each tool once with the name the model knows it by; disabling one by the server's name
    renames no other, so a conversation's earlier calls still name the same tools."""
    client = admin(tenant_alpha)
    listed = send(client, "get", f"/api/mcp-services/{clash.pk}").json()["tools"]
    assert [(tool["name"], tool["exposed_name"]) for tool in listed] == list(EXPOSED.items())
    changed = send(client, "patch", f"/api/mcp-services/{clash.pk}", {"disabled_tools": ["a.b", "dup"]})
    assert changed.status_code == 200, changed.content
    assert changed.json()["disabled_tools"] == ["a.b", "dup"]
    with schema_context(tenant_alpha.tenant.schema_name):
        offered = {tool.tool_name: tool.exposed_name for tool in tools_for(Actor(user=admin_of(tenant_alpha)))}
    assert offered == {name: exposed for name, exposed in EXPOSED.items() if name not in ("a.b", "dup")}


def test_the_tools_page_and_the_edit_form_show_each_tool_once_and_the_models_name(
    tenant_alpha: TenantFixture, clash: Any
) -> None:
    client = logged_in(tenant_alpha, "admin")
    page = client.get("/services/").content.decode()
    assert "offered to the model as clash__a_b_2" in page
    assert page.count("<code>dup</code>") == 1
    form = client.get(f"/services/{clash.pk}/edit/").content.decode()
    assert form.count('value="dup"') == 1


def test_at_most_128_tools_are_offered_the_first_in_order_and_it_is_said(
    tenant_alpha: TenantFixture, awkward_mcp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAI refuses a request with more than 128 tools: the first 128 go, by service name, in each
    server's order; the log and the tools page say so."""
    with schema_context(tenant_alpha.tenant.schema_name):
        for name, count in (("Beta", 40), ("Alpha", 100)):
            service = mcp_service_create(actor=TEST_ACTOR, name=name, url=awkward_mcp_url)
            McpService.objects.filter(pk=service.pk).update(
                tools=[{"name": f"tool_{n}", "description": "", "input_schema": {}} for n in range(count)]
            )
        with caplog.at_level(logging.WARNING, logger="apps.chat.services"):
            tools = tools_for(Actor(user=admin_of(tenant_alpha)))
    assert len(tools) == 128
    assert [tool.service.name for tool in tools].count("Alpha") == 100
    assert tools[-1].exposed_name == "beta__tool_27"
    assert "140 MCP tools are offered; the model gets the first 128" in caplog.text
    page = logged_in(tenant_alpha, "admin").get("/services/").content.decode()
    assert 'data-testid="tools-left-out"' in page
    assert "The enabled services offer 140 tools, and the model can be offered at most 128: the last 12" in page
    assert bind_tools([]) == []
