"""JWT login, refresh rotation, logout, /me, and brute-force lockout."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.test import Client, override_settings

from apps.audit.models import AuditEvent
from tests.conftest import ADMIN_PASSWORD, TenantFixture, assert_read_as_the_orm_reads, bearer, make_member

pytestmark = pytest.mark.django_db


def login(client: Client, email: str, password: str, ip: str = "10.1.1.1") -> Any:
    return client.post(
        "/api/auth/login", {"email": email, "password": password}, content_type="application/json", REMOTE_ADDR=ip
    )


def post(client: Client, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data, content_type="application/json")


def audit_actions(tenant: TenantFixture) -> list[str]:
    from django_tenants.utils import schema_context

    with schema_context(tenant.tenant.schema_name):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


class TestLogin:
    def test_returns_tokens_and_the_user(self, tenant_alpha: TenantFixture) -> None:
        response = login(tenant_alpha.client(), tenant_alpha.admin_email.upper(), tenant_alpha.admin_password)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access", "refresh", "user", "tenant"}
        assert body["tenant"] == "alpha"
        assert body["user"]["email"] == tenant_alpha.admin_email
        assert body["user"]["role"] == "admin"
        assert isinstance(body["user"]["id"], int)
        claims = jwt.decode(body["access"], settings.SECRET_KEY, algorithms=["HS256"])
        assert claims["tenant"] == "t_alpha"
        assert claims["token_type"] == "access"
        assert claims["exp"] - claims["iat"] == 15 * 60
        refresh = jwt.decode(body["refresh"], settings.SECRET_KEY, algorithms=["HS256"])
        assert refresh["exp"] - refresh["iat"] == 7 * 24 * 3600
        assert refresh["tenant"] == "t_alpha"
        assert audit_actions(tenant_alpha)[-1] == "auth.login"

    def test_wrong_password_and_unknown_email_look_the_same(self, tenant_alpha: TenantFixture) -> None:
        wrong = login(tenant_alpha.client(), tenant_alpha.admin_email, "wrong-password")
        unknown = login(tenant_alpha.client(), "nobody@alpha.example.com", "wrong-password")
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        assert wrong.json()["error"]["code"] == "invalid_credentials"
        assert audit_actions(tenant_alpha)[-2:] == ["auth.login_failed", "auth.login_failed"]

    def test_a_deactivated_member_cannot_log_in(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, "user")
        from django_tenants.utils import schema_context

        with schema_context(tenant_alpha.tenant.schema_name):
            member.is_active = False
            member.save(update_fields=["is_active"])
        assert login(tenant_alpha.client(), member.email, ADMIN_PASSWORD).status_code == 401

    @pytest.mark.parametrize(
        "body", [{}, {"email": "a@b.c"}, {"password": "x"}, {"email": "a", "password": "b", "x": 1}]
    )
    def test_bad_input_is_a_400(self, tenant_alpha: TenantFixture, body: dict[str, Any]) -> None:
        response = post(tenant_alpha.client(), "/api/auth/login", body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_input"

    def test_an_old_bearer_header_does_not_block_logging_in(self, tenant_alpha: TenantFixture) -> None:
        response = tenant_alpha.client().post(
            "/api/auth/login",
            {"email": tenant_alpha.admin_email, "password": tenant_alpha.admin_password},
            content_type="application/json",
            **bearer("expired.or.garbage"),
        )
        assert response.status_code == 200


class TestRefreshAndLogout:
    def tokens(self, tenant: TenantFixture) -> dict[str, Any]:
        body: dict[str, Any] = login(tenant.client(), tenant.admin_email, tenant.admin_password).json()
        return body

    def test_refresh_rotates_and_blacklists_the_old_token(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        first = self.tokens(tenant_alpha)
        rotated = post(client, "/api/auth/refresh", {"refresh": first["refresh"]})
        assert rotated.status_code == 200
        pair = rotated.json()
        assert pair["refresh"] != first["refresh"]
        assert client.get("/api/auth/me", **bearer(pair["access"])).status_code == 200
        replay = post(client, "/api/auth/refresh", {"refresh": first["refresh"]})
        assert replay.status_code == 401
        assert post(client, "/api/auth/refresh", {"refresh": pair["refresh"]}).status_code == 200

    def test_logout_blacklists_the_refresh_token(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        tokens = self.tokens(tenant_alpha)
        assert post(client, "/api/auth/logout", {"refresh": tokens["refresh"]}).status_code == 204
        assert post(client, "/api/auth/refresh", {"refresh": tokens["refresh"]}).status_code == 401
        assert post(client, "/api/auth/logout", {"refresh": tokens["refresh"]}).status_code == 401
        assert "auth.logout" in audit_actions(tenant_alpha)

    def test_an_access_token_cannot_be_refreshed(self, tenant_alpha: TenantFixture) -> None:
        tokens = self.tokens(tenant_alpha)
        assert post(tenant_alpha.client(), "/api/auth/refresh", {"refresh": tokens["access"]}).status_code == 401

    def test_me(self, tenant_alpha: TenantFixture) -> None:
        tokens = self.tokens(tenant_alpha)
        body = tenant_alpha.client().get("/api/auth/me", **bearer(tokens["access"])).json()
        assert body["kind"] == "user"
        assert body["email"] == tenant_alpha.admin_email
        assert body["role"] == "admin"
        assert "manage_users" in body["permissions"]
        assert body["tenant"] == "alpha"


class TestLockout:
    def test_after_five_failures_even_the_right_password_gets_429_until_the_window_passes(
        self, tenant_alpha: TenantFixture
    ) -> None:
        client = tenant_alpha.client()
        with override_settings(LOCKOUT_WINDOW_SECONDS=2):
            for _ in range(5):
                assert login(client, tenant_alpha.admin_email, "wrong").status_code == 401
            locked = login(client, tenant_alpha.admin_email, tenant_alpha.admin_password)
            assert locked.status_code == 429
            assert locked.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(locked["Retry-After"]) <= 2
            assert "auth.lockout" in audit_actions(tenant_alpha)
            time.sleep(2.2)  # the window passes
            assert login(client, tenant_alpha.admin_email, tenant_alpha.admin_password).status_code == 200

    def test_the_limit_is_per_ip_across_emails(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        for n in range(5):
            login(client, f"guess{n}@alpha.example.com", "wrong", ip="10.6.6.6")
        assert login(client, tenant_alpha.admin_email, tenant_alpha.admin_password, ip="10.6.6.6").status_code == 429
        assert login(client, tenant_alpha.admin_email, tenant_alpha.admin_password, ip="10.6.6.7").status_code == 200

    def test_the_limit_is_per_tenant_and_email(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        for n in range(5):
            login(tenant_alpha.client(), tenant_alpha.admin_email, "wrong", ip=f"10.7.7.{n}")
        assert login(tenant_alpha.client(), tenant_alpha.admin_email, "wrong", ip="10.7.8.1").status_code == 429
        # The same address in another tenant is another account.
        beta_member = make_member(tenant_beta, "user", email=tenant_alpha.admin_email)
        assert login(tenant_beta.client(), beta_member.email, ADMIN_PASSWORD, ip="10.7.8.2").status_code == 200

    def test_numbers_come_from_settings(self, tenant_alpha: TenantFixture) -> None:
        client = tenant_alpha.client()
        with override_settings(LOCKOUT_ATTEMPTS=2):
            login(client, tenant_alpha.admin_email, "wrong")
            login(client, tenant_alpha.admin_email, "wrong")
            assert login(client, tenant_alpha.admin_email, tenant_alpha.admin_password).status_code == 429

    def test_web_login_shares_the_lockout(self, tenant_alpha: TenantFixture) -> None:
        for _ in range(5):
            login(tenant_alpha.client(), tenant_alpha.admin_email, "wrong")
        response = tenant_alpha.client().post(
            "/login/", {"username": tenant_alpha.admin_email, "password": tenant_alpha.admin_password}
        )
        assert response.status_code == 429
        assert response["Retry-After"]

    def test_api_key_guessing_is_locked_out_per_ip(self, tenant_alpha: TenantFixture) -> None:
        from tests.conftest import api_key_secret

        good = api_key_secret(tenant_alpha, "admin")
        client = tenant_alpha.client()
        for n in range(5):
            assert client.get("/api/auth/me", HTTP_X_API_KEY=f"hn_guess{n}xxxxxxxxxxxx").status_code == 401
        locked = client.get("/api/auth/me", HTTP_X_API_KEY=good)
        assert locked.status_code == 429
        assert locked["Retry-After"]
        assert client.get("/api/auth/me", HTTP_X_API_KEY=good, REMOTE_ADDR="10.2.2.2").status_code == 200


def test_logins_fail_open_while_redis_is_down(tenant_alpha: TenantFixture, settings: Any) -> None:
    """The lockout needs Redis; without it logins still work (decision in docs/architecture.md)."""
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    client = tenant_alpha.client()
    for _ in range(6):
        assert login(client, tenant_alpha.admin_email, "wrong").status_code == 401
    assert login(client, tenant_alpha.admin_email, tenant_alpha.admin_password).status_code == 200


class TestAccessTokenUser:
    """The user behind an access token is read afresh on every request (apps.accounts.selectors.user_by_id)."""

    def test_the_user_row_is_read_as_the_orm_reads_it(self, tenant_alpha: TenantFixture) -> None:
        from django.utils import timezone
        from django_tenants.utils import schema_context

        from apps.accounts.models import User
        from apps.accounts.selectors import user_by_id

        member = make_member(tenant_alpha, "viewer")
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(last_login=timezone.now(), full_name="Grace Hopper")
            expected = User.objects.get(pk=member.pk)
            found = user_by_id(member.pk)
            assert_read_as_the_orm_reads(found, expected)
            assert found is not None
            assert found.last_login == expected.last_login
            assert found.last_login is not None
            assert found.last_login.tzinfo is not None
            assert user_by_id(member.pk + 10_000) is None

    def test_ids_are_read_in_the_current_tenant_only(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        from django_tenants.utils import schema_context

        from apps.accounts.selectors import user_by_id

        alpha_member = make_member(tenant_alpha, "user")
        with schema_context(tenant_beta.tenant.schema_name):
            found = user_by_id(alpha_member.pk)
        assert found is None or found.email != alpha_member.email

    def test_a_role_change_counts_from_the_next_request(self, tenant_alpha: TenantFixture) -> None:
        from django_tenants.utils import schema_context

        from apps.accounts.models import User
        from tests.conftest import jwt_pair

        member = make_member(tenant_alpha, "user")
        access = jwt_pair(tenant_alpha, member)["access"]
        client = tenant_alpha.client()
        assert client.get("/api/auth/me", **bearer(access)).json()["role"] == "user"
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(role="viewer")
        assert client.get("/api/auth/me", **bearer(access)).json()["role"] == "viewer"

    def test_a_deleted_or_unknown_user_is_refused(self, tenant_alpha: TenantFixture) -> None:
        from django_tenants.utils import schema_context
        from rest_framework_simplejwt.tokens import AccessToken

        from apps.accounts.models import User
        from tests.conftest import jwt_pair

        member = make_member(tenant_alpha, "user")
        access = jwt_pair(tenant_alpha, member)["access"]
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).delete()
        response = tenant_alpha.client().get("/api/auth/me", **bearer(access))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"

        # A signed token whose user id is not a number (only a leaked signing key could make one): 401, not 500.
        forged = AccessToken(access)  # type: ignore[arg-type]  # simplejwt's stubs say Token
        forged["user_id"] = "not-a-number"
        refused = tenant_alpha.client().get("/api/auth/me", **bearer(str(forged)))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "not_authenticated"
