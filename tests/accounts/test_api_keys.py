"""API keys: shown once, stored as a hash, a role at or below the creator's, revoked and expired at once."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts import services
from apps.accounts.models import ApiKey, Role
from apps.core.actors import Actor
from apps.core.exceptions import InvalidInput
from tests.conftest import (
    TenantFixture,
    admin_of,
    api_key_secret,
    assert_read_as_the_orm_reads,
    bearer,
    jwt_pair,
    make_member,
)

pytestmark = pytest.mark.django_db


def create(tenant: TenantFixture, **data: Any) -> Any:
    client = tenant.client(**bearer(jwt_pair(tenant, admin_of(tenant))["access"]))
    return client.post("/api/api-keys", {"name": "ci", **data}, content_type="application/json")


def test_the_secret_is_shown_once_and_stored_as_a_hash(tenant_alpha: TenantFixture) -> None:
    response = create(tenant_alpha, role="viewer")
    assert response.status_code == 201
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("hn_")
    assert len(secret) > 40
    assert body["prefix"] == secret[3:15]
    with schema_context(tenant_alpha.tenant.schema_name):
        row = ApiKey.objects.get(pk=body["id"])
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str(ApiKey.objects.filter(pk=row.pk).values().get())
    listed = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])).get(
        "/api/api-keys"
    )
    assert "secret" not in listed.json()["results"][0]


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_a_key_acts_with_its_own_role(tenant_alpha: TenantFixture, header: str) -> None:
    secret = api_key_secret(tenant_alpha, Role.VIEWER)
    headers = bearer(secret) if header == "bearer" else {"HTTP_X_API_KEY": secret}
    me = tenant_alpha.client().get("/api/auth/me", **headers).json()
    assert me["kind"] == "api_key"
    assert me["role"] == "viewer"
    assert tenant_alpha.client().get("/api/users", **headers).status_code == 403


def test_last_used_at_is_kept(tenant_alpha: TenantFixture) -> None:
    secret = api_key_secret(tenant_alpha, Role.USER)
    tenant_alpha.client().get("/api/auth/me", **bearer(secret))
    with schema_context(tenant_alpha.tenant.schema_name):
        assert ApiKey.objects.get(prefix=secret[3:15]).last_used_at is not None


def test_a_revoked_key_is_refused_at_once(tenant_alpha: TenantFixture) -> None:
    created = create(tenant_alpha, role="user").json()
    client = tenant_alpha.client()
    assert client.get("/api/auth/me", **bearer(created["secret"])).status_code == 200
    admin_client = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
    assert admin_client.delete(f"/api/api-keys/{created['id']}").status_code == 204
    refused = client.get("/api/auth/me", **bearer(created["secret"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"


def test_an_expired_key_is_refused(tenant_alpha: TenantFixture) -> None:
    secret = api_key_secret(tenant_alpha, Role.USER, expires_at=timezone.now() + timedelta(hours=1))
    assert tenant_alpha.client().get("/api/auth/me", **bearer(secret)).status_code == 200
    with schema_context(tenant_alpha.tenant.schema_name):
        ApiKey.objects.filter(prefix=secret[3:15]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tenant_alpha.client().get("/api/auth/me", **bearer(secret)).status_code == 401


@pytest.mark.parametrize(
    ("data", "field"),
    [({"name": ""}, "name"), ({"role": "owner"}, "role"), ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
     ({"expires_at": "0001-01-01T00:30"}, "expires_at")],  # before the year 1 in UTC: a 500 until 2026-12-07
)  # fmt: skip
def test_bad_input(tenant_alpha: TenantFixture, data: dict[str, Any], field: str) -> None:
    response = create(tenant_alpha, **data)
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]


def test_a_key_role_is_at_or_below_its_creator(tenant_alpha: TenantFixture) -> None:
    user = make_member(tenant_alpha, Role.USER)
    with schema_context(tenant_alpha.tenant.schema_name):
        _key, _secret = services.api_key_create(actor=Actor(user=user), name="mine", role=Role.VIEWER)
        with pytest.raises(InvalidInput):
            services.api_key_create(actor=Actor(user=user), name="mine", role=Role.ADMIN)


def test_keys_cannot_act_as_a_person(tenant_alpha: TenantFixture) -> None:
    secret = api_key_secret(tenant_alpha, Role.ADMIN)
    response = tenant_alpha.client().patch(
        "/api/auth/me", {"full_name": "x"}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "member_required"


class TestKeyLookup:
    """Every request with a key reads it by one hand-written statement (apps.accounts.selectors.api_key_by_prefix)."""

    def test_the_key_row_is_read_as_the_orm_reads_it(self, tenant_alpha: TenantFixture) -> None:
        from apps.accounts.selectors import api_key_by_prefix

        creator = admin_of(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            key, _secret = services.api_key_create(
                actor=Actor(user=creator), name="read", role=Role.VIEWER, expires_at=timezone.now() + timedelta(days=1)
            )
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now(), revoked_at=timezone.now())
            expected = ApiKey.objects.get(pk=key.pk)
            found = api_key_by_prefix(key.prefix)
            assert_read_as_the_orm_reads(found, expected)
            assert found is not None
            for moment in (found.created_at, found.expires_at, found.last_used_at, found.revoked_at):
                assert moment is not None
                assert moment.tzinfo is not None
            assert found.created_by_id == creator.pk
            assert found.is_usable is False  # revoked
            assert api_key_by_prefix("no-such-key") is None

    def test_a_key_is_looked_up_in_its_own_tenant_only(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        from apps.accounts.selectors import api_key_by_prefix

        secret = api_key_secret(tenant_alpha, Role.ADMIN)
        with schema_context(tenant_beta.tenant.schema_name):
            assert api_key_by_prefix(secret[3:15]) is None
        refused = tenant_beta.client().get("/api/auth/me", **bearer(secret))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "not_authenticated"
        assert tenant_alpha.client().get("/api/auth/me", **bearer(secret)).status_code == 200
