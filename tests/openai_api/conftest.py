"""/v1 tests talk to the demo model server, or a fake one of the test's, over real HTTP on loopback."""

from tests.chat.conftest import _model_server  # noqa: F401  (the chat tests' autouse fixture, here too)
