"""The tenant audit trail: what is recorded, that it is append-only, and how admins read it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import DatabaseError, transaction
from django.test import Client
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from tests.conftest import ADMIN_PASSWORD, TenantFixture, admin_of, bearer, jwt_pair, make_member

pytestmark = pytest.mark.django_db


def admin_api(tenant: TenantFixture) -> Client:
    return tenant.client(**bearer(jwt_pair(tenant, admin_of(tenant))["access"]))


def json_call(client: Client, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(path, data or {}, content_type="application/json")


def actions(tenant: TenantFixture) -> list[str]:
    with schema_context(tenant.tenant.schema_name):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def test_the_identity_lifecycle_is_recorded(tenant_alpha: TenantFixture) -> None:
    client = admin_api(tenant_alpha)
    user = json_call(client, "post", "/api/users", {"email": "life@alpha.example.com", "password": "Life-Cycle-2026"})
    uid = user.json()["id"]
    json_call(client, "patch", f"/api/users/{uid}", {"role": "viewer"})
    json_call(client, "post", f"/api/users/{uid}/deactivate")
    json_call(client, "post", f"/api/users/{uid}/reactivate")
    invitation = json_call(client, "post", "/api/invitations", {"email": "inv@alpha.example.com"}).json()
    client.delete(f"/api/invitations/{invitation['id']}")
    key = json_call(client, "post", "/api/api-keys", {"name": "k"}).json()
    client.delete(f"/api/api-keys/{key['id']}")
    client.delete(f"/api/users/{uid}")
    recorded = actions(tenant_alpha)
    for action in (
        "user.created", "user.role_changed", "user.deactivated", "user.reactivated", "user.invited",
        "user.invitation_revoked", "api_key.created", "api_key.revoked", "user.deleted",
    ):  # fmt: skip
        assert action in recorded, action
    with schema_context(tenant_alpha.tenant.schema_name):
        event = AuditEvent.objects.get(action="user.role_changed")
        assert event.actor_label == tenant_alpha.admin_email
        assert event.target_type == "user"
        assert event.target_id == str(uid)
        assert event.metadata == {"role": ["user", "viewer"]}
        assert event.ip == "127.0.0.1"


def test_api_key_actions_name_the_key(tenant_alpha: TenantFixture) -> None:
    from tests.conftest import api_key_secret

    secret = api_key_secret(tenant_alpha, "admin")
    tenant_alpha.client().post(
        "/api/invitations", {"email": "bykey@alpha.example.com"}, content_type="application/json", **bearer(secret)
    )
    with schema_context(tenant_alpha.tenant.schema_name):
        event = AuditEvent.objects.get(action="user.invited")
        assert event.actor_label == f"api-key:{secret[3:15]}"
        assert event.actor_api_key_id is not None


def test_logins_and_logouts_are_recorded(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client()
    client.post("/login/", {"username": tenant_alpha.admin_email, "password": "wrong"})
    client.post("/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password})
    client.post("/logout/")
    assert actions(tenant_alpha)[-3:] == ["auth.login_failed", "auth.login", "auth.logout"]


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_the_trail_is_append_only_in_the_database(tenant_alpha: TenantFixture, statement: str) -> None:
    make_member(tenant_alpha, "user")
    tenant_alpha.client().post("/login/", {"username": tenant_alpha.admin_email, "password": "wrong"})
    with schema_context(tenant_alpha.tenant.schema_name):
        events = AuditEvent.objects.all()
        assert events.exists()
        change = (lambda: events.update(action="tampered")) if statement == "update" else events.delete
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            change()
        assert not AuditEvent.objects.filter(action="tampered").exists()


def test_deleting_a_user_keeps_their_events(tenant_alpha: TenantFixture) -> None:
    member = make_member(tenant_alpha, "user")
    member_client = tenant_alpha.client()
    member_client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
    assert admin_api(tenant_alpha).delete(f"/api/users/{member.pk}").status_code == 204
    with schema_context(tenant_alpha.tenant.schema_name):
        assert AuditEvent.objects.filter(actor_user_id=member.pk, action="auth.login").exists()


class TestReading:
    def test_api_filters_and_paginates(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        for _ in range(3):
            client.post("/login/", {"username": tenant_alpha.admin_email, "password": "wrong"})
        api = admin_api(tenant_alpha)
        failed = api.get("/api/audit-events?action=auth.login_failed&page_size=2").json()
        assert failed["count"] == 3
        assert len(failed["results"]) == 2
        assert failed["next"]
        assert {e["action"] for e in failed["results"]} == {"auth.login_failed"}
        family = api.get("/api/audit-events?action=auth.").json()
        assert family["count"] >= 3
        by_actor = api.get(f"/api/audit-events?actor={tenant_alpha.admin_email}").json()
        assert all(e["actor"] == tenant_alpha.admin_email for e in by_actor["results"])
        future = api.get("/api/audit-events?from=2999-01-01T00:00:00Z").json()
        assert future["count"] == 0

    @pytest.mark.parametrize(
        "query",
        ["from=yesterday", "to=2020-13-01", "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "page=0",
         "from=0001-01-01", "to=0001-01-01T07:59"],  # before the year 1 in UTC, read at +08:00: a 500 until 2026-12-07
    )  # fmt: skip
    def test_bad_filters_are_400s(self, tenant_alpha: TenantFixture, query: str) -> None:
        response = admin_api(tenant_alpha).get(f"/api/audit-events?{query}")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_input"

    def test_the_web_page_filters(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        client.post("/login/", {"username": tenant_alpha.admin_email, "password": "wrong"})
        client.post("/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password})
        page = client.get("/audit/?action=auth.login_failed", HTTP_ACCEPT_LANGUAGE="en")
        assert page.status_code == 200
        body = page.content.decode()
        assert "auth.login_failed" in body
        assert "Login failed" in body
        assert '<code class="muted small">auth.login</code>' not in body
        assert client.get("/audit/?date_from=2026-02-01&date_to=2026-01-01").status_code == 400
        # The calendar's first and last days: every event, not a date overflow's 500.
        for query in ("date_to=9999-12-31", "date_from=0001-01-01", "date_from=0001-01-01&date_to=9999-12-31"):
            page = client.get(f"/audit/?action=auth.login_failed&{query}", HTTP_ACCEPT_LANGUAGE="en")
            assert page.status_code == 200, query
            assert "Login failed" in page.content.decode()


def test_the_page_words_actions_and_details(tenant_alpha: TenantFixture) -> None:
    """Actions in words (the code beside), money in yuan, nothing as "—", a change as before → after."""
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    client.post("/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password})
    member = make_member(tenant_alpha, "user", email="worded@alpha.example.com")
    assert client.post("/usage/spending-cap/", {"cap_yuan": "1234.5"}).status_code == 302
    assert client.post("/usage/spending-cap/", {"action": "remove"}).status_code == 302
    assert client.post(f"/team/{member.pk}/role/", {"role": "viewer"}).status_code == 302
    body = client.get("/audit/").content.decode()
    rows = body.split('data-testid="audit-events"')[1]
    assert 'Spending cap changed <code class="muted small">billing.spending_cap_set</code>' in rows
    assert 'data-testid="audit-details">¥1,234.50 → —</td>' in rows
    assert 'data-testid="audit-details">— → ¥1,234.50</td>' in rows
    assert "Role changed" in rows
    assert "role: User → Viewer" in rows  # stored codes in words
    assert "through: the web pages" in rows  # the login's channel
    assert f"user #{member.pk}" in rows
    assert "None" not in rows
    zh = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "Spending cap changed" not in zh  # translated
    assert "billing.spending_cap_set" in zh
    details = " ".join(re.findall(r'data-testid="audit-details">([^<]*)<', zh))
    for english in ("role", "User", "Viewer", "through", "web", "user #"):
        assert english not in details, (english, details)
    assert f"user #{member.pk}" not in zh.split('data-testid="audit-events"')[1]


def test_every_recorded_action_has_words() -> None:
    """Each action the code records is named on the page, so none shows only as its code."""
    from pathlib import Path

    from apps.audit.templatetags.audit_format import ACTIONS

    root = Path(__file__).resolve().parents[2] / "apps"
    recorded = {  # each quoted action on a line that records one (``action="a" if x else "b"`` too)
        action
        for source in root.rglob("*.py")
        for line in source.read_text().splitlines()
        if "action=" in line
        for action in re.findall(r'"([a-z_]+\.[a-z_.]+)"', line)
    }
    assert len(recorded) > 30
    assert recorded - set(ACTIONS) == set()
