"""The platform's own system checks (apps.core.checks), as ``manage.py check --deploy`` runs them."""

from __future__ import annotations

from typing import Any

from django.core import checks

from apps.core.checks import OUTBOUND_ALLOWLIST_IN_USE


def deploy_checks() -> list[checks.CheckMessage]:
    return [
        message
        for message in checks.run_checks(include_deployment_checks=True)
        if message.id == OUTBOUND_ALLOWLIST_IN_USE
    ]


def test_a_non_empty_outbound_allowlist_is_a_deploy_warning(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.20.0.0/16", " fd00::/8 "]
    [warning] = deploy_checks()
    assert warning.level == checks.WARNING
    assert warning.msg.startswith("OUTBOUND_ALLOWED_NETWORKS is not empty (10.20.0.0/16, fd00::/8): URLs that tenants ")
    assert "may reach these networks" in warning.msg


def test_an_empty_outbound_allowlist_is_not(settings: Any) -> None:
    for empty in ([], [""], None):
        settings.OUTBOUND_ALLOWED_NETWORKS = empty
        assert deploy_checks() == []


def test_only_with_deploy(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert [message.id for message in checks.run_checks()].count(OUTBOUND_ALLOWLIST_IN_USE) == 0
    assert len(deploy_checks()) == 1
