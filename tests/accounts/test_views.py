"""Session login on tenant hosts."""

from __future__ import annotations

import pytest

from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db


def test_login_page_prefills_the_email_and_welcomes(tenant_alpha: TenantFixture) -> None:
    page = tenant_alpha.client().get("/login/?email=new@x.example&welcome=1", HTTP_ACCEPT_LANGUAGE="en")
    body = page.content.decode()
    assert 'value="new@x.example"' in body
    assert "Your workspace is ready" in body


def test_login_with_any_case_email_then_logout(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client()
    response = client.post(
        "/login/", {"username": tenant_alpha.admin_email.upper(), "password": tenant_alpha.admin_password}
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/logout/")["Location"] == "/login/"  # logout is POST only: a GET does not log out
    assert client.get("/dashboard/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_wrong_password_shows_one_message_for_any_cause(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    wrong_password = client.post("/login/", {"username": tenant_alpha.admin_email, "password": "nope"})
    no_such_user = client.post("/login/", {"username": "ghost@alpha.example.com", "password": "nope"})
    for response in (wrong_password, no_such_user):
        assert response.status_code == 400
        assert "The email or password is not correct." in response.content.decode()


def test_the_root_sends_visitors_to_log_in(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client()
    assert client.get("/")["Location"] == "/dashboard/"
    assert client.get("/dashboard/")["Location"] == "/login/?next=/dashboard/"
