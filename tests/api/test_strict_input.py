"""What an operation does not take is a 400 naming it, on every operation of the tenant API alike: a query
parameter (a typo such as ``?form=`` for ``?from=``), and a field in the body of an action that takes none.
Generated from the URL conf, so a new endpoint is covered the day it is added."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from django.test import Client
from django_tenants.utils import schema_context
from rest_framework import serializers

from apps.mcp.models import McpService
from tests.api.endpoints import Endpoint, tenant_api_endpoints
from tests.conftest import TenantFixture, admin_of, bearer, jwt_pair

pytestmark = pytest.mark.django_db

# /v1 is OpenAI's API, whose clients may add parameters of their own: not checked (apps.api.base.TenantApi.query).
CHECKED = [e for e in tenant_api_endpoints() if not e.path.startswith("/v1/")]
BODILESS = [e for e in CHECKED if e.method != "GET" and not hasattr(e.view, "InputSerializer")]


def admin_client(tenant: TenantFixture) -> Client:
    return tenant.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant, admin_of(tenant))["access"]))


def send(client: Client, endpoint: Endpoint, path: str, body: Any = None) -> Any:
    method = getattr(client, endpoint.method.lower())
    if endpoint.method == "GET":
        return method(path)
    return method(path, data=json.dumps({} if body is None else body), content_type="application/json")


def test_the_endpoints_are_found() -> None:
    assert any(e.path == "/api/quota" for e in CHECKED)
    assert any(e.path.endswith("/enable") for e in BODILESS)


@pytest.mark.parametrize("endpoint", CHECKED, ids=lambda e: e.id)
def test_an_unknown_query_parameter_is_refused_everywhere(tenant_alpha: TenantFixture, endpoint: Endpoint) -> None:
    """/api/quota, the details, the actions took ``?form=2026-01-01`` and answered as if it was not there."""
    response = send(admin_client(tenant_alpha), endpoint, f"{endpoint.path}?form=2026-01-01")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"] == {"form": ["This field is not accepted here."]}


@pytest.mark.parametrize("path", ["/api/quota", "/api/auth/me", "/api/assistant", "/api/usage"])
def test_a_parameter_given_twice_is_refused_on_endpoints_without_parameters_too(
    tenant_alpha: TenantFixture, path: str
) -> None:
    response = admin_client(tenant_alpha).get(f"{path}?format=json&format=json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"] == {"format": ["Give this parameter once."]}
    assert admin_client(tenant_alpha).get(f"{path}?format=json").status_code == 200  # DRF's, as on the lists


@pytest.mark.parametrize("endpoint", BODILESS, ids=lambda e: e.id)
def test_a_field_in_the_body_of_an_action_that_takes_none_is_refused(
    tenant_alpha: TenantFixture, endpoint: Endpoint
) -> None:
    """enable, disable, test, deactivate, the DELETEs: ``{"active": false}`` was taken and ignored."""
    response = send(admin_client(tenant_alpha), endpoint, endpoint.path, {"active": False, "force": True})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert sorted(error["details"]) == ["active", "force"]


def test_an_action_still_takes_no_body_or_an_empty_object(tenant_alpha: TenantFixture) -> None:
    with schema_context(tenant_alpha.tenant.schema_name):
        service = McpService.objects.create(name="Gauges", slug="gauges", url="http://127.0.0.1:9/mcp", is_active=True)
    client = admin_client(tenant_alpha)
    assert client.generic("POST", f"/api/mcp-services/{service.pk}/disable").status_code == 200  # as curl -X POST
    assert (
        client.post(f"/api/mcp-services/{service.pk}/enable", "{}", content_type="application/json").status_code == 200
    )
    refused = client.post(
        f"/api/mcp-services/{service.pk}/disable", '{"active": false}', content_type="application/json"
    )
    assert refused.status_code == 400
    with schema_context(tenant_alpha.tenant.schema_name):
        assert McpService.objects.get(pk=service.pk).is_active  # the refused call changed nothing


def test_a_list_whose_query_does_not_take_the_page_is_a_programming_error() -> None:
    """``initial`` checks the page with the rest of the query, so ``paginate`` does not check it again: a list
    that declared no ``PageQuery`` would take ``?page=-1`` to DRF's paginator unchecked. It fails loudly instead."""
    from rest_framework.test import APIRequestFactory

    from apps.api.base import NoQuery, PageOnlyQuery, TenantApi
    from apps.audit.apis import AuditEventOutput

    class Unpaged(TenantApi):
        required_permission = None
        query: ClassVar[type[serializers.Serializer] | None] = NoQuery

    class Paged(Unpaged):
        query = PageOnlyQuery

    request = Unpaged().initialize_request(APIRequestFactory().get("/api/things"))
    with pytest.raises(TypeError, match="Unpaged pages a list"):
        Unpaged().paginate(request, [], AuditEventOutput)
    assert Paged().paginate(request, [], AuditEventOutput).data["results"] == []
