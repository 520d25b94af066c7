"""The platform staff's commands."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import translation

from apps.tenants.models import Tenant, TenantStatus
from apps.tenants.schemas import schema_is_current
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_provision_tenant_prints_progress_the_url_and_a_one_time_password() -> None:
    out = run("provision_tenant", "--name", "Delta Water", "--slug", "delta", "--plan", "basic",
              "--admin-email", "boss@delta.example.com")  # fmt: skip
    assert "Creating schema t_delta" in out
    assert "Tenant delta is ready: http://delta.localhost/" in out
    assert "admin login: boss@delta.example.com" in out
    assert "admin password (shown once): " in out
    assert Tenant.objects.get(slug="delta").plan.code == "basic"  # type: ignore[union-attr]


def test_provision_tenant_reads_a_password_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Chosen-Pass-2026\n"))
    out = run("provision_tenant", "--name", "Echo", "--slug", "echo-org", "--admin-email", "e@echo.example.com",
              "--admin-password-stdin")  # fmt: skip
    assert "shown once" not in out


def test_provision_tenant_reports_bad_input_and_creates_nothing() -> None:
    with pytest.raises(CommandError) as caught:
        run("provision_tenant", "--name", "X", "--slug", "admin", "--admin-email", "x@x.example.com")
    assert "slug: “admin” is reserved" in str(caught.value)
    assert not Tenant.objects.filter(slug="admin").exists()


def test_suspend_reactivate_and_list(tenant_alpha: TenantFixture) -> None:
    assert "suspended" in run("suspend_tenant", "--tenant", "alpha", "--reason", "abuse")
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.SUSPENDED
    with pytest.raises(CommandError, match="already suspended"):
        run("suspend_tenant", "--tenant", "alpha")
    listed = run("list_tenants", "--status", "suspended")
    assert "alpha" in listed
    assert "beta" not in listed
    run("reactivate_tenant", "--tenant", "alpha")
    rows = [json.loads(line) for line in run("list_tenants", "--json").splitlines()]
    alpha = next(r for r in rows if r["slug"] == "alpha")
    assert alpha["status"] in ("trial", "active")
    assert alpha["url"] == "http://alpha.localhost/"
    assert "public" not in {r["slug"] for r in rows}


def test_commands_speak_english_whatever_the_platform_language(
    tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform's default language is Chinese; an operator's error read "输入无效。" and then the
    password validator's English line."""
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with translation.override("zh-hans"):
        with pytest.raises(CommandError) as caught:
            run("provision_tenant", "--name", "Z", "--slug", "zulu", "--admin-email", "z@zulu.example.com",
                "--admin-password-stdin")  # fmt: skip
        run("suspend_tenant", "--tenant", "alpha")
        with pytest.raises(CommandError, match="already suspended"):
            run("suspend_tenant", "--tenant", "alpha")
    assert str(caught.value).startswith("The input is not valid.")
    assert "admin_password: This password is too short" in str(caught.value)


def test_commands_name_an_unknown_tenant() -> None:
    with pytest.raises(CommandError, match="No tenant with the slug 'nope'"):
        run("suspend_tenant", "--tenant", "nope")


def test_migrate_platform_skips_current_schemas_and_migrates_those_behind(tenant_alpha: TenantFixture) -> None:
    assert "(0 tenant schema(s) migrated)" in run("migrate_platform", "--parallel", "1")
    with connection.cursor() as cursor:  # pretend alpha missed the newest migration of a shared app: in a tenant
        # schema django-tenants only records those (their tables are public), so running it again changes nothing
        cursor.execute(
            "DELETE FROM t_alpha.django_migrations WHERE app = 'tenants' AND name = "
            "(SELECT max(name) FROM t_alpha.django_migrations WHERE app = 'tenants')"
        )
    assert not schema_is_current("t_alpha")
    out = run("migrate_platform", "--parallel", "1")
    assert "migrated t_alpha" in out
    assert "(1 tenant schema(s) migrated)" in out
    assert schema_is_current("t_alpha")


def test_reencrypt_secrets_lets_the_old_key_go(tenant_alpha: TenantFixture, settings: object) -> None:
    """A key was rotated by putting a new one first "and re-saving": no one could re-save a secret they never see
    (the API does not show it), so the old key, maybe the leaked one, could never be removed."""
    from cryptography.fernet import Fernet
    from django_tenants.utils import schema_context

    from apps.core.crypto import SecretUnreadable, decrypt, encrypt
    from apps.llm.models import ModelProvider
    from apps.mcp.models import McpService

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]  # type: ignore[attr-defined]
    with schema_context(tenant_alpha.tenant.schema_name):
        service = McpService.objects.create(name="Keyed", slug="keyed", url="http://127.0.0.1:9/mcp",
                                            secret_headers=encrypt('{"X-Token": "s3cret"}'))  # fmt: skip
        stranger = Fernet(Fernet.generate_key()).encrypt(b"{}").decode()  # under a key the settings never had
        broken = McpService.objects.create(name="Broken", slug="broken", url="http://127.0.0.1:9/mcp",
                                           secret_headers=stranger)  # fmt: skip
        ModelProvider.objects.update_or_create(pk=1, defaults={"base_url": "http://127.0.0.1:9/v1",
                                                               "api_key_encrypted": encrypt("sk-old")})  # fmt: skip
    settings.FIELD_ENCRYPTION_KEYS = [new, old]  # type: ignore[attr-defined]
    with pytest.raises(CommandError) as caught:
        run("reencrypt_secrets")
    assert f"alpha: MCP service {broken.pk}" in str(caught.value)
    settings.FIELD_ENCRYPTION_KEYS = [new]  # type: ignore[attr-defined]
    with schema_context(tenant_alpha.tenant.schema_name):
        assert decrypt(McpService.objects.get(pk=service.pk).secret_headers) == '{"X-Token": "s3cret"}'
        assert decrypt(ModelProvider.objects.get(pk=1).api_key_encrypted) == "sk-old"
        with pytest.raises(SecretUnreadable):
            decrypt(McpService.objects.get(pk=broken.pk).secret_headers)
        broken.delete()
    assert "Every stored secret is readable with the first key alone." in run("reencrypt_secrets")
