"""The demo servers come from the session fixtures in tests/processes.py, shared with the chat tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_model_root(demo_model_url: str) -> str:
    """The demo model server's root, ``http://127.0.0.1:PORT`` (``demo_model_url`` ends in ``/v1``)."""
    return demo_model_url.removesuffix("/v1")
