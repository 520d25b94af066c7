"""Playwright for Python, driving Debian's Chromium (`playwright install` cannot download here)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from tests.conftest import CHROMIUM_PATH

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": CHROMIUM_PATH, "args": CHROMIUM_ARGS}


def log_in(page: Page, email: str, password: str) -> None:
    """Fill in and send the login form of the page that shows it."""
    form = page.get_by_test_id("login-form")
    form.locator("#id_username").fill(email)
    form.locator("#id_password").fill(password)
    form.locator("button[type=submit]").click()
