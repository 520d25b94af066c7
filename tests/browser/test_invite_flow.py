"""An admin invites a viewer, who accepts, logs in, and sees no team, keys or audit pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect

from apps.tenants.db import connection
from apps.tenants.services import tenant_provision
from tests.browser.conftest import log_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, drop_tenant
from tests.processes import WebServer, Worker

pytestmark = pytest.mark.browser

SLUG = "invite-flow"
ADMIN = "admin@invite-flow.example.com"
VIEWER = "viewer@invite-flow.example.com"
VIEWER_PASSWORD = "Viewer-Reads-Only-7"


@pytest.fixture
def workspace(django_db_blocker: object) -> Iterator[None]:
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        tenant_provision(
            name="Invite Flow Water", slug=SLUG, plan="pro", admin_email=ADMIN, admin_password=ADMIN_PASSWORD,
            actor=TEST_ACTOR,
        )  # fmt: skip
    yield
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.set_schema_to_public()
        drop_tenant(SLUG)


def invitation_path(worker: Worker, timeout: float = 30) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in worker.email_dir.iterdir():
            text = message.read_text()
            if f"To: {VIEWER}" in text:
                match = re.search(r"https?://\S+/invitations/accept/\S+/", text)
                assert match, text
                return urlsplit(match.group(0)).path
        time.sleep(0.2)
    raise AssertionError("no invitation email arrived")


def test_admin_invites_a_viewer_who_sees_no_admin_pages(
    browser: Browser, web_server: WebServer, celery_worker: Worker, workspace: None
) -> None:
    host = f"{SLUG}.localhost"
    admin = browser.new_context(locale="en-US").new_page()
    admin.goto(web_server.url(host, "/login/"))
    log_in(admin, ADMIN, ADMIN_PASSWORD)
    admin.get_by_test_id("nav-team").click()
    form = admin.get_by_test_id("invite-form")
    form.locator("#id_email").fill(VIEWER)
    form.locator("#id_role").select_option("viewer")
    form.locator("button[type=submit]").click()
    expect(admin.get_by_test_id("invitations")).to_contain_text(VIEWER)

    viewer = browser.new_context(locale="en-US").new_page()
    viewer.goto(web_server.url(host, invitation_path(celery_worker)))
    accept = viewer.get_by_test_id("accept-form")
    accept.locator("#id_full_name").fill("Vera Viewer")
    accept.locator("#id_new_password").fill(VIEWER_PASSWORD)
    accept.locator("#id_confirm_password").fill(VIEWER_PASSWORD)
    accept.locator("button[type=submit]").click()
    expect(viewer.get_by_test_id("dashboard-heading")).to_contain_text("Vera")

    viewer.get_by_role("button", name="Log out").click()
    log_in(viewer, VIEWER, VIEWER_PASSWORD)
    expect(viewer.get_by_test_id("dashboard-heading")).to_contain_text("Vera")
    expect(viewer.get_by_test_id("nav-profile")).to_be_visible()
    for nav in ("nav-team", "nav-api-keys", "nav-audit"):
        expect(viewer.get_by_test_id(nav)).to_have_count(0)
    for path in ("/team/", "/api-keys/", "/audit/"):
        response = viewer.goto(web_server.url(host, path))
        assert response is not None
        assert response.status == 403

    admin.reload()
    expect(admin.get_by_test_id("members")).to_contain_text(VIEWER)
