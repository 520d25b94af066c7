"""Writes to MCP services: the slugs made for them, and what a change of address does to the stored headers."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from django.utils.html import escape
from django_tenants.utils import schema_context

from apps.accounts.permissions import Role
from apps.audit.models import AuditEvent
from apps.chat.engine import bind_tools
from apps.core.crypto import decrypt
from apps.mcp.models import McpService
from apps.mcp.services import mcp_service_create
from tests.accounts.test_pages import logged_in
from tests.chat.test_services_and_providers import admin, send
from tests.conftest import TEST_ACTOR, TenantFixture, api_key_secret, bearer, jwt_pair, make_member
from tests.mcp.test_misbehaving_servers import STARTED, streamable_server

pytestmark = pytest.mark.django_db

# The rule a slug given to the API is held to (docs/api.md): words of lower-case letters and digits joined by
# single underscores, starting with a letter, at most 30 characters.
SLUG_RULE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
URL = "http://127.0.0.1:9/mcp"


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": "", "input_schema": {"type": "object"}}


class TestGeneratedSlugs:
    @pytest.mark.parametrize(
        "name",
        ["123456789012345678901 x", "1", "x" * 23 + " y", "__Levels__", "Pegel · Wasser", "水文", "9" * 40, "a" * 40],
    )
    def test_a_slug_made_from_a_name_keeps_the_rule_for_given_slugs_also_when_numbered(
        self, tenant_alpha: TenantFixture, name: str
    ) -> None:
        """A name starting with a digit got ``s_`` in front and was cut again, to ``s_123456789012345678901_``, and
        the next one of the name ``s_123456789012345678901__2``: slugs the API refuses when they are given."""
        client = admin(tenant_alpha)
        slugs = []
        for _ in range(3):
            created = send(client, "post", "/api/mcp-services", {"name": name, "url": URL})
            assert created.status_code == 201, created.content
            slugs.append(created.json()["slug"])
        assert len(set(slugs)) == 3
        for slug in slugs:
            assert SLUG_RULE.fullmatch(slug), slug
            assert len(slug) <= 30
            assert "__" not in slug
        if name == "123456789012345678901 x":
            assert slugs == ["s_123456789012345678901", "s_123456789012345678901_2", "s_123456789012345678901_3"]

    def test_a_made_slug_never_gives_a_tool_the_name_of_another_services_tool(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """``s_123456789012345678901_`` with its tool ``a`` and a service given ``s_123456789012345678901`` with its
        tool ``_a`` were both offered as ``s_123456789012345678901___a``: a call to it ran only one of them."""
        with schema_context(tenant_alpha.tenant.schema_name):
            given = mcp_service_create(actor=TEST_ACTOR, name="Given", url=URL, slug="s_123456789012345678901")
            made = mcp_service_create(actor=TEST_ACTOR, name="123456789012345678901 x", url=URL)
            again = mcp_service_create(actor=TEST_ACTOR, name="123456789012345678901 x", url=URL)
            McpService.objects.filter(pk=given.pk).update(tools=[tool("_a"), tool("_2__a"), tool("2__a")])
            McpService.objects.filter(pk__in=[made.pk, again.pk]).update(tools=[tool("a"), tool("_a")])
            bound = bind_tools(McpService.objects.filter(pk__in=[given.pk, made.pk, again.pk]))
        names = [each.exposed_name for each in bound]
        assert len(bound) == 7
        assert len(set(names)) == 7, names
        for each in bound:  # the slug is everything before the first "__": a name says whose tool it is
            assert each.exposed_name.partition("__")[0] == each.service.slug


def large_tool_pages(name: str, schema: dict[str, Any]) -> Any:
    """A server's answers listing page after page, without end, of one tool each (``<name><page>``, ``schema``) of
    300 kB."""
    description = "x" * 300_000

    def answer(message: dict[str, Any]) -> dict[str, Any] | None:
        if "id" not in message:
            return None
        if message["method"] == "initialize":
            return {"jsonrpc": "2.0", "id": message["id"], "result": STARTED}
        page = int((message.get("params") or {}).get("cursor") or 0)
        listed = {"tools": [{"name": f"{name}{page}", "description": description, "inputSchema": schema}],
                  "nextCursor": str(page + 1)}  # fmt: skip
        return {"jsonrpc": "2.0", "id": message["id"], "result": listed}

    return answer


class TestToolPages:
    """``tests.chat.awkward_mcp``'s ``/paged/mcp`` lists ``t1`` to ``t7`` in pages of 3; ``/endless/mcp`` lists
    pages of 25 that never end."""

    def add(self, tenant: TenantFixture, awkward_mcp_url: str, path: str) -> int:
        url = awkward_mcp_url.removesuffix("/mcp") + path
        created = send(admin(tenant), "post", "/api/mcp-services", {"name": path.strip("/"), "url": url})
        assert created.status_code == 201, created.content
        return int(created.json()["id"])

    def test_every_page_of_the_tool_list_is_loaded(self, tenant_alpha: TenantFixture, awkward_mcp_url: str) -> None:
        """The SDK's list_tools asks for one page: the first 3 tools were loaded, and the model never saw the rest."""
        service_id = self.add(tenant_alpha, awkward_mcp_url, "/paged/mcp")
        tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{service_id}/test")
        assert tested.status_code == 200, tested.content
        assert [each["name"] for each in tested.json()["tools"]] == [f"t{i}" for i in range(1, 8)]
        assert tested.json()["more_tools"] is False
        listed = send(admin(tenant_alpha), "get", f"/api/mcp-services/{service_id}")
        assert len(listed.json()["tools"]) == 7

    def test_a_list_that_never_ends_stops_at_500_tools_and_says_so(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str
    ) -> None:
        service_id = self.add(tenant_alpha, awkward_mcp_url, "/endless/mcp")
        tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{service_id}/test")
        assert tested.status_code == 200, tested.content
        names = [each["name"] for each in tested.json()["tools"]]
        assert names == [f"p{page}_{i}" for page in range(20) for i in range(25)]
        assert tested.json()["more_tools"] is True
        page = logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{service_id}/test/", follow=True)
        assert "endless/mcp answers with 500 tools." in page.content.decode()
        assert (
            "lists more tools than HydroNet loads from one server (at most 500, of 1.0\xa0MB in all): only the first "
            "500 are loaded." in page.content.decode()
        )
        with schema_context(tenant_alpha.tenant.schema_name):
            assert len(McpService.objects.get(pk=service_id).tools) == 500

    def test_a_first_tool_larger_than_the_whole_lists_size_is_said_plainly(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, settings: Any
    ) -> None:
        """It said "only the first 0 are loaded"."""
        settings.MCP_MAX_TOOL_LIST_BYTES = 10
        service_id = self.add(tenant_alpha, awkward_mcp_url, "/paged/mcp")
        page = unescape(logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{service_id}/test/", follow=True)
                        .content.decode())  # fmt: skip
        assert "paged/mcp answers with 0 tools." in page
        assert ("paged/mcp lists more tools than HydroNet loads from one server (at most 500, of 10\xa0bytes in all), "
                "and none of them is loaded." in page)  # fmt: skip
        assert "only the first" not in page

    def test_one_tool_loaded_is_said_in_the_singular(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, settings: Any
    ) -> None:
        """It said "answers with 1 tools" and "only the first 1 are loaded"."""
        service_id = self.add(tenant_alpha, awkward_mcp_url, "/paged/mcp")
        send(admin(tenant_alpha), "post", f"/api/mcp-services/{service_id}/test")
        with schema_context(tenant_alpha.tenant.schema_name):
            first = McpService.objects.get(pk=service_id).tools[0]
        settings.MCP_MAX_TOOL_LIST_BYTES = len(json.dumps(first, ensure_ascii=False).encode())  # room for one
        page = unescape(logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{service_id}/test/", follow=True)
                        .content.decode())  # fmt: skip
        assert "paged/mcp answers with 1 tool." in page
        assert "in all): only the first is loaded." in page

    def test_past_the_most_pages_the_list_stops_and_says_so(
        self, tenant_alpha: TenantFixture, awkward_mcp_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from apps.mcp import client

        monkeypatch.setattr(client, "MAX_TOOL_PAGES", 2)
        service_id = self.add(tenant_alpha, awkward_mcp_url, "/paged/mcp")
        tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{service_id}/test")
        assert [each["name"] for each in tested.json()["tools"]] == [f"t{i}" for i in range(1, 7)]
        assert tested.json()["more_tools"] is True

    def test_a_list_of_large_tools_stops_at_its_size_and_says_so(self, tenant_alpha: TenantFixture) -> None:
        """Each answer was bounded, the list was not: fifty pages of one 8 MB tool each took a web process past 6 GB,
        and the test ended in a 500 (PostgreSQL takes at most 255 MB in one JSON value)."""
        with streamable_server(large_tool_pages("big", {"type": "object"}), "application/json") as url:
            created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Big", "url": url})
            tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{created.json()['id']}/test")
        assert tested.status_code == 200, tested.content
        assert [each["name"] for each in tested.json()["tools"]] == ["big0", "big1", "big2"]
        assert tested.json()["more_tools"] is True
        with schema_context(tenant_alpha.tenant.schema_name):
            stored = McpService.objects.get(pk=created.json()["id"]).tools
        assert len(json.dumps(stored, ensure_ascii=False).encode()) <= 1024 * 1024


class TestToolSchemas:
    """A tool's input schema is checked when the list is loaded: one a model server refuses failed every chat."""

    TOOLS = [
        {"name": "good", "inputSchema": {"type": "object", "properties": {"station": {"type": "string"}},
                                          "required": ["station"]}},
        # What the SDK's own model refuses (``properties`` not an object, a ``type`` not "object") is left out
        # before it checks the list (the test below); these it takes, and a model server refuses.
        {"name": "type_typo", "inputSchema": {"type": "object", "properties": {"station": {"type": "strin"}}}},
        {"name": "negative_length", "inputSchema": {"type": "object", "properties": {"station": {"minLength": -1}}}},
        {"name": "extra_text", "inputSchema": {"type": "object", "additionalProperties": "no"}},
        {"name": "draft7", "inputSchema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                                            "properties": {"n": {"type": "integer", "minimum": 0}}}},
    ]  # fmt: skip

    def answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if "id" not in message:
            return None
        result = STARTED if message["method"] == "initialize" else {"tools": self.TOOLS}
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}

    def test_tools_whose_schema_is_not_valid_are_left_out_and_named(self, tenant_alpha: TenantFixture) -> None:
        with streamable_server(self.answer, "application/json") as url:
            created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Mixed", "url": url})
            service_id = created.json()["id"]
            tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{service_id}/test")
            page = logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{service_id}/test/", follow=True)
        assert tested.status_code == 200, tested.content
        assert [each["name"] for each in tested.json()["tools"]] == ["good", "draft7"]
        unusable = {each["name"]: each["problem"] for each in tested.json()["unusable_tools"]}
        assert list(unusable) == ["type_typo", "negative_length", "extra_text"]
        assert unusable["type_typo"].endswith("(at properties/station/type)"), unusable
        assert unusable["negative_length"] == "-1 is less than the minimum of 0 (at properties/station/minLength)"
        assert unusable["extra_text"] == "'no' is not of type 'object', 'boolean' (at additionalProperties)"
        said = unescape(page.content.decode())
        assert "Mixed lists 3 tools that a model server or HydroNet could not use" in said
        assert "type_typo (" in said
        assert "extra_text (" in said
        with schema_context(tenant_alpha.tenant.schema_name):
            service = McpService.objects.get(pk=service_id)
            assert [tool.tool_name for tool in bind_tools([service])] == ["good", "draft7"]  # what a chat offers
            audit = AuditEvent.objects.filter(action="mcp_service.tested").latest("id")
        assert audit.metadata["unusable"] == ["type_typo", "negative_length", "extra_text"]

    @pytest.mark.parametrize("transport", ["application/json", "text/event-stream"])
    def test_tools_the_sdk_refuses_are_left_out_and_named_too(
        self, tenant_alpha: TenantFixture, transport: str
    ) -> None:
        """The SDK checks a list as a whole: one tool whose schema's ``type`` is not "object", or whose
        ``properties`` is a list, failed the whole list as "not valid MCP", and every tool of the server with it."""
        tools = [
            self.TOOLS[0],
            {"name": "array_input", "inputSchema": {"type": "array"}},
            {"name": "list_properties", "inputSchema": {"type": "object", "properties": []}},
            {"description": "no name", "inputSchema": {"type": "object"}},
            {"name": "last", "inputSchema": {"type": "object"}},
        ]

        def answer(message: dict[str, Any]) -> dict[str, Any] | None:
            if "id" not in message:
                return None
            result = STARTED if message["method"] == "initialize" else {"tools": tools}
            return {"jsonrpc": "2.0", "id": message["id"], "result": result}

        with streamable_server(answer, transport) as url:
            created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Refused", "url": url})
            tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{created.json()['id']}/test")
            page = logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{created.json()['id']}/test/", follow=True)
        assert tested.status_code == 200, tested.content
        assert [each["name"] for each in tested.json()["tools"]] == ["good", "last"]
        assert [(each["name"], each["problem"]) for each in tested.json()["unusable_tools"]] == [
            ("array_input", "inputSchema.type: Input should be 'object'"),
            ("list_properties", "inputSchema.properties: Input should be a valid dictionary"),
            ("?", "name: Field required"),
        ]
        assert "Refused lists 3 tools that a model server or HydroNet could not use" in unescape(page.content.decode())

    def test_tools_left_out_count_toward_the_lists_size(self, tenant_alpha: TenantFixture) -> None:
        """Checking a schema takes about 2 s of CPU a megabyte: tools left out were not counted, and a server
        listing page after page of them had each checked, until the pages' bound."""
        schema = {"type": "object", "additionalProperties": "no"}
        with streamable_server(large_tool_pages("bad", schema), "application/json") as url:
            created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Bad", "url": url})
            tested = send(admin(tenant_alpha), "post", f"/api/mcp-services/{created.json()['id']}/test")
        assert tested.json()["tools"] == []
        assert [each["name"] for each in tested.json()["unusable_tools"]] == ["bad0", "bad1", "bad2"]
        assert tested.json()["more_tools"] is True

    @pytest.mark.parametrize("schema", [[], {"type": "array"}, {}])
    def test_a_schema_must_describe_an_object(self, schema: Any) -> None:
        from apps.mcp.client import schema_problem

        assert schema_problem(schema) == 'not a JSON Schema of "type": "object"'
        assert schema_problem({"type": "object", "properties": {}}) is None


class TestTheEditPagesToolBoxes:
    """The edit page's boxes say which tools are offered; a tool the page did not show keeps its state."""

    def test_a_tool_loaded_while_the_page_was_open_stays_offered(self, tenant_alpha: TenantFixture) -> None:
        """A test in another tab loaded ``c``; saving the page, opened with ``a`` and ``b``, to rename the service
        kept ``c`` from the model, though no one unchecked it ("tools the server adds later are offered")."""
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Levels", url=URL)
            McpService.objects.filter(pk=service.pk).update(tools=[tool("a"), tool("b")])
        client = logged_in(tenant_alpha, Role.ADMIN)
        edit = f"/services/{service.pk}/edit/"
        page = client.get(edit).content.decode()
        with schema_context(tenant_alpha.tenant.schema_name):  # another tab's test, meanwhile
            McpService.objects.filter(pk=service.pk).update(tools=[tool("a"), tool("b"), tool("c")])
        form = {"name": "Levels 2", "url": URL, "type": "streamable-http", "timeout_seconds": 30,
                "shown_tools": json.dumps(["a", "b"])}  # fmt: skip
        assert client.post(edit, {**form, "offered_tools": ["a"]}).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            saved = McpService.objects.get(pk=service.pk)
        assert (saved.name, saved.disabled_tools) == ("Levels 2", ["b"])
        shown = re.search(r'name="shown_tools" value="([^"]*)"', page)  # what the page sends
        assert shown is not None
        assert json.loads(unescape(shown[1])) == ["a", "b"]

    def test_a_tool_kept_from_the_model_and_loaded_again_stays_kept(self, tenant_alpha: TenantFixture) -> None:
        """The page was opened while no tools were loaded (a new URL): every tool loaded since keeps its state."""
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Levels", url=URL)
        client = logged_in(tenant_alpha, Role.ADMIN)
        edit = f"/services/{service.pk}/edit/"
        page = client.get(edit).content.decode()
        assert 'name="offered_tools"' not in page
        shown = re.search(r'name="shown_tools" value="([^"]*)"', page)
        assert shown is not None
        assert unescape(shown[1]) == "[]"
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(pk=service.pk).update(tools=[tool("a"), tool("b")],
                                                            config={"disabled_tools": ["b"]})  # fmt: skip
        form = {"name": "Levels", "url": URL, "type": "streamable-http", "timeout_seconds": 30, "shown_tools": "[]"}
        assert client.post(edit, form).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service.pk).disabled_tools == ["b"]

    def test_a_shown_tool_the_server_no_longer_lists_is_no_error(self, tenant_alpha: TenantFixture) -> None:
        with schema_context(tenant_alpha.tenant.schema_name):
            service = mcp_service_create(actor=TEST_ACTOR, name="Levels", url=URL)
            McpService.objects.filter(pk=service.pk).update(tools=[tool("a")])
        form = {"name": "Levels", "url": URL, "type": "streamable-http", "timeout_seconds": 30,
                "shown_tools": json.dumps(["a", "gone"]), "offered_tools": ["a", "gone"]}  # fmt: skip
        assert logged_in(tenant_alpha, Role.ADMIN).post(f"/services/{service.pk}/edit/", form).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service.pk).disabled_tools == []


