"""This process's copy of the cached routes, kept only while Redis reports every change to them.

Routing a request reads its host's route from Redis (apps.tenants.routing): one
round trip before anything else can happen, on every tenant request. This
module keeps the routes a process has read in its own memory, using Redis's
support for client-side caching: a daemon thread holds one connection that
asks Redis (``CLIENT TRACKING … BCAST PREFIX``) for the name of every key under
the routes' prefix that is written, deleted or expires, and for an empty message
when the database is flushed, and drops those routes as the messages arrive.

Rules that keep it from serving a route Redis no longer holds:

* nothing is kept or served unless that connection is subscribed, and
  everything is dropped the moment it breaks (Redis restarted or unreachable,
  the connection killed, a ping unanswered for ``PING_TIMEOUT``);
* a route read from Redis is kept only if no message arrived between the read
  and the keeping (``epoch``), so a read that raced a change never outlives it;
* the process that changes a route drops its own copy at once (``forget``),
  without waiting for the message; other processes get the message within a
  millisecond or so, the same window in which a request could already have
  read the old route from Redis before.

redis-py 8 has client-side caching of its own, but only against Redis 7.4 or
newer; this works with any Redis from 6.0 on, with the broadcasting mode's
messages over a RESP2 subscription (one connection, redirected to itself).
Values are kept as the bytes Redis returned and decoded on every use, so no two
requests share one ``Tenant`` object.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

logger = logging.getLogger(__name__)

INVALIDATE_CHANNEL = "__redis__:invalidate"
CLIENT_NAME = "hydronet-route-memory"
MAX_ROUTES = 4096  # hosts kept per process; a full memory forgets its oldest
# A silent connection is pinged: one that cannot reach Redis (while this process still could
# route from memory) is given up within PING_SECONDS + PING_TIMEOUT.
PING_SECONDS = 1.0
PING_TIMEOUT = 0.5


def _target(client: redis.Redis) -> tuple[Any, ...]:
    kwargs = client.connection_pool.connection_kwargs
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db"))


class RouteMemory:
    """Routes this process read from Redis, by their Redis key, while Redis tracks them for us."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, bytes] = {}
        self._epoch = 0
        self._live = False
        self._listener: tuple[tuple[Any, ...], str] | None = None  # (Redis server, prefix) listened to
        self._generation = 0  # the current listener thread's number; older threads stand down
        self.client_id: int | None = None  # the listening connection's CLIENT ID, while it is up

    @property
    def live(self) -> bool:
        """Whether Redis is reporting changes, so that routes are kept."""
        return self._live

    def __len__(self) -> int:
        return len(self._routes)

    def recall(self, client: redis.Redis, prefix: str, key: str) -> tuple[bytes | None, int]:
        """The kept bytes for ``key`` (or None), and the epoch to pass to ``keep`` after reading Redis.

        Starts the listener for this process, Redis server and prefix on first use.
        """
        listener = (_target(client), prefix)
        if listener != self._listener:
            self._listen_to(client, listener)
        with self._lock:
            if not self._live:
                return None, -1
            return self._routes.get(key), self._epoch

    def keep(self, key: str, value: bytes, epoch: int) -> None:
        """Keep ``value``, read from Redis after ``recall`` gave ``epoch``, unless something changed since."""
        with self._lock:
            if not self._live or epoch != self._epoch:
                return
            if key not in self._routes and len(self._routes) >= MAX_ROUTES:
                del self._routes[next(iter(self._routes))]
            self._routes[key] = value

    def forget(self, keys: Iterable[str]) -> None:
        """Drop ``keys`` now: this process changed them and does not wait for Redis's message."""
        with self._lock:
            self._epoch += 1
            for key in keys:
                self._routes.pop(key, None)

    def forget_all(self) -> None:
        with self._lock:
            self._epoch += 1
            self._routes.clear()

    def _listen_to(self, client: redis.Redis, listener: tuple[tuple[Any, ...], str]) -> None:
        with self._lock:
            if listener == self._listener:
                return
            self._listener = listener
            self._generation += 1
            self._live = False
            self._epoch += 1
            self._routes.clear()
            generation = self._generation
        pool = client.connection_pool
        # The messages come over a RESP2 subscription; the name shows the connection in CLIENT LIST.
        kwargs = {**pool.connection_kwargs, "protocol": 2, "client_name": CLIENT_NAME}
        thread = threading.Thread(
            target=self._run,
            args=(generation, pool.connection_class, kwargs, listener[1]),
            name="route-memory",
            daemon=True,
        )
        thread.start()

    def _run(self, generation: int, connection_class: type[redis.Connection], kwargs: dict[str, Any],
             prefix: str) -> None:  # fmt: skip
        backoff = 0.1
        while generation == self._generation:
            connection = connection_class(**kwargs)
            try:
                connection.connect()
                connection.send_command("CLIENT", "ID")
                client_id = connection.read_response()
                self.client_id = client_id
                connection.send_command("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", prefix)
                connection.read_response()
                connection.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
                connection.read_response()
                self._set_live(generation, True)
                backoff = 0.1
                self._relay(generation, connection)
            except (redis.RedisError, OSError) as exc:
                logger.debug("route memory: connection to Redis lost (%s); routes are read from Redis", exc)
            except Exception:  # a bug here must not end the thread for good: routes are read from Redis meanwhile
                logger.exception("route memory: listener failed; starting again")
            finally:
                self._set_live(generation, False)
                connection.disconnect()
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _relay(self, generation: int, connection: redis.Connection) -> None:
        """Apply Redis's messages until the connection breaks or a newer listener takes over."""
        while generation == self._generation:
            if not connection.can_read(timeout=PING_SECONDS):
                connection.send_command("PING")
                if not connection.can_read(timeout=PING_TIMEOUT):
                    raise redis.ConnectionError("Redis did not answer a ping")
            message = connection.read_response()
            if isinstance(message, list) and message[:1] == [b"pong"]:
                continue
            with self._lock:
                if generation != self._generation:
                    return
                self._epoch += 1
                keys = message[2] if isinstance(message, list) and len(message) == 3 else None
                if isinstance(keys, list):
                    for key in keys:
                        self._routes.pop(key.decode() if isinstance(key, bytes) else str(key), None)
                else:  # FLUSHDB/FLUSHALL (no key names), or anything unexpected
                    self._routes.clear()

    def _set_live(self, generation: int, live: bool) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._live = live
            self._epoch += 1
            self._routes.clear()

    def _after_fork(self) -> None:
        """In a forked child: the listener thread stayed in the parent, and its lock may have been held."""
        self._lock = threading.Lock()
        self._listener = None
        self._live = False
        self._routes = {}
        self.client_id = None


memory = RouteMemory()
os.register_at_fork(after_in_child=memory._after_fork)
