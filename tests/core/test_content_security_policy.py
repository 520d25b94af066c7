"""The Content-Security-Policy: the second line of defence behind escaping and nh3, and pages that keep working
under it (no inline script, no event handler attribute)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, Role
from apps.mcp.models import McpService
from tests.accounts.test_pages import logged_in
from tests.conftest import TenantFixture, api_key_secret

pytestmark = pytest.mark.django_db

#: The admin's pages, each with a form that asks before it is sent.
PAGES = ["/dashboard/", "/chat/", "/team/", "/api-keys/", "/services/", "/settings/model/", "/usage/", "/audit/",
         "/profile/", "/api/docs/"]  # fmt: skip
# A script element without src that would run (json_script's data, of type application/json, does not).
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", re.IGNORECASE)
_EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)


def _directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def test_every_page_forbids_scripts_but_our_own_files(tenant_alpha: TenantFixture) -> None:
    policy = _directives(logged_in(tenant_alpha, Role.ADMIN).get("/chat/")["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "img-src" in policy
    assert all(source in ("'self'", "data:") for source in policy["img-src"])


@pytest.mark.parametrize("client", ["anonymous", "api"])
def test_the_login_page_and_the_api_send_it_too(tenant_alpha: TenantFixture, client: str) -> None:
    if client == "anonymous":
        response = tenant_alpha.client().get("/login/")
    else:
        secret = api_key_secret(tenant_alpha, Role.VIEWER)
        response = Client(HTTP_HOST=tenant_alpha.host, HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/auth/me")
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_need_no_inline_script(tenant_alpha: TenantFixture, path: str) -> None:
    """An inline ``<script>`` or an ``onsubmit=`` the policy blocks would break the page: the confirmation before
    deleting a member or revoking a key went without a question, the API docs stayed blank."""
    client = logged_in(tenant_alpha, Role.ADMIN)
    with schema_context(tenant_alpha.tenant.schema_name):
        McpService.objects.get_or_create(slug="csp", defaults={"name": "CSP", "url": "http://127.0.0.1:9/mcp"})
    api_key_secret(tenant_alpha, Role.USER)
    response = client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert _INLINE_SCRIPT.findall(page) == []
    assert _EVENT_HANDLER.findall(page) == []


def test_the_api_docs_start_up_script_is_a_file(tenant_alpha: TenantFixture) -> None:
    client = logged_in(tenant_alpha, Role.ADMIN)
    page = client.get("/api/docs/").content.decode()
    script = re.search(r'<script src="([^"]*script[^"]*)"', page)
    assert script is not None
    response = client.get(script.group(1).replace("&amp;", "&"))
    assert response.status_code == 200
    assert "SwaggerUIBundle" in response.content.decode()


def test_every_page_loads_the_script_that_asks_before_a_form_is_sent(tenant_alpha: TenantFixture) -> None:
    api_key_secret(tenant_alpha, Role.USER)
    with schema_context(tenant_alpha.tenant.schema_name):
        assert ApiKey.objects.exists()
    page = logged_in(tenant_alpha, Role.ADMIN).get("/api-keys/").content.decode()
    assert 'data-testid="revoke-key"' in page
    assert "js/confirm.js" in page


@pytest.mark.parametrize("path", ["/admin/", "/admin/tenants/tenant/", "/admin/tenants/platformauditevent/",
                                  "/admin/plans/plan/", "/admin/accounts/user/"])  # fmt: skip
def test_the_staff_admin_needs_no_inline_script(staff: Client, path: str) -> None:
    response = staff.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert _INLINE_SCRIPT.findall(page) == []
    assert _EVENT_HANDLER.findall(page) == []
    assert "script-src 'self'" in response["Content-Security-Policy"]