HEADERS_MOVED = (
    "The URL points to another server now: enter the auth headers again, or remove them. "
    "The stored headers are not sent to another server."
)


class TestTheHeadersStayWithTheirServer:
    def stored(self, tenant: TenantFixture, service_id: int) -> tuple[str, str]:
        with schema_context(tenant.tenant.schema_name):
            service = McpService.objects.get(pk=service_id)
            return service.url, decrypt(service.secret_headers)

    def updates(self, tenant: TenantFixture) -> int:
        with schema_context(tenant.tenant.schema_name):
            return AuditEvent.objects.filter(action="mcp_service.updated").count()

    def add(self, client: Any, **extra: Any) -> int:
        created = send(client, "post", "/api/mcp-services", {"name": "Secret", "url": URL, **extra})
        assert created.status_code == 201, created.content
        return int(created.json()["id"])

    @pytest.mark.parametrize(
        "elsewhere", ["http://127.0.0.1:10/mcp", "https://127.0.0.1:9/mcp", "http://localhost:9/mcp"]
    )
    def test_a_url_on_another_server_without_the_headers_is_refused(
        self, tenant_alpha: TenantFixture, elsewhere: str
    ) -> None:
        """An admin who never saw the headers moved the URL to a server of theirs and pressed "test": the stored
        headers went there."""
        client = admin(tenant_alpha)
        service_id = self.add(client, headers={"Authorization": "Bearer stored"})
        before = self.updates(tenant_alpha)
        response = send(client, "patch", f"/api/mcp-services/{service_id}", {"url": elsewhere, "name": "Moved"})
        assert response.status_code == 400, response.content
        assert response.json()["error"] == {
            "code": "invalid_input", "message": HEADERS_MOVED, "details": {"headers": [HEADERS_MOVED]},
        }  # fmt: skip
        assert self.stored(tenant_alpha, service_id) == (URL, '{"Authorization": "Bearer stored"}')
        assert self.updates(tenant_alpha) == before

    @pytest.mark.parametrize("headers", [{"Authorization": "Bearer new"}, {}])
    def test_a_url_on_another_server_takes_new_headers_or_none(
        self, tenant_alpha: TenantFixture, headers: dict[str, str]
    ) -> None:
        client = admin(tenant_alpha)
        service_id = self.add(client, headers={"Authorization": "Bearer stored"})
        moved = {"url": "http://127.0.0.1:10/mcp", "headers": headers}
        response = send(client, "patch", f"/api/mcp-services/{service_id}", moved)
        assert response.status_code == 200, response.content
        assert response.json()["has_secret_headers"] is bool(headers)
        url, stored = self.stored(tenant_alpha, service_id)
        assert url == "http://127.0.0.1:10/mcp"
        assert stored == ('{"Authorization": "Bearer new"}' if headers else "")

    def test_the_same_server_and_a_service_without_headers_move_freely(self, tenant_alpha: TenantFixture) -> None:
        client = admin(tenant_alpha)
        with_headers = self.add(client, headers={"Authorization": "Bearer stored"})
        same = send(client, "patch", f"/api/mcp-services/{with_headers}", {"url": "http://127.0.0.1:9/other/mcp"})
        assert same.status_code == 200, same.content
        assert self.stored(tenant_alpha, with_headers)[1] == '{"Authorization": "Bearer stored"}'
        without = self.add(client)
        moved = send(client, "patch", f"/api/mcp-services/{without}", {"url": "http://127.0.0.1:10/mcp"})
        assert moved.status_code == 200, moved.content

    def test_the_edit_page_refuses_it_too(self, tenant_alpha: TenantFixture) -> None:
        service_id = self.add(admin(tenant_alpha), headers={"Authorization": "Bearer stored"})
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"name": "Secret", "url": "http://127.0.0.1:10/mcp", "type": "streamable-http", "timeout_seconds": 30}
        refused = client.post(f"/services/{service_id}/edit/", form)
        assert refused.status_code == 400
        assert "enter the auth headers again, or remove them" in refused.content.decode()
        assert self.stored(tenant_alpha, service_id) == (URL, '{"Authorization": "Bearer stored"}')
        assert client.post(f"/services/{service_id}/edit/", {**form, "clear_headers": "on"}).status_code == 302
        assert self.stored(tenant_alpha, service_id) == ("http://127.0.0.1:10/mcp", "")


