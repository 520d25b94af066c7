"""The OpenAPI schema and docs, on tenant hosts, describing how to authenticate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.chat.conftest import member_client
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db


def test_the_schema_describes_the_api_and_its_auth_schemes(tenant_alpha: TenantFixture) -> None:
    response = tenant_alpha.client().get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["jwtAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKey"]["type"] == "apiKey"
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert "cookieAuth" in schemes
    paths = schema["paths"]
    assert set(paths["/api/users"]) >= {"get", "post"}
    assert "requestBody" in paths["/api/users"]["post"]
    assert "patch" in paths["/api/auth/me"]
    assert paths["/api/auth/login"]["post"].get("security", []) in ([], [{}])  # no credential needed
    assert {"jwtAuth": []} in paths["/api/users"]["get"]["security"]


def test_the_docs_page_is_served_without_the_internet(tenant_alpha: TenantFixture) -> None:
    page = tenant_alpha.client().get("/api/docs/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "swagger-ui" in body
    assert "cdn.jsdelivr.net" not in body
    asset = tenant_alpha.client().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_the_schema_is_not_on_the_platform_host() -> None:
    assert Client(HTTP_HOST="localhost").get("/api/schema/").status_code == 404


def test_the_schema_generates_without_warnings(tmp_path: object) -> None:
    from django.core.management import call_command

    call_command(
        "spectacular", urlconf="config.urls_tenant", fail_on_warn=True, file=f"{tmp_path}/schema.yaml", validate=True
    )


def test_each_operation_lists_the_errors_it_can_answer(tenant_alpha: TenantFixture) -> None:
    schema = tenant_alpha.client().get("/api/schema/?format=json").json()
    paths = schema["paths"]

    def responses(path: str, method: str) -> dict[str, Any]:
        return dict(paths[path][method]["responses"])

    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert set(schema["components"]["schemas"]["ErrorDetail"]["properties"]) == {"code", "message", "details"}
    # A metered operation: input, credentials, role, a missing conversation, the rate limit, the quota, the model.
    post_message = responses("/api/conversations/{conversation_id}/messages", "post")
    assert set(post_message) == {"200", "400", "401", "402", "403", "404", "409", "429", "502", "503"}
    assert post_message["402"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "quota_exceeded" in post_message["402"]["description"]
    assert set(post_message["200"]["content"]) == {"application/json", "text/event-stream"}
    assert set(responses("/v1/chat/completions", "post")) >= {"200", "400", "401", "402", "403", "429", "502", "503"}
    # Not metered: no 402 or 502; no path parameter: no 404; a GET without parameters: no 400.
    assert set(responses("/api/models", "get")) == {"200", "401", "403", "429"}
    assert set(responses("/api/usage", "get")) == {"200", "400", "401", "403", "404", "429"}  # ?user= unknown
    # What the views answer beyond the rule: a conflict, a missing provider.
    for path in ("/api/conversations/{conversation_id}/retry", "/api/conversations/{conversation_id}/edit"):
        assert "nothing_to_" in responses(path, "post")["409"]["description"], path
        assert set(responses(path, "post")["200"]["content"]) == {"application/json", "text/event-stream"}
    for path in ("messages", "retry", "edit"):  # one turn at a time in a conversation
        assert (
            "conversation_busy"
            in responses(f"/api/conversations/{{conversation_id}}/{path}", "post")["409"]["description"]
        )
    assert "404" in responses("/api/model-provider", "get")
    assert "404" in responses("/api/model-provider/test", "post")
    assert set(responses("/api/conversations/{conversation_id}", "delete")) == {
        "204", "400", "401", "403", "404", "429"}  # fmt: skip
    # Logging in needs no credential: its own 401 and 429, no 403.
    login = responses("/api/auth/login", "post")
    assert set(login) == {"200", "400", "401", "429"}
    assert "invalid_credentials" in login["401"]["description"]
    assert set(responses("/api/auth/refresh", "post")) == {"200", "400", "401"}
    # Operations that count against a plan's limit say which.
    for path, method, quota in [("/api/users", "post", "users"), ("/api/invitations", "post", "users"),
                                ("/api/users/{user_id}/reactivate", "post", "users"),
                                ("/api/mcp-services", "post", "mcp_services"),
                                ("/api/mcp-services/{service_id}/enable", "post", "mcp_services"),
                                ("/api/conversations", "post", "storage")]:  # fmt: skip
        assert f"`{quota}`" in responses(path, method)["402"]["description"], path
    assert "402" not in responses("/api/mcp-services/{service_id}/disable", "post")
    # Every paged list: page or page_size out of range, a page past the last.
    for path in ("/api/mcp-services", "/api/conversations", "/api/conversations/{conversation_id}/messages"):
        listed = responses(path, "get")
        assert {"400", "404"} <= set(listed), path
        assert "past the last" in listed["404"]["description"], path


def test_a_patch_body_requires_what_the_operation_requires(tenant_alpha: TenantFixture) -> None:
    """A rename without a title is a 400: its schema said the title was optional (drf-spectacular's "Patched")."""
    schema = tenant_alpha.client().get("/api/schema/?format=json").json()
    body = schema["paths"]["/api/conversations/{conversation_id}"]["patch"]["requestBody"]
    component = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][component]["required"] == ["title"]
    client = member_client(tenant_alpha)
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
    response = client.patch(f"/api/conversations/{conversation}", {}, content_type="application/json")
    assert (response.status_code, list(response.json()["error"]["details"])) == (400, ["title"])


