"""Session login on tenant hosts."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from apps.accounts.models import Role
from tests.conftest import ADMIN_PASSWORD, TenantFixture, make_member

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


def language_of(tenant: TenantFixture, member: object) -> str:
    with schema_context(tenant.tenant.schema_name):
        member.refresh_from_db()  # type: ignore[attr-defined]
        return str(member.language)  # type: ignore[attr-defined]


def test_logging_in_chooses_no_language(tenant_alpha: TenantFixture) -> None:
    member = make_member(tenant_alpha, Role.USER)
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    logged_in = client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
    assert logged_in.status_code == 302
    assert settings.LANGUAGE_COOKIE_NAME not in logged_in.cookies
    assert language_of(tenant_alpha, member) == ""


def test_the_language_switch_keeps_a_members_choice_for_every_browser(tenant_alpha: TenantFixture) -> None:
    member = make_member(tenant_alpha, Role.VIEWER)
    laptop = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    laptop.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
    switched = laptop.post("/i18n/setlang/", {"language": "zh-hans", "next": "/dashboard/"})
    assert switched.status_code == 302
    assert switched["Location"] == "/dashboard/"
    assert switched.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert language_of(tenant_alpha, member) == "zh-hans"
    assert laptop.post("/i18n/setlang/", {"language": "de"}).status_code == 302  # not one of ours: nothing kept
    assert language_of(tenant_alpha, member) == "zh-hans"

    phone = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")  # a browser that never saw the choice
    logged_in = phone.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
    assert logged_in.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert phone.get("/dashboard/").headers["Content-Language"] == "zh-hans"


def test_the_language_switch_works_for_visitors_too(tenant_alpha: TenantFixture) -> None:
    switched = tenant_alpha.client().post("/i18n/setlang/", {"language": "en", "next": "/login/"})
    assert switched.status_code == 302
    assert switched.cookies[settings.LANGUAGE_COOKIE_NAME].value == "en"
