"""Who may call what: the role matrix and cross-tenant replay, generated from the URL conf
and the permission map, so a new endpoint is covered the day it is added."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

import jwt
import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts.models import Role, User
from apps.accounts.permissions import ROLE_PERMISSIONS, role_has
from apps.api import authentication
from apps.api.base import TenantApi
from apps.chat.models import Conversation
from tests.api.endpoints import Endpoint, tenant_api_endpoints
from tests.conftest import TenantFixture, admin_of, api_key_secret, bearer, jwt_pair, make_member

pytestmark = pytest.mark.django_db

ENDPOINTS = tenant_api_endpoints()
PROTECTED = [e for e in ENDPOINTS if not e.anonymous]
ROLES = [Role.ADMIN, Role.USER, Role.VIEWER]


def call(client: Client, endpoint: Endpoint, **headers: str) -> Any:
    method = getattr(client, endpoint.method.lower())
    if endpoint.method in ("POST", "PATCH", "PUT"):
        return method(endpoint.path, data=json.dumps({}), content_type="application/json", **headers)
    return method(endpoint.path, **headers)


def test_every_operation_declares_its_permission() -> None:
    for endpoint in ENDPOINTS:
        perm = endpoint.view.required_permission
        assert perm is None or any(perm in perms for perms in ROLE_PERMISSIONS.values()), endpoint.id


def test_a_class_that_forgets_its_permission_cannot_be_defined() -> None:
    with pytest.raises(TypeError, match="must declare required_permission"):
        type("ForgetfulApi", (TenantApi,), {})


@pytest.mark.parametrize("sealed", ["authentication_classes", "permission_classes", "check_permissions", "initial"])
def test_a_class_that_weakens_the_checks_cannot_be_defined(sealed: str) -> None:
    with pytest.raises(TypeError, match=f"may not override {sealed}"):
        type("SneakyApi", (TenantApi,), {"required_permission": None, sealed: ()})


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.id)
@pytest.mark.parametrize("credential", ["jwt", "api_key"])
def test_role_matrix(tenant_alpha: TenantFixture, endpoint: Endpoint, role: str, credential: str) -> None:
    if credential == "jwt":
        token = jwt_pair(tenant_alpha, make_member(tenant_alpha, role))["access"]
    else:
        token = api_key_secret(tenant_alpha, role)
    response = call(tenant_alpha.client(), endpoint, **bearer(token))
    perm = endpoint.view.required_permission
    if credential not in endpoint.view.credentials:
        assert response.status_code == 401, response.content  # e.g. /v1 takes API keys only
    elif perm is None or role_has(role, perm):
        assert response.status_code != 401, response.content
        assert response.status_code != 403 or response.json()["error"]["code"] == "member_required", response.content
    else:
        assert response.status_code == 403, response.content
        error = response.json()["error"]
        assert error["code"] == "permission_denied"
        assert error["details"] == {"permission": str(perm)}
        assert str(perm) in error["message"]


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.id)
def test_no_credential_is_a_401(tenant_alpha: TenantFixture, endpoint: Endpoint) -> None:
    response = call(tenant_alpha.client(), endpoint)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.id)
def test_a_token_from_another_tenant_is_refused_even_for_a_user_with_the_same_id(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture, endpoint: Endpoint
) -> None:
    alpha_admin, beta_admin = admin_of(tenant_alpha), admin_of(tenant_beta)
    assert alpha_admin.pk == beta_admin.pk  # ids repeat across schemas
    token = jwt_pair(tenant_alpha, alpha_admin)["access"]
    response = call(tenant_beta.client(), endpoint, **bearer(token))
    assert response.status_code == 401, response.content
    if "jwt" in endpoint.view.credentials:
        assert response.json()["error"]["code"] == "token_tenant_mismatch"


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.id)
@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_an_api_key_from_another_tenant_is_refused(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture, endpoint: Endpoint, header: str
) -> None:
    secret = api_key_secret(tenant_alpha, Role.ADMIN)
    api_key_secret(tenant_beta, Role.ADMIN)  # beta has keys of its own, with their own ids
    headers = bearer(secret) if header == "bearer" else {"HTTP_X_API_KEY": secret}
    response = call(tenant_beta.client(), endpoint, **headers)
    assert response.status_code == 401, response.content
    assert call(tenant_alpha.client(), endpoint, **headers).status_code != 401


def test_a_refresh_token_from_another_tenant_is_refused(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    refresh = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["refresh"]
    for path in ("/api/auth/refresh", "/api/auth/logout"):
        response = tenant_beta.client().post(path, {"refresh": refresh}, content_type="application/json")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_tenant_mismatch"


class TestBadTokens:
    """Malformed, expired, foreign-signed, unsigned and wrong-type tokens are 401s."""

    @pytest.fixture
    def me(self, tenant_alpha: TenantFixture) -> Any:
        def get(token: str) -> Any:
            return tenant_alpha.client().get("/api/auth/me", **bearer(token))

        return get

    @pytest.fixture
    def claims(self, tenant_alpha: TenantFixture) -> dict[str, Any]:
        access = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        return dict(jwt.decode(access, settings.SECRET_KEY, algorithms=["HS256"]))

    def test_the_good_token_works(self, me: Any, claims: dict[str, Any]) -> None:
        assert me(jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")).status_code == 200

    @pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", ""])
    def test_malformed(self, me: Any, token: str) -> None:
        assert me(token).status_code == 401

    def test_expired(self, me: Any, tenant_alpha: TenantFixture) -> None:
        token = AccessToken(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])  # type: ignore[arg-type]
        token.set_exp(lifetime=-timedelta(seconds=1))
        assert me(str(token)).status_code == 401

    def test_signed_with_another_key(self, me: Any, claims: dict[str, Any]) -> None:
        assert me(jwt.encode(claims, "not-our-key-at-all-but-long-enough", algorithm="HS256")).status_code == 401

    def test_alg_none(self, me: Any, claims: dict[str, Any]) -> None:
        unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
        assert me(unsigned).status_code == 401

    def test_a_refresh_token_is_not_an_access_token(self, me: Any, tenant_alpha: TenantFixture) -> None:
        refresh = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["refresh"]
        response = me(refresh)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"

    def test_a_token_whose_tenant_claim_was_edited_fails_its_signature(self, me: Any, claims: dict[str, Any]) -> None:
        forged = jwt.encode(
            {**claims, "tenant": "t_beta"}, "a-guessed-key-that-is-long-enough-for-hs256", algorithm="HS256"
        )
        assert me(forged).status_code == 401

    def test_an_expired_refresh_token_cannot_be_refreshed(self, tenant_alpha: TenantFixture) -> None:
        from rest_framework_simplejwt.tokens import RefreshToken

        with schema_context(tenant_alpha.tenant.schema_name):  # parsing checks the tenant's blacklist
            refresh = RefreshToken(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["refresh"])  # type: ignore[arg-type]
        refresh.set_exp(lifetime=-timedelta(seconds=1))
        response = tenant_alpha.client().post(
            "/api/auth/refresh", {"refresh": str(refresh)}, content_type="application/json"
        )
        assert response.status_code == 401


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


class TestTokenErrorsInChinese:
    """A refused token's message follows the request's language, like every other error's
    (simplejwt's own messages come from its catalog, installed as an app)."""

    @staticmethod
    def me(tenant: TenantFixture, token: str) -> Any:
        return tenant.client(HTTP_ACCEPT_LANGUAGE="zh-hans").get("/api/auth/me", **bearer(token))

    def test_a_malformed_token(self, tenant_alpha: TenantFixture) -> None:
        error = self.me(tenant_alpha, "garbage")
        assert error.status_code == 401
        assert _has_chinese(error.json()["error"]["message"]), error.json()

    def test_an_expired_token(self, tenant_alpha: TenantFixture) -> None:
        token = AccessToken(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])  # type: ignore[arg-type]
        token.set_exp(lifetime=-timedelta(seconds=1))
        error = self.me(tenant_alpha, str(token))
        assert error.status_code == 401
        assert _has_chinese(error.json()["error"]["message"]), error.json()

    def test_a_deactivated_member_and_a_changed_password(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.USER)
        token = jwt_pair(tenant_alpha, member)["access"]
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(is_active=False)
        inactive = self.me(tenant_alpha, token)
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(is_active=True, password="changed")
        changed = self.me(tenant_alpha, token)
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).delete()
        gone = self.me(tenant_alpha, token)
        for error in (inactive, changed, gone):
            assert error.status_code == 401
            assert _has_chinese(error.json()["error"]["message"]), error.json()
        assert len({error.json()["error"]["message"] for error in (inactive, changed, gone)}) == 3


