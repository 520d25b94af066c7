"""Connections to Redis that give up on a Redis that does not answer, at once after the first time.

A Redis that accepts connections and then says nothing (``CLIENT PAUSE``, ``DEBUG SLEEP``, a
hung host) costs each command its socket timeout (``REDIS_SOCKET_TIMEOUT``), and a metered
request makes several: the route, the lockout check, the charge, the AI setup. So after a
command has timed out, this process does not wait for that Redis again for
``REDIS_PAUSE_SECONDS``: every command meanwhile fails at once with ``redis.ConnectionError``,
as if Redis were unreachable, and each use of Redis does what docs/architecture.md ("When
Redis is down") decides. The first command after the pause tries Redis again.

Only a timeout starts the pause: a refused connection fails at once anyway. Nothing on these
connections legitimately waits for Redis longer than the timeout (no blocking commands; the
counters' lock polls; Celery has its own connections).

The caches name ``ConnectionPool`` as django-redis's ``CONNECTION_POOL_CLASS``; it wraps
whatever connection class the URL asks for (TCP, TLS, Unix socket).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

#: Redis server (host and port, or socket path) -> when this process may try it again (time.monotonic()).
_paused_until: dict[tuple[Any, ...], float] = {}


class _PausesAfterTimeout:
    """Mixed into a redis-py connection class (see the module's docstring)."""

    _host_error: Callable[[], str]  # the connection class's

    def _server(self) -> tuple[Any, ...]:
        return (getattr(self, "host", None), getattr(self, "port", None), getattr(self, "path", None))

    def _refuse_while_paused(self) -> None:
        until = _paused_until.get(self._server())
        if until is not None and time.monotonic() < until:
            raise redis.ConnectionError(
                f"Redis at {self._host_error()} did not answer in time; not tried again until the pause ends"
            )

    def _pause(self) -> None:
        server = self._server()
        if time.monotonic() >= _paused_until.get(server, 0.0):
            logger.warning(
                "Redis at %s did not answer in time: not tried again for %s s",
                self._host_error(),
                settings.REDIS_PAUSE_SECONDS,
            )
        _paused_until[server] = time.monotonic() + settings.REDIS_PAUSE_SECONDS

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._refuse_while_paused()
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except redis.TimeoutError:  # connecting, the handshake's reply, or writing
            self._pause()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.TimeoutError:
            self._pause()
            raise


_classes: dict[type, type] = {}


def pausing(connection_class: type) -> type:
    """``connection_class`` with the pause after a timeout (one class per base class)."""
    if issubclass(connection_class, _PausesAfterTimeout):
        return connection_class
    if connection_class not in _classes:
        _classes[connection_class] = type(connection_class.__name__, (_PausesAfterTimeout, connection_class), {})
    return _classes[connection_class]


class ConnectionPool(redis.ConnectionPool):
    """redis-py's pool, with connections that pause after a timeout."""

    def __init__(self, connection_class: type = redis.Connection, **kwargs: Any) -> None:
        super().__init__(connection_class=pausing(connection_class), **kwargs)
