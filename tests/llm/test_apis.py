"""The workspace's own model server through the API and its page: a stored key stays with its server."""

from __future__ import annotations

from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.accounts.permissions import Role
from apps.audit.models import AuditEvent
from apps.core.crypto import decrypt
from apps.llm.models import ModelProvider
from tests.accounts.test_pages import logged_in
from tests.chat.test_services_and_providers import admin, send
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db

HERE = "http://127.0.0.1:9/v1"
MOVED = (
    "The base URL points to another server now: enter the API key again, or remove it. "
    "The stored key is not sent to another server."
)


def stored(tenant: TenantFixture) -> tuple[str, str]:
    with schema_context(tenant.tenant.schema_name):
        provider = ModelProvider.objects.get()
        return provider.base_url, decrypt(provider.api_key_encrypted)


def saves(tenant: TenantFixture) -> int:
    with schema_context(tenant.tenant.schema_name):
        return AuditEvent.objects.filter(action="model_provider.saved").count()


class TestTheKeyStaysWithItsServer:
    @pytest.mark.parametrize(
        "elsewhere",
        ["http://127.0.0.1:10/v1", "https://127.0.0.1:9/v1", "http://127.0.0.2:9/v1", "http://localhost:9/v1"],
    )
    def test_a_base_url_on_another_server_without_the_key_is_refused(
        self, tenant_alpha: TenantFixture, elsewhere: str
    ) -> None:
        """An admin who never saw the key moved the URL to a server of theirs and pressed "test": the stored key
        went there."""
        client = admin(tenant_alpha)
        body = {"base_url": HERE, "model_ids": ["m"]}
        assert send(client, "put", "/api/model-provider", {**body, "api_key": "sk-stored"}).status_code == 200
        before = saves(tenant_alpha)
        response = send(client, "put", "/api/model-provider", {**body, "base_url": elsewhere})
        assert response.status_code == 400, response.content
        assert response.json()["error"] == {"code": "invalid_input", "message": MOVED, "details": {"api_key": [MOVED]}}
        assert stored(tenant_alpha) == (HERE, "sk-stored")
        assert saves(tenant_alpha) == before

    @pytest.mark.parametrize("api_key", ["sk-new", ""])
    def test_a_base_url_on_another_server_takes_a_new_key_or_none(
        self, tenant_alpha: TenantFixture, api_key: str
    ) -> None:
        client = admin(tenant_alpha)
        body = {"base_url": HERE, "model_ids": ["m"]}
        send(client, "put", "/api/model-provider", {**body, "api_key": "sk-stored"})
        moved = {**body, "base_url": "http://127.0.0.1:10/v1", "api_key": api_key}
        response = send(client, "put", "/api/model-provider", moved)
        assert response.status_code == 200, response.content
        assert response.json()["has_api_key"] is bool(api_key)
        assert stored(tenant_alpha) == ("http://127.0.0.1:10/v1", api_key)

    @pytest.mark.parametrize("same", ["http://127.0.0.1:9/openai/v1", "HTTP://127.0.0.1:9/v1?x=1"])
    def test_the_same_server_keeps_the_key(self, tenant_alpha: TenantFixture, same: str) -> None:
        client = admin(tenant_alpha)
        body = {"base_url": HERE, "model_ids": ["m"]}
        send(client, "put", "/api/model-provider", {**body, "api_key": "sk-stored"})
        response = send(client, "put", "/api/model-provider", {**body, "base_url": same})
        assert response.status_code == 200, response.content
        assert stored(tenant_alpha)[1] == "sk-stored"

    def test_without_a_stored_key_the_url_moves_freely(self, tenant_alpha: TenantFixture) -> None:
        client = admin(tenant_alpha)
        send(client, "put", "/api/model-provider", {"base_url": HERE, "model_ids": ["m"]})
        moved = send(client, "put", "/api/model-provider", {"base_url": "http://127.0.0.1:10/v1", "model_ids": ["m"]})
        assert moved.status_code == 200, moved.content

    def test_the_page_refuses_it_too_and_can_remove_the_key(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        form: dict[str, Any] = {"base_url": HERE, "model_ids": "m", "is_active": "on"}
        assert client.post("/settings/model/", {**form, "api_key": "sk-stored"}).status_code == 302
        assert "Remove the stored API key" in client.get("/settings/model/").content.decode()
        moved = {**form, "base_url": "http://127.0.0.1:10/v1"}
        refused = client.post("/settings/model/", moved)
        assert refused.status_code == 400
        assert "enter the API key again, or remove it" in refused.content.decode()
        assert stored(tenant_alpha) == (HERE, "sk-stored")
        assert client.post("/settings/model/", {**moved, "clear_api_key": "on"}).status_code == 302
        assert stored(tenant_alpha) == ("http://127.0.0.1:10/v1", "")
        assert "Remove the stored API key" not in client.get("/settings/model/").content.decode()
        again = {**form, "api_key": "sk-new"}
        assert client.post("/settings/model/", again).status_code == 302
        assert stored(tenant_alpha) == (HERE, "sk-new")


class TestModelNames:
    @pytest.mark.parametrize("model", ["gpt\nturbo", "gpt\tturbo", "gpt\x1bturbo", "gpt\x85turbo"])
    def test_a_model_name_with_a_control_character_is_refused(self, tenant_alpha: TenantFixture, model: str) -> None:
        """It was saved, and the settings page, which lists the models one a line, showed "gpt\\nturbo" as two models:
        saving the page for any other change replaced it with "gpt" and "turbo"."""
        client = admin(tenant_alpha)
        refused = send(client, "put", "/api/model-provider", {"base_url": HERE, "model_ids": ["m", model]})
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["details"] == {"model_ids": ["A model name cannot hold control characters."]}
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()
        assert saves(tenant_alpha) == 0

    def test_a_model_name_with_a_comma_is_refused(self, tenant_alpha: TenantFixture) -> None:
        """A name "a,b" was saved as one model, and saving the settings page, which takes commas between names, for any
        other change made it two."""
        refused = send(admin(tenant_alpha), "put", "/api/model-provider", {"base_url": HERE, "model_ids": ["m", "a,b"]})
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["details"] == {
            "model_ids": ["A model name cannot hold a comma: the settings page separates names with commas."]
        }
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not ModelProvider.objects.exists()
