"""/v1 tests talk to the demo model server, or a fake one of the test's, over real HTTP on loopback."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _model_server(settings: Any, demo_model_url: str) -> None:
    settings.LLM_BASE_URL = demo_model_url
    settings.LLM_MODELS = ["hydronet-demo"]
    settings.LLM_API_KEY = "test"
    settings.LLM_MAX_RETRIES = 0
