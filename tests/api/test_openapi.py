"""The OpenAPI schema and docs, on tenant hosts, describing how to authenticate."""

from __future__ import annotations

import pytest
from django.test import Client

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
