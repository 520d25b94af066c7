"""MCP servers built with the SDK, as tenants run them, over real HTTP on loopback: results that are not only
text, results that are errors, and calls during which the server notifies.

The servers are ``tests.chat.awkward_mcp``'s ``/content/mcp`` and ``/odd/mcp``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.chat.engine import BoundTool, run_mcp_tool
from apps.chat.services import tools_for
from apps.core.actors import Actor
from apps.mcp.models import McpService
from apps.mcp.services import mcp_service_create, mcp_service_test
from tests.accounts.test_pages import logged_in
from tests.chat.conftest import member_client
from tests.chat.test_chat_api import new_conversation, post, sse, stored
from tests.conftest import TenantFixture, admin_of

pytestmark = pytest.mark.django_db

# What the model is given for /content/mcp's get_water_levels: each block that is not text said in a line, the
# text resource's text kept, the structured content left out (the server sent text too).
CONTENT_TEXT = "\n".join([
    "Levels of S001.",
    "[An image (image/png, 1.0\xa0MB): not passed on to the model]",
    "[Audio (audio/wav, 2.9\xa0KB): not passed on to the model]",
    "[The resource file:///levels.csv (text/csv):]\ntime,level\n08:00,1.5",
    "[The resource file:///levels.xlsx (application/vnd.ms-excel, 2.0\xa0KB): not passed on to the model]",
    "[A link to the resource https://example.com/s001: S001 page (text/html)]",
])  # fmt: skip


def registered(tenant: TenantFixture, awkward_mcp_url: str, path: str, slug: str) -> McpService:
    """The server at ``path`` of the awkward MCP process, registered as ``slug`` and tested (its tools loaded)."""
    with schema_context(tenant.tenant.schema_name):
        actor = Actor(user=admin_of(tenant))
        url = awkward_mcp_url.removesuffix("/mcp") + path
        service = mcp_service_create(actor=actor, name=slug.title(), url=url, slug=slug)
        mcp_service_test(actor=actor, service=service)
        service.refresh_from_db()
        return service


def called(tenant: TenantFixture, service: McpService, tool: str, arguments: dict[str, Any]) -> Any:
    with schema_context(tenant.tenant.schema_name):
        return run_mcp_tool(BoundTool(f"{service.slug}__{tool}", service, tool, "", {}), arguments)


class TestContent:
    def test_blocks_that_are_not_text_are_said_in_a_line_each(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """The image, the audio and the binary resource were their blocks' whole JSON, base64 and all (1.4 MB,
        cut at MCP_RESULT_MAX_CHARS in the turn); the text resource's text was inside JSON too."""
        service = registered(tenant_alpha, awkward_mcp_url, "/content/mcp", "content")
        outcome = called(tenant_alpha, service, "get_water_levels", {"station": "S001"})
        assert (outcome.is_error, outcome.text) == (False, CONTENT_TEXT)

    def test_structured_content_is_given_when_no_block_is_text(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """A result of an image and structured content gave the model the image's JSON and not the numbers."""
        service = registered(tenant_alpha, awkward_mcp_url, "/content/mcp", "content")
        outcome = called(tenant_alpha, service, "structured_only", {"station": "S001"})
        image, structured = outcome.text.split("\n")
        assert image == "[An image (image/png, 1.0\xa0MB): not passed on to the model]"
        assert json.loads(structured) == {"station": "S001", "latest": 1.5}

    def test_a_turn_gives_the_model_the_short_text_and_stores_and_shows_it(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, model_requests: list[list[dict[str, Any]]]
    ) -> None:
        """The demo model calls content__get_water_levels for a question about levels."""
        registered(tenant_alpha, awkward_mcp_url, "/content/mcp", "content")
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = dict(sse(post(client, f"/api/conversations/{conversation}/messages",
                               {"content": "What is the water level at S001?", "stream": True})))  # fmt: skip
        assert (events["tool_result"]["result"], events["tool_result"]["truncated"]) == (CONTENT_TEXT, False)
        given = [message for message in model_requests[-1] if message["role"] == "tool"]
        assert [message["content"] for message in given] == [CONTENT_TEXT]
        _user, _asked, tool, _final = stored(tenant_alpha, conversation)
        assert (tool.content, tool.result_truncated) == (CONTENT_TEXT, False)

    def test_the_tools_page_lists_the_tools_of_a_server_with_output_schemas(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        service = registered(tenant_alpha, awkward_mcp_url, "/content/mcp", "content")
        page = logged_in(tenant_alpha, "admin").post(f"/services/{service.pk}/test/", follow=True).content.decode()
        assert "Content answers with 2 tools." in page
        assert "<code>structured_only</code>" in page


class TestOddServers:
    def test_an_is_error_result_is_an_error_in_the_servers_words(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        service = registered(tenant_alpha, awkward_mcp_url, "/odd/mcp", "odd")
        outcome = called(tenant_alpha, service, "refuses", {"station": "S404"})
        assert (outcome.is_error, outcome.text) == (True, "No station S404.")

    def test_a_tool_that_raises_is_an_error(self, tenant_alpha: TenantFixture, awkward_mcp_url: str) -> None:
        """The SDK's server answers a raising tool with ``isError`` and its own words, not the exception's."""
        service = registered(tenant_alpha, awkward_mcp_url, "/odd/mcp", "odd")
        outcome = called(tenant_alpha, service, "raises", {"station": "S001"})
        assert (outcome.is_error, outcome.text) == (True, "Error executing tool raises")

    def test_notifications_during_a_call_leave_its_answer_alone(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """Progress, log messages and tools/list_changed come before the answer; the answer is read, and the
        structured content (the SDK's, for a tool returning ``str``) is not given twice."""
        service = registered(tenant_alpha, awkward_mcp_url, "/odd/mcp", "odd")
        outcome = called(tenant_alpha, service, "chatty", {})
        assert (outcome.is_error, outcome.text) == (False, "done")


class TestToolNames:
    OPENAI_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

    def test_odd_names_are_valid_function_names_and_each_runs_its_tool(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """Dots, slashes, spaces, Chinese and names past 64 characters (``tests.chat.awkward_mcp.NAMED_TOOLS``)."""
        registered(tenant_alpha, awkward_mcp_url, "/names/mcp", "names")
        with schema_context(tenant_alpha.tenant.schema_name):
            tools = tools_for(Actor(user=admin_of(tenant_alpha)))
            names = [tool.openai_spec()["function"]["name"] for tool in tools]
            ran = {tool.tool_name: run_mcp_tool(tool, {}).text for tool in tools}
        assert len(set(names)) == len(names) == 7
        assert all(self.OPENAI_FUNCTION_NAME.fullmatch(name) for name in names), names
        assert names[:5] == ["names__levels_get", "names__levels_get_2", "names__get_levels", "names__ShuiWei",
                             "names__YuLiang"]  # fmt: skip
        assert ran == {tool.tool_name: f"ran {tool.tool_name}" for tool in tools}
        assert len(ran) == 7

    def test_the_model_calls_a_tool_named_in_chinese_by_its_ascii_name(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """``雨量`` was offered as ``names_____2`` (``水位`` as ``names____``); the demo model calls a tool the
        question names, and the call runs ``雨量``, named so in the events and the stored message."""
        registered(tenant_alpha, awkward_mcp_url, "/names/mcp", "names")
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = dict(sse(post(client, f"/api/conversations/{conversation}/messages",
                               {"content": "调用 names__YuLiang 查询 S001 的雨量", "stream": True})))  # fmt: skip
        call = events["tool_call"]
        assert (call["name"], call["service"], call["tool"]) == ("names__YuLiang", "names", "雨量")
        assert events["tool_result"]["result"] == "ran 雨量"
        _user, asked, tool, _final = stored(tenant_alpha, conversation)
        assert asked.tool_calls[0]["name"] == "names__YuLiang"
        assert (tool.service, tool.tool, tool.content) == ("names", "雨量", "ran 雨量")

    def test_two_services_with_the_same_tool_each_run_their_own(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        """The demo model calls the first ``get_water_levels`` offered: services go by name, so ``Content``'s."""
        registered(tenant_alpha, awkward_mcp_url, "/content/mcp", "content")
        registered(tenant_alpha, awkward_mcp_url, "/names/mcp", "names")
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(slug="names").update(
                tools=[{"name": "get_water_levels", "description": "", "input_schema": {"type": "object"}}]
            )
        client = member_client(tenant_alpha)
        conversation = new_conversation(client)
        events = dict(sse(post(client, f"/api/conversations/{conversation}/messages",
                               {"content": "What is the water level at S001?", "stream": True})))  # fmt: skip
        call = events["tool_call"]
        assert (call["name"], call["service"], call["tool"]) == ("content__get_water_levels", "content",
                                                                  "get_water_levels")  # fmt: skip
        assert events["tool_result"]["result"] == CONTENT_TEXT
        with schema_context(tenant_alpha.tenant.schema_name):
            by_name = {tool.exposed_name: tool for tool in tools_for(Actor(user=admin_of(tenant_alpha)))}
            other = run_mcp_tool(by_name["names__get_water_levels"], {})
        assert (other.is_error, other.text) == (False, "ran get_water_levels")