class TestVerifiedTokensKept:
    """A process verifies each access token once; what can change is still checked on every request."""

    @pytest.fixture
    def decodes(self, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        """Each verification of a signature (simplejwt's backend, PyJWT underneath), from an empty store."""
        authentication._verified.cache_clear()
        seen: list[Any] = []
        decode = TokenBackend.decode

        def counted(backend: TokenBackend, token: Any, verify: bool = True) -> dict[str, Any]:
            seen.append(token)
            return decode(backend, token, verify)

        monkeypatch.setattr(TokenBackend, "decode", counted)
        return seen

    @staticmethod
    def me(tenant: TenantFixture, token: str) -> Any:
        return tenant.client().get("/api/auth/me", **bearer(token))

    def test_a_token_is_verified_once_then_kept(self, tenant_alpha: TenantFixture, decodes: list[Any]) -> None:
        first = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        second = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        for _ in range(3):
            assert self.me(tenant_alpha, first).status_code == 200
        assert len(decodes) == 1
        assert self.me(tenant_alpha, second).status_code == 200  # another token: verified on its own
        assert len(decodes) == 2

    def test_a_kept_token_still_expires(self, tenant_alpha: TenantFixture, decodes: list[Any]) -> None:
        with time_machine.travel(timezone.now(), tick=False) as clock:
            token = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
            assert self.me(tenant_alpha, token).status_code == 200
            lifetime = cast(timedelta, settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"])
            clock.shift(lifetime - timedelta(seconds=1))
            assert self.me(tenant_alpha, token).status_code == 200  # kept, with a second left
            clock.shift(timedelta(seconds=1))
            kept = self.me(tenant_alpha, token)
            authentication._verified.cache_clear()
            fresh = self.me(tenant_alpha, token)
        assert kept.status_code == fresh.status_code == 401
        assert kept.json() == fresh.json()  # the answer of a process that never saw the token
        assert len(decodes) == 3  # the first request, the expired one (for simplejwt's error), the fresh one

    def test_a_kept_tokens_user_is_read_on_every_request(self, tenant_alpha: TenantFixture, decodes: list[Any]) -> None:
        member = make_member(tenant_alpha, Role.USER)
        token = jwt_pair(tenant_alpha, member)["access"]
        assert self.me(tenant_alpha, token).status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(is_active=False)
        assert self.me(tenant_alpha, token).status_code == 401
        with schema_context(tenant_alpha.tenant.schema_name):
            User.objects.filter(pk=member.pk).update(is_active=True, password="changed")
        assert self.me(tenant_alpha, token).status_code == 401  # a new password ends the tokens issued before it
        assert len(decodes) == 1

    def test_a_kept_token_changed_by_one_character_is_verified_and_refused(
        self, tenant_alpha: TenantFixture, decodes: list[Any]
    ) -> None:
        token = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        assert self.me(tenant_alpha, token).status_code == 200
        header, claims, signature = token.split(".")
        altered = f"{header}.{claims}.{signature[:-2]}{'B' if signature[-2] == 'A' else 'A'}{signature[-1]}"
        assert self.me(tenant_alpha, altered).status_code == 401
        assert len(decodes) == 2

    def test_a_kept_token_is_still_refused_on_another_tenants_host(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, decodes: list[Any]
    ) -> None:
        token = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        assert self.me(tenant_alpha, token).status_code == 200
        response = self.me(tenant_beta, token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_tenant_mismatch"

    def test_a_request_cannot_change_the_kept_token(self, tenant_alpha: TenantFixture, decodes: list[Any]) -> None:
        raw = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"].encode()
        mine = authentication.TenantJWTAuthentication().get_validated_token(raw)
        mine["user_id"] = -1
        assert authentication.TenantJWTAuthentication().get_validated_token(raw)["user_id"] != -1
        assert len(decodes) == 1


@pytest.mark.parametrize(
    "path",
    ["/api/users", "/api/invitations", "/api/api-keys", "/api/audit-events", "/api/mcp-services",
     "/api/conversations", "/api/conversations/{conversation}/messages"],
)  # fmt: skip
def test_every_list_refuses_paging_out_of_range_alike(tenant_alpha: TenantFixture, path: str) -> None:
    """page=-1 was a 404 on some lists and a 400 on others; a page_size of a billion was cut to 100 on some."""
    admin = admin_of(tenant_alpha)
    with schema_context(tenant_alpha.tenant.schema_name):
        conversation = Conversation.objects.create(user=admin, title="Paged")
    client = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin)["access"]))
    url = path.format(conversation=conversation.pk)
    for query in ({"page": "-1"}, {"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "1000000000"}):
        response = client.get(url, query)
        assert response.status_code == 400, (query, response.content)
        assert response.json()["error"]["code"] == "invalid_input"
        assert list(response.json()["error"]["details"]) == list(query)
    assert client.get(url, {"page": "1", "page_size": "100"}).status_code == 200
    # An unknown parameter too, on the lists without filters as on those with (the messages' list took it).
    unknown = client.get(url, {"colour": "blue"})
    assert unknown.status_code == 400, unknown.content
    assert list(unknown.json()["error"]["details"]) == ["colour"]
    assert client.get(url, {"format": "json", "page": "1"}).status_code == 200
