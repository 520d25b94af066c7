"""A failed turn's error is stored once and read in each reader's language: on the page, from the API and in
the download (apps.core.languages)."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.chat.models import Conversation, Message
from tests.chat.test_pages import member_and_client
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db

# A model server that is down, in each language: our sentence, and the guard's words nested in it.
DOWN = {
    "en": "The model server could not be reached: Nothing answered at this address: no server is listening there, "
    "or it cannot be reached.",
    "zh-hans": "无法连接模型服务器：此地址没有应答：那里没有服务器在监听，或无法连接。",
}
FAILED = {"en": "The reply failed: {}", "zh-hans": "回复失败：{}"}


def read_in(client: Any, conversation: int, language: str) -> tuple[str, str, str]:
    """The page, the failed reply's ``error`` from the API and the download, in ``language``."""
    page = client.get(f"/chat/{conversation}/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    listed = client.get(f"/api/conversations/{conversation}/messages", HTTP_ACCEPT_LANGUAGE=language).json()
    (error,) = [message["error"] for message in listed["results"] if message["status"] == "error"]
    download = client.get(f"/api/conversations/{conversation}/export", HTTP_ACCEPT_LANGUAGE=language)
    return html.unescape(page), error, download.content.decode()


@pytest.mark.parametrize(("written", "read"), [("en", "zh-hans"), ("zh-hans", "en")])
def test_a_turn_that_failed_in_one_language_reads_in_the_other(
    tenant_alpha: TenantFixture, settings: Any, written: str, read: str
) -> None:
    """It was stored in the failing request's language and shown as such inside the reader's frame:
    "回复失败：The model server could not be reached: …"."""
    settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"
    _member, client = member_and_client(tenant_alpha)
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()["id"]
    failed = client.post(f"/api/conversations/{conversation}/messages", {"content": "Levels at S001?"},
                         content_type="application/json", HTTP_ACCEPT_LANGUAGE=written)  # fmt: skip
    assert failed.status_code == 502
    assert failed.json()["error"]["message"] == DOWN[written]  # the failing request is answered in its own
    with schema_context(tenant_alpha.tenant.schema_name):
        stored = Message.objects.get(conversation_id=conversation, status="error")
    assert stored.error == DOWN[written]  # the column keeps the storing request's language
    page, error, download = read_in(client, conversation, read)
    assert FAILED[read].format(DOWN[read]) in page
    assert error == DOWN[read]
    assert f"*{FAILED[read].format(DOWN[read])}*" in download
    page, error, download = read_in(client, conversation, written)
    assert (FAILED[written].format(DOWN[written]) in page, error) == (True, DOWN[written])


def test_an_error_stored_before_its_translations_were_kept_reads_as_stored(tenant_alpha: TenantFixture) -> None:
    member, client = member_and_client(tenant_alpha)
    with schema_context(tenant_alpha.tenant.schema_name):
        conversation = Conversation.objects.create(user=member, title="Levels")
        Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
        Message.objects.create(conversation=conversation, role="assistant", content="", status="error",
                               error="The model server answered 500.")  # fmt: skip
    page, error, download = read_in(client, conversation.pk, "zh-hans")
    assert "回复失败：The model server answered 500." in page
    assert error == "The model server answered 500."
    assert "*回复失败：The model server answered 500.*" in download