class TestPatch:
    def test_a_null_timeout_is_the_default_again_as_on_create(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        """It was a 400 "This field may not be null." on PATCH, while create took it for the default."""
        settings.MCP_DEFAULT_TIMEOUT_SECONDS = 17
        client = admin(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": "Timed", "url": URL, "timeout_seconds": None})
        assert created.json()["timeout_seconds"] == 17
        path = f"/api/mcp-services/{created.json()['id']}"
        assert send(client, "patch", path, {"timeout_seconds": 5}).json()["timeout_seconds"] == 5
        assert send(client, "patch", path, {"name": "Renamed"}).json()["timeout_seconds"] == 5  # left out: kept
        reset = send(client, "patch", path, {"timeout_seconds": None})
        assert reset.status_code == 200, reset.content
        assert reset.json()["timeout_seconds"] == 17
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=created.json()["id"]).config["timeout_seconds"] == 17

    def test_the_slug_cannot_be_changed(self, tenant_alpha: TenantFixture) -> None:
        """As docs/api.md says: the model and the stored tool calls know the service's tools by it."""
        client = admin(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": "Fixed", "url": URL}).json()
        response = send(client, "patch", f"/api/mcp-services/{created['id']}", {"slug": "other", "name": "New"})
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["slug"]
        assert send(client, "get", f"/api/mcp-services/{created['id']}").json()["slug"] == "fixed"


GIVE_EACH_ONCE = "Give each header once, whatever the case of its name: "


class TestHeaderBounds:
    """Auth headers are stored encrypted and sent with every call: their number and size are bounded, and each is
    one a server can take once; a bad one is a 400 naming ``headers`` that changes nothing."""

    def stored(self, tenant: TenantFixture) -> list[tuple[str, str]]:
        with schema_context(tenant.tenant.schema_name):
            return [(s.name, decrypt(s.secret_headers)) for s in McpService.objects.order_by("pk")]

    def events(self, tenant: TenantFixture) -> int:
        with schema_context(tenant.tenant.schema_name):
            return AuditEvent.objects.filter(action__startswith="mcp_service.").count()

    @pytest.mark.parametrize(
        ("headers", "says"),
        [({f"X-H{n}": "v" for n in range(21)}, "Give at most 20 auth headers."),
         ({"X-A": "a" * 4000, "X-B": "b" * 4000, "X-C": "c" * 200}, "The auth headers may hold at most 8192 "
                                                                  "characters in all, names and values."),
         ({"X-Token": "a", "x-token": "b", "X-TOKEN": "c"}, GIVE_EACH_ONCE + "X-TOKEN, X-Token, x-token."),
         ({"Last-Event-ID": "7"}, "These headers are set by the connection itself: Last-Event-ID."),
         # Refused before these bounds, and still: a name past 64 characters or not a token, a value past 4096
         # characters or with a control character, a header the connection sets.
         ({"X" * 65: "v"}, "Header names are letters"), ({"X:Y": "v"}, "Header names are letters"),
         ({"X-A": "a" * 4097}, "Header names are letters"), ({"X-A": "a\rb"}, "Header names are letters"),
         ({"X-A": "a\x1bb"}, "Header names are letters"), ({"X-A": "a\x00b"}, "Null characters are not allowed."),
         ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding"), ({"Connection": "close"}, "Connection"),
         ({"Content-Type": "text/plain"}, "Content-Type")],
        ids=["21 headers", "8193 characters", "in two cases", "last-event-id", "long name", "not a token",
             "long value", "cr", "escape", "nul", "transfer-encoding", "connection", "content-type"],
    )  # fmt: skip
    def test_bad_headers_are_a_400_naming_them_on_create_and_update(
        self, tenant_alpha: TenantFixture, headers: dict[str, str], says: str
    ) -> None:
        client = admin(tenant_alpha)
        kept = send(client, "post", "/api/mcp-services", {"name": "Kept", "url": URL, "headers": {"X-Key": "k"}})
        assert kept.status_code == 201, kept.content
        before, events = self.stored(tenant_alpha), self.events(tenant_alpha)
        created = send(client, "post", "/api/mcp-services", {"name": "New", "url": URL, "headers": headers})
        changed = send(client, "patch", f"/api/mcp-services/{kept.json()['id']}", {"headers": headers})
        for response in (created, changed):
            assert response.status_code == 400, response.content
            error = response.json()["error"]
            assert (error["code"], list(error["details"])) == ("invalid_input", ["headers"])
            assert says in str(error["details"]["headers"])
        assert (self.stored(tenant_alpha), self.events(tenant_alpha)) == (before, events)

    def test_up_to_the_bounds_they_are_taken(self, tenant_alpha: TenantFixture) -> None:
        most = {f"X-H{n:02}": "v" * 405 for n in range(20)}  # 20 headers, 20 x (5 + 405) = 8200 characters
        most["X-H00"] = "v" * 397
        assert (len(most), sum(len(k) + len(v) for k, v in most.items())) == (20, 8192)
        created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Most", "url": URL, "headers": most})
        assert created.status_code == 201, created.content
        assert self.stored(tenant_alpha) == [("Most", json.dumps(most))]

    def test_headers_stored_before_the_bounds_keep_working(self, tenant_alpha: TenantFixture) -> None:
        """The bounds apply to headers given, not to those stored: a service saved with more keeps them, and they
        are what its calls send, until new ones are given."""
        from apps.core.crypto import encrypt
        from apps.mcp.client import _headers

        many = {f"X-H{n}": "v" for n in range(30)}
        client = admin(tenant_alpha)
        service_id = send(client, "post", "/api/mcp-services", {"name": "Old", "url": URL}).json()["id"]
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(pk=service_id).update(secret_headers=encrypt(json.dumps(many)))
        renamed = send(client, "patch", f"/api/mcp-services/{service_id}", {"name": "Renamed", "timeout_seconds": 9})
        assert renamed.status_code == 200, renamed.content
        with schema_context(tenant_alpha.tenant.schema_name):
            assert _headers(McpService.objects.get(pk=service_id)) == many

    @pytest.mark.parametrize(
        ("lines", "says"),
        [("\n".join(f"X-H{n}: v" for n in range(21)), "Give at most 20 auth headers."),
         ("X-Token: a\nX-Token: b", GIVE_EACH_ONCE + "X-Token."),
         ("X-Token: a\nx-token: b", GIVE_EACH_ONCE + "X-Token, x-token.")],
        ids=["21 headers", "twice", "in two cases"],
    )  # fmt: skip
    def test_the_pages_show_why_and_change_nothing(self, tenant_alpha: TenantFixture, lines: str, says: str) -> None:
        """A name given twice on the page was taken, the dict keeping the last one."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        form = {"name": "Paged", "url": URL, "type": "streamable-http", "timeout_seconds": 30}
        assert client.post("/services/", {**form, "headers": "X-Key: k"}).status_code == 302
        before, events = self.stored(tenant_alpha), self.events(tenant_alpha)
        service_id = self.service_id(tenant_alpha)
        for path in ("/services/", f"/services/{service_id}/edit/"):
            refused = client.post(path, {**form, "name": "Other", "headers": lines})
            assert refused.status_code == 400
            assert refused.context["form"].errors["headers"] == [says]
            assert escape(says) in refused.content.decode()
        assert (self.stored(tenant_alpha), self.events(tenant_alpha)) == (before, events)

    def service_id(self, tenant: TenantFixture) -> int:
        with schema_context(tenant.tenant.schema_name):
            return int(McpService.objects.get().pk)


# A service that is down, as its last error says it in each language.
DOWN = {
    "en": "Nothing answered at this address: no server is listening there, or it cannot be reached.",
    "zh-hans": "此地址没有应答：那里没有服务器在监听，或无法连接。",
}


class TestLastError:
    @pytest.mark.parametrize(("written", "read"), [("zh-hans", "en"), ("en", "zh-hans")])
    def test_a_test_that_failed_in_one_language_reads_in_the_other(
        self, tenant_alpha: TenantFixture, written: str, read: str
    ) -> None:
        """ "Test connection" in Chinese kept its error in Chinese, and the page in English showed it so."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        created = send(client, "post", "/api/mcp-services", {"name": "Down", "url": URL})
        service_id = created.json()["id"]
        client.post(f"/services/{service_id}/test/", HTTP_ACCEPT_LANGUAGE=written)
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service_id).last_error == DOWN[written]
        client.get("/services/", HTTP_ACCEPT_LANGUAGE=written)  # the test's own answer, a message in its language
        page = client.get("/services/", HTTP_ACCEPT_LANGUAGE=read).content.decode()
        assert f'<div class="notice error small">{escape(DOWN[read])}</div>' in page
        assert escape(DOWN[written]) not in page
        listed = client.get(f"/api/mcp-services/{service_id}", HTTP_ACCEPT_LANGUAGE=read).json()
        assert listed["last_error"] == DOWN[read]
        # A new address forgets the old one's error, in every language.
        moved = send(client, "patch", f"/api/mcp-services/{service_id}", {"url": f"{URL}/elsewhere"})
        assert moved.json()["last_error"] == ""
        with schema_context(tenant_alpha.tenant.schema_name):
            assert McpService.objects.get(pk=service_id).last_error_translations is None

    def test_an_error_stored_before_its_translations_were_kept_reads_as_stored(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        service_id = send(client, "post", "/api/mcp-services", {"name": "Old", "url": URL}).json()["id"]
        with schema_context(tenant_alpha.tenant.schema_name):
            McpService.objects.filter(pk=service_id).update(last_error=DOWN["en"])
        page = client.get("/services/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
        assert f'<div class="notice error small">{escape(DOWN["en"])}</div>' in page
        listed = client.get(f"/api/mcp-services/{service_id}", HTTP_ACCEPT_LANGUAGE="zh-hans").json()
        assert listed["last_error"] == DOWN["en"]


class TestTheUrlsKey:
    """Many MCP providers put the key in the URL (``/s/<key>/mcp``, ``?api_key=``): members who use the services but
    do not manage them saw it whole in the API and on the services page, and the audit kept it."""

    SECRET_URL = "https://holder:pw@mcp.example.com:8443/s/sk-live-123/mcp?api_key=sk-live-456"

    def service(self, tenant: TenantFixture) -> McpService:
        with schema_context(tenant.tenant.schema_name):
            made = mcp_service_create(actor=TEST_ACTOR, name="Keyed", url=URL)
            McpService.objects.filter(pk=made.pk).update(url=self.SECRET_URL)  # as if saved with it allowed
            made.refresh_from_db()
        return made

    @pytest.mark.parametrize("credential", ["jwt", "api key"])
    def test_members_who_only_use_services_see_the_origin(self, tenant_alpha: TenantFixture, credential: str) -> None:
        made = self.service(tenant_alpha)
        token = (jwt_pair(tenant_alpha, make_member(tenant_alpha, Role.USER))["access"] if credential == "jwt"
                 else api_key_secret(tenant_alpha, Role.USER))  # fmt: skip
        client = tenant_alpha.client(**bearer(token))
        listed = [each for each in client.get("/api/mcp-services").json()["results"] if each["id"] == made.pk]
        one = client.get(f"/api/mcp-services/{made.pk}")
        page = logged_in(tenant_alpha, Role.USER).get("/services/").content.decode()
        assert [listed[0]["url"], one.json()["url"]] == ["https://mcp.example.com:8443"] * 2
        assert "<code>https://mcp.example.com:8443</code>" in page
        assert "sk-live" not in page
        assert "holder" not in page

    def test_admins_see_it_whole(self, tenant_alpha: TenantFixture) -> None:
        made = self.service(tenant_alpha)
        listed = [each for each in admin(tenant_alpha).get("/api/mcp-services").json()["results"]
                  if each["id"] == made.pk]  # fmt: skip
        assert listed[0]["url"] == self.SECRET_URL
        assert admin(tenant_alpha).get(f"/api/mcp-services/{made.pk}").json()["url"] == self.SECRET_URL
        assert escape(self.SECRET_URL) in logged_in(tenant_alpha, Role.ADMIN).get("/services/").content.decode()
        renamed = send(admin(tenant_alpha), "patch", f"/api/mcp-services/{made.pk}", {"name": "Keyed 2"})
        assert renamed.json()["url"] == self.SECRET_URL

    def test_the_audit_keeps_the_origin(self, tenant_alpha: TenantFixture, awkward_mcp_url: str) -> None:
        keyed = awkward_mcp_url + "?api_key=sk-live-789"
        created = send(admin(tenant_alpha), "post", "/api/mcp-services", {"name": "Audited", "url": keyed})
        assert created.json()["url"] == keyed
        with schema_context(tenant_alpha.tenant.schema_name):
            event = AuditEvent.objects.filter(action="mcp_service.created").latest("id")
        assert event.metadata["url"] == awkward_mcp_url.removesuffix("/mcp")
