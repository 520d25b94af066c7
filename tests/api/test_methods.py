"""HEAD and OPTIONS on every path of the tenant API, generated from the URL conf: a path served by one
class per method (``apps.api.routing.operations``) answers them as a path with one class does."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import Role
from tests.api.endpoints import Endpoint, tenant_api_endpoints
from tests.conftest import TenantFixture, admin_of, api_key_secret, bearer, jwt_pair

pytestmark = pytest.mark.django_db

PATHS: dict[str, list[Endpoint]] = defaultdict(list)
for _endpoint in tenant_api_endpoints():
    PATHS[_endpoint.path].append(_endpoint)
READABLE = sorted(path for path, endpoints in PATHS.items() if any(e.method == "GET" for e in endpoints))


def admin_headers(tenant: TenantFixture, endpoints: list[Endpoint]) -> dict[str, Any]:
    if all("jwt" not in e.view.credentials for e in endpoints):
        return bearer(api_key_secret(tenant, Role.ADMIN))  # /v1 takes API keys only
    return bearer(jwt_pair(tenant, admin_of(tenant))["access"])


def expected_methods(path: str) -> set[str]:
    methods = {e.method for e in PATHS[path]}
    return methods | {"HEAD", "OPTIONS"} if "GET" in methods else methods | {"OPTIONS"}


@pytest.mark.parametrize("path", READABLE)
def test_head_answers_as_get_does_without_a_body(tenant_alpha: TenantFixture, path: str) -> None:
    headers = admin_headers(tenant_alpha, PATHS[path])
    client: Client = tenant_alpha.client()
    got = client.get(path, **headers)
    head = client.head(path, **headers)
    assert head.status_code == got.status_code, head.content
    assert head.content == b""
    assert set(head["Allow"].split(", ")) == expected_methods(path)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_options_names_every_method_of_the_path(tenant_alpha: TenantFixture, path: str) -> None:
    response = tenant_alpha.client().options(path, **admin_headers(tenant_alpha, PATHS[path]))
    assert response.status_code == 200, response.content
    assert set(response.json()["methods"]) == expected_methods(path)
    assert set(response["Allow"].split(", ")) == expected_methods(path)
    assert "description" not in response.json()  # not the class's docstring


def test_options_is_refused_without_credentials(tenant_alpha: TenantFixture) -> None:
    response = tenant_alpha.client().options("/api/conversations")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_method_no_operation_serves_is_a_405_naming_the_others(tenant_alpha: TenantFixture) -> None:
    response = tenant_alpha.client().put(
        "/api/conversations", **admin_headers(tenant_alpha, PATHS["/api/conversations"])
    )
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response["Allow"].split(", ")) == {"GET", "POST", "HEAD", "OPTIONS"}


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_405_says_what_a_path_served_by_one_class_says(tenant_alpha: TenantFixture, language: str) -> None:
    """Two paths' 405s read differently: ``Method "PUT" not allowed.`` and ``Method “PUT” not allowed.``, and in
    Chinese two sentences of different grammar."""
    one_class = "/api/quota"  # usage.QuotaApi.as_view(), not apps.api.routing.operations
    client = tenant_alpha.client()
    said = {
        path: client.put(path, HTTP_ACCEPT_LANGUAGE=language, **admin_headers(tenant_alpha, PATHS[path])).json()
        for path in ("/api/conversations", one_class)
    }
    assert said["/api/conversations"] == said[one_class], said
    assert said[one_class]["error"]["code"] == "method_not_allowed"
