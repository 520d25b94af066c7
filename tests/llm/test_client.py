""" "Test connection" of a workspace's own model server that answers what no model server should: the answer is a
400 ``model_server_unreachable`` in words, never a 500."""

from __future__ import annotations

import gzip
import html
import json
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.accounts.permissions import Role
from apps.llm.client import ModelServer, openai_client
from apps.llm.models import ModelProvider
from apps.llm.services import model_provider_save
from tests.accounts.test_pages import logged_in
from tests.chat.test_services_and_providers import admin, send
from tests.conftest import TEST_ACTOR, TenantFixture
from tests.processes import canned_server

pytestmark = pytest.mark.django_db

DEEP = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NOT_A_LIST = "is not an OpenAI-compatible list of models"
V1_HINT = "Check that the base URL is the API's, which usually ends in /v1."


def checked(tenant: TenantFixture, root: str) -> Any:
    """POST /api/model-provider/test with the workspace's server at ``root``."""
    with schema_context(tenant.tenant.schema_name):
        model_provider_save(actor=TEST_ACTOR, base_url=root, model_ids=["m"], api_key="sk-test")
    return send(admin(tenant), "post", "/api/model-provider/test")


def test_a_list_nested_deeper_than_the_parser_goes_is_not_a_model_list(tenant_alpha: TenantFixture) -> None:
    """json.loads raised RecursionError, which nothing caught: a 500."""
    with canned_server(DEEP, content_type="application/json") as root:
        response = checked(tenant_alpha, root)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "model_server_unreachable"
    assert NOT_A_LIST in response.json()["error"]["message"]


def test_an_error_nested_deeper_than_the_parser_goes_is_its_status(tenant_alpha: TenantFixture) -> None:
    with canned_server(b'{"error": ' + DEEP + b"}", status=500, content_type="application/json") as root:
        response = checked(tenant_alpha, root)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == "The model server answered 500."


def test_a_model_id_with_a_lone_surrogate_is_listed_in_whole_characters(tenant_alpha: TenantFixture) -> None:
    """``json.loads`` kept ``"\\ud800"``, which the JSON renderer could not encode: a 500. A pair stays the
    character it stands for."""
    body = b'{"data": [{"id": "m"}, {"id": "a\\ud800b"}, {"id": "\\ud83c\\udf0a"}]}'
    with canned_server(body, content_type="application/json") as root:
        response = checked(tenant_alpha, root)
    assert response.status_code == 200, response.content
    assert response.json() == {"offered": ["m", "a\ufffdb", "\U0001f30a"], "missing": []}


def test_an_error_message_with_a_lone_surrogate_is_said_in_whole_characters(tenant_alpha: TenantFixture) -> None:
    """In the API's answer and on the page (a message kept in the session for the next page)."""
    said = b'{"error": {"message": "no \\udc00 such \\ud83c\\udf0a model"}}'
    with canned_server(said, status=404, content_type="application/json") as root:
        response = checked(tenant_alpha, root)
        page = logged_in(tenant_alpha, Role.ADMIN).post("/settings/model/", {"action": "test"}, follow=True)
    said_here = "The model server answered 404 to GET /models: “no \ufffd such \U0001f30a model”. " + V1_HINT
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == said_here
    assert page.status_code == 200
    assert html.escape(said_here) in page.content.decode()


@pytest.mark.parametrize("status", [404, 405])
def test_a_wrong_path_hints_at_the_v1_of_the_base_url(tenant_alpha: TenantFixture, status: int) -> None:
    """A base URL without its /v1 answers GET /models with a 404 (or a 405): "The model server answered 404." said
    nothing of where to look, where the MCP checks hint at the path."""
    with canned_server(b"Not Found", status=status, content_type="text/plain") as root:
        response = checked(tenant_alpha, root)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == f"The model server answered {status} to GET /models. " + V1_HINT


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("compressed", [False, True])
def test_an_answer_past_the_limit_is_refused_as_it_is_read(
    tenant_alpha: TenantFixture, settings: Any, status: int, compressed: bool
) -> None:
    """The body of GET /models, or of its error, was read whole, whatever its size; compressed, the limit counts
    what it unpacks to."""
    settings.LLM_MODEL_LIST_MAX_BYTES = 100_000
    body = json.dumps({"data": [{"id": f"model-{i}"} for i in range(10_000)]}).encode()
    assert len(body) > 100_000
    headers = {"Content-Encoding": "gzip"} if compressed else {}
    sent = gzip.compress(body) if compressed else body
    with canned_server(sent, status=status, content_type="application/json", headers=headers) as root:
        response = checked(tenant_alpha, root)
        settings.LLM_MODEL_LIST_MAX_BYTES = len(body)
        fits = send(admin(tenant_alpha), "post", "/api/model-provider/test")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "model_server_unreachable"
    assert response.json()["error"]["message"].startswith(
        "The model server's answer to GET /models is larger than 97.7\xa0KB, the most HydroNet reads from it."
    )
    if status == 200:
        assert fits.status_code == 200, fits.content
        assert len(fits.json()["offered"]) == 10_000
    else:
        assert fits.json()["error"]["message"] == "The model server answered 500."
    with schema_context(tenant_alpha.tenant.schema_name):
        assert ModelProvider.objects.get().model_ids == ["m"]


def test_the_model_server_hears_who_we_are_and_nothing_of_our_platform() -> None:
    """openai would tell every model server, a workspace's own too, our operating system, architecture and the
    versions of Python and of the package: not sent. ``User-Agent`` names HydroNet; the key still goes."""
    heard: list[dict[str, str]] = []

    def listing(request: bytes) -> bytes:
        return b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'

    with canned_server(listing, content_type="application/json", heard=heard) as root:
        openai_client(ModelServer(f"{root}/v1", "sk-k", ("m",), tenant_supplied=False)).models.list()
    (headers,) = heard
    assert not [
        name for name in headers if name.startswith("x-stainless-") and not name.endswith(("-count", "-timeout"))
    ]
    assert headers["user-agent"] == "HydroNet"
    assert headers["authorization"] == "Bearer sk-k"
