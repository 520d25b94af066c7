"""The identity pages: who sees them, what they do, in both languages."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, Invitation, Role, User
from apps.accounts.permissions import Perm, role_has
from tests.conftest import ADMIN_PASSWORD, TenantFixture, make_member

pytestmark = pytest.mark.django_db

PAGES = {"/team/": Perm.MANAGE_USERS, "/api-keys/": Perm.MANAGE_API_KEYS, "/audit/": Perm.VIEW_AUDIT,
         "/settings/model/": Perm.MANAGE_SERVICES, "/services/": Perm.USE_MCP_SERVICES}  # fmt: skip
NAV = {"/team/": "nav-team", "/api-keys/": "nav-api-keys", "/audit/": "nav-audit", "/settings/model/": "nav-model",
       "/services/": "nav-services"}  # fmt: skip


def logged_in(tenant: TenantFixture, role: str) -> Client:
    member = make_member(tenant, role)
    client = tenant.client(HTTP_ACCEPT_LANGUAGE="en")
    assert client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD}).status_code == 302
    return client


@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER, Role.VIEWER])
@pytest.mark.parametrize("path", list(PAGES))
def test_pages_follow_the_permission_map(tenant_alpha: TenantFixture, role: str, path: str) -> None:
    client = logged_in(tenant_alpha, role)
    response = client.get(path)
    dashboard = client.get("/dashboard/").content.decode()
    if role_has(role, PAGES[path]):
        assert response.status_code == 200
        assert f'data-testid="{NAV[path]}"' in dashboard
    else:
        assert response.status_code == 403
        page = response.content.decode()
        assert f"<code>{PAGES[path]}</code>" in page  # the code beside, for support
        says = (
            "Viewers can read their own conversations only"
            if role_has(Role.USER, PAGES[path])
            else ("Only the workspace&#x27;s admins can open this page; your role is " + Role(role).label)
        )
        assert says in page  # in words, not only the permission's code
        assert (
            f'href="/dashboard/" data-testid="error-back">Back to {tenant_alpha.tenant.name}</a>' in page
        )  # not the platform's site
        assert f'data-testid="{NAV[path]}"' not in dashboard
    assert client.get("/profile/").status_code == 200


@pytest.mark.parametrize("path", [*PAGES, "/profile/"])
def test_pages_need_a_login(tenant_alpha: TenantFixture, path: str) -> None:
    response = tenant_alpha.client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_a_viewer_cannot_post_to_admin_pages_either(tenant_alpha: TenantFixture) -> None:
    client = logged_in(tenant_alpha, Role.VIEWER)
    target = make_member(tenant_alpha, Role.USER)
    assert client.post(f"/team/{target.pk}/delete/").status_code == 403
    assert client.post("/team/", {"email": "x@alpha.example.com", "role": "admin"}).status_code == 403
    assert client.post("/api-keys/", {"name": "sneaky", "role": "admin"}).status_code == 403
    with schema_context(tenant_alpha.tenant.schema_name):
        assert User.objects.filter(pk=target.pk).exists()
        assert not Invitation.objects.exists()
        assert not ApiKey.objects.exists()


class TestTeamPage:
    def test_invite_change_role_deactivate_reactivate(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert client.post("/team/", {"email": "joiner@alpha.example.com", "role": "viewer"}).status_code == 302
        page = client.get("/team/").content.decode()
        assert "joiner@alpha.example.com" in page
        member = make_member(tenant_alpha, Role.USER)
        client.post(f"/team/{member.pk}/role/", {"role": "viewer"})
        client.post(f"/team/{member.pk}/deactivate/")
        with schema_context(tenant_alpha.tenant.schema_name):
            member.refresh_from_db()
            assert (member.role, member.is_active) == (Role.VIEWER, False)
        client.post(f"/team/{member.pk}/reactivate/")
        with schema_context(tenant_alpha.tenant.schema_name):
            member.refresh_from_db()
            assert member.is_active

    def test_the_last_admin_is_refused_with_a_message(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
        client.post("/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password})
        with schema_context(tenant_alpha.tenant.schema_name):
            admin = User.objects.get(email=tenant_alpha.admin_email)
        response = client.post(f"/team/{admin.pk}/deactivate/", follow=True)
        assert "is the last active admin" in response.content.decode()
        with schema_context(tenant_alpha.tenant.schema_name):
            assert User.objects.get(pk=admin.pk).is_active


class TestApiKeysPage:
    def test_the_secret_is_shown_once(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        created = client.post("/api-keys/", {"name": "pipeline", "role": "viewer"})
        assert created.status_code == 201
        assert created["Cache-Control"] == "no-store"
        secret = re.search(r"hn_[A-Za-z0-9_-]{40,}", created.content.decode())
        assert secret is not None
        listing = client.get("/api-keys/").content.decode()
        assert secret.group(0) not in listing
        assert "pipeline" in listing
        assert tenant_alpha.client().get("/api/auth/me", HTTP_X_API_KEY=secret.group(0)).status_code == 200

    def test_each_key_shows_its_calls_this_month(self, tenant_alpha: TenantFixture) -> None:
        import datetime as dt

        from apps.usage import limits
        from apps.usage.models import ApiKeyUsage, UsageEvent

        client = logged_in(tenant_alpha, Role.ADMIN)
        for name in ("busy", "quiet"):
            client.post("/api-keys/", {"name": name, "role": "user"})
        with schema_context(tenant_alpha.tenant.schema_name):
            busy = ApiKey.objects.get(name="busy")
            ApiKeyUsage.objects.create(api_key=busy, date=limits.today(), api_calls=1200)
            UsageEvent.objects.create(api_key=busy, kind="model", day=limits.today())  # not flushed yet
            last_month = limits.period_start(limits.today()) - dt.timedelta(days=1)
            ApiKeyUsage.objects.create(api_key=busy, date=last_month, api_calls=99)  # another month
        page = client.get("/api-keys/").content.decode()
        cells = re.findall(r'<td>(\w+)</td>.*?data-testid="key-calls">(?:<a [^>]*>)?([\d,]+)<', page, re.S)
        assert sorted(cells) == [("busy", "1,201"), ("quiet", "0")]

    def test_revoke(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        client.post("/api-keys/", {"name": "old", "role": "user"})
        with schema_context(tenant_alpha.tenant.schema_name):
            key = ApiKey.objects.get(name="old")
        assert client.post(f"/api-keys/{key.pk}/revoke/").status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert ApiKey.objects.get(pk=key.pk).revoked_at is not None

    def test_revoking_asks_first(self, tenant_alpha: TenantFixture) -> None:
        """Revoking breaks whatever uses the key, for good: one stray click must not do it (as removing a service)."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        client.post("/api-keys/", {"name": "pipeline <prod>", "role": "user"})
        form = re.search(r'<form [^>]*data-testid="revoke-key"[^>]*>', client.get("/api-keys/").content.decode())
        assert form
        assert "data-confirm=" in form.group(0)  # static/js/confirm.js asks (no onsubmit: the CSP blocks it)
        assert "onsubmit" not in form.group(0)
        assert "Revoke the key “pipeline &lt;prod&gt;”? Whatever uses it stops working at once" in form.group(0)


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", ["Team", "Invite someone", "Members"]), ("zh-hans", ["团队", "邀请成员", "成员"])],
)
def test_the_team_page_speaks_both_languages(tenant_alpha: TenantFixture, language: str, words: list[str]) -> None:
    client = logged_in(tenant_alpha, Role.ADMIN)
    page = client.get("/team/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    for word in words:
        assert word in page


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_language_switch_names_each_language_in_itself(tenant_alpha: TenantFixture, language: str) -> None:
    """Someone who cannot read the page's language still finds their own: "English", never "英语"."""
    page = tenant_alpha.client().get("/login/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    switch = page[page.index('class="lang-switch"') : page.index("</form>", page.index('class="lang-switch"'))]
    assert re.findall(r'value="([a-z-]+)" lang="[a-z-]+" aria-pressed="\w+">([^<]+)<', switch) == [
        ("zh-hans", "简体中文"), ("en", "English"),
    ]  # fmt: skip


def test_password_reset_page_says_the_same_for_any_address(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    known = client.post("/password-reset/", {"email": tenant_alpha.admin_email}, REMOTE_ADDR="10.5.5.1")
    unknown = client.post("/password-reset/", {"email": "ghost@alpha.example.com"}, REMOTE_ADDR="10.5.5.2")
    assert known.status_code == unknown.status_code == 200
    strip = re.compile(r"\S+@alpha\.example\.com|value=\"[A-Za-z0-9]{64}\"")  # the address and CSRF tokens
    assert strip.sub("", known.content.decode()) == strip.sub("", unknown.content.decode())


def test_the_members_page_lists_them_a_page_at_a_time(
    tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 members were one page of 400 KB and 5,800 elements, a role menu each: a page at a time, by email."""
    from apps.accounts import views

    monkeypatch.setattr(views, "TEAM_PAGE_MEMBERS", 5)
    client = logged_in(tenant_alpha, Role.ADMIN)
    for n in range(12):
        make_member(tenant_alpha, Role.USER, email=f"team-page-{n:02d}@example.com")
    with schema_context(tenant_alpha.tenant.schema_name):
        everyone = list(User.objects.order_by("email").values_list("email", flat=True))
    pages = -(-len(everyone) // 5)
    listed = []
    for number in range(1, pages + 1):
        page = client.get("/team/", {"page": number}).content.decode()
        rows = re.findall(r'<tr data-member="([^"]+)"', page)
        assert 1 <= len(rows) <= 5
        assert f"Page {number} of {pages}" in page
        listed += rows
    assert listed == everyone  # each once, in order
    not_a_page = client.get("/team/", {"page": "x"}).content.decode()
    assert re.findall(r'<tr data-member="([^"]+)"', not_a_page) == everyone[:5]
