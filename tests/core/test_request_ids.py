"""Each request's id (X-Request-ID): in its answer, on the 500 to quote, and in the log lines of what it queued."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django_guid import clear_guid, set_guid

from apps.accounts.models import Role
from apps.core.views import server_error
from tests.accounts.test_pages import logged_in
from tests.conftest import TenantFixture, api_key_secret, bearer

pytestmark = pytest.mark.django_db

AN_ID = re.compile(r"[0-9a-f]{32}")


def test_every_answer_carries_an_id_of_its_own(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client()
    answers = [
        client.get("/login/"),
        client.get("/no-such-page/"),
        client.get("/api/conversations"),  # 401
        client.get("/v1/models", **bearer(api_key_secret(tenant_alpha, Role.USER))),
    ]
    ids = [answer["X-Request-ID"] for answer in answers]
    assert all(AN_ID.fullmatch(each) for each in ids), ids
    assert len(set(ids)) == len(ids)
    assert "X-Request-ID" in answers[-1]["Access-Control-Expose-Headers"]  # a browser app on /v1 may read it


def test_a_proxys_id_is_kept_and_anything_else_replaced(tenant_alpha: TenantFixture) -> None:
    proxys = uuid.uuid4().hex
    assert tenant_alpha.client().get("/login/", HTTP_X_REQUEST_ID=proxys)["X-Request-ID"] == proxys
    made_up = tenant_alpha.client().get("/login/", HTTP_X_REQUEST_ID="<script>\r\nSet-Cookie: a=b")["X-Request-ID"]
    assert AN_ID.fullmatch(made_up)


def test_a_500_gives_the_id_to_quote(tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.chat import apis

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(apis, "conversation_list", broken)
    client = logged_in(tenant_alpha, Role.USER)
    client.raise_request_exception = False
    answer = client.get("/api/conversations")
    assert answer.status_code == 500
    assert answer.json()["error"]["details"] == {"request_id": answer["X-Request-ID"]}


def test_the_500_page_shows_the_id(rf: Any) -> None:
    set_guid("0123456789abcdef0123456789abcdef")
    try:
        page = server_error(rf.get("/chat/"))
    finally:
        clear_guid()
    assert page.status_code == 500
    assert b"<code>0123456789abcdef0123456789abcdef</code>" in page.content