def test_request_bodies_say_that_unknown_fields_are_refused(tenant_alpha: TenantFixture) -> None:
    schemas = tenant_alpha.client().get("/api/schema/?format=json").json()["components"]["schemas"]
    assert schemas["MessagePostInputRequest"]["additionalProperties"] is False
    assert schemas["UserCreateInputRequest"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["MessagePostOutput"]  # answers may grow fields
    response = member_client(tenant_alpha).post(
        "/api/conversations", {"title": "x", "owner": 1}, content_type="application/json"
    )
    assert (response.status_code, response.json()["error"]["details"]) == (
        400, {"owner": ["This field is not accepted here."]})  # fmt: skip


def test_the_quota_and_its_limits_are_described_field_by_field(tenant_alpha: TenantFixture) -> None:
    """A client generated from the schema knows each quota's fields and the bounds the API enforces."""
    components = tenant_alpha.client().get("/api/schema/?format=json").json()["components"]["schemas"]
    entry = components["QuotaEntryOutput"]["properties"]
    assert {"quota", "limit", "used", "remaining", "resets_at", "overage", "overage_fen", "hard_stop"} <= set(entry)
    assert entry["limit"]["nullable"] is True
    cap = components["SpendingCapInputRequest"]["properties"]["spending_cap_fen"]
    assert (cap["minimum"], cap["maximum"], cap["type"]) == (0, 10_000_000_000, "integer")
    calls = components["MemberDailyCallsInputRequest"]["properties"]["member_daily_calls"]
    assert (calls["minimum"], calls["maximum"]) == (1, 1_000_000)


def test_an_unknown_schema_format_is_a_406_in_json(tenant_alpha: TenantFixture) -> None:
    """The schema view's first renderer was YAML's, so its 406 came as YAML and said the endpoint answers in JSON
    only, though it serves YAML too. JSON is now its default and its errors' format."""
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    refused = client.get("/api/schema/?format=xml")
    assert refused.status_code == 406
    error = json.loads(refused.content)["error"]
    assert error["message"] == "This endpoint answers in json, yaml: leave out format=, or use one of them."
    assert client.get("/api/schema/").json()["openapi"].startswith("3.")  # JSON by default
    assert client.get("/api/schema/?format=yaml").content.startswith(b"openapi: ")


def test_a_members_language_may_be_empty_in_the_schema(tenant_alpha: TenantFixture) -> None:
    """A member who never chose a language has ``""``, as docs/api.md says; the schema allowed only zh-hans and en."""
    schemas = tenant_alpha.client().get("/api/schema/?format=json").json()["components"]["schemas"]
    language = schemas["UserOutput"]["properties"]["language"]
    assert {"$ref": "#/components/schemas/BlankEnum"} in language["oneOf"]
    assert schemas["BlankEnum"]["enum"] == [""]


def test_v1_chat_completions_answers_json_or_a_stream_of_events(tenant_alpha: TenantFixture) -> None:
    """``stream: true`` answers ``text/event-stream``; the schema listed only JSON."""
    paths = tenant_alpha.client().get("/api/schema/?format=json").json()["paths"]
    answered = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(answered) == {"application/json", "text/event-stream"}
