"""django-tenants' PostgreSQL backend, with one round trip less before each request's first query.

With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` on a persistent connection
before a request's first query, and django-tenants then sends ``SET search_path``
for the request's tenant (routing a request always forgets the path set before).
When both are due this backend sends only the ``SET``: if it succeeds the
connection is usable; if it fails the connection is closed and the query that
follows opens a new one, as after a failed ``SELECT 1``. It saves a round trip on
every request, e.g. before a chat reply's first token (docs/benchmarks.md).

With a pool (``settings.DATABASE_POOL``, web processes) the same holds for a
connection just taken from the pool: the pool does not check it (that would be a
round trip per request), the ``SET`` does. When it fails, the connection is
dropped, the pool checks its other idle connections (after a server restart they
are all gone), and the request takes another.

From PostgreSQL 18 the server reports ``search_path`` to the client whenever it
changes (a ``ParameterStatus`` message, a rollback that undoes a ``SET``
included), so libpq always knows the path a connection has. A connection taken
from the pool that already has the request's path, and has nothing waiting on
its socket (a closing server's FATAL message, or its end of the connection),
is used without the ``SET``: one round trip less before a request's first query
(docs/benchmarks.md). Otherwise, and with older servers, the ``SET`` is sent as
above. Which reported value a path gives is learned from the server, after the
``SET`` that set it, never guessed from PostgreSQL's quoting rules.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.utils import OperationalError
from django_tenants.postgresql_backend import base
from psycopg.pq import ConnStatus, TransactionStatus

# search_path (as schema names) -> the value the server reports for it, learned from the server.
_REPORTED_PATHS: dict[tuple[str, ...], bytes] = {}
_MAX_REPORTED_PATHS = 10_000


def _has_input_waiting(connection: psycopg.Connection[Any]) -> bool:
    poller = select.poll()  # not select.select(), which fails on descriptors above 1023
    poller.register(connection.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    health_check_done: bool
    search_path_set_schemas: list[str] | None
    _setting_search_path: bool

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is None
            or not self.health_check_enabled
            or self.health_check_done
            or self.pool
            or self.search_path_set_schemas  # nothing to set: Django's own check
        ):
            super().close_if_health_check_failed()
            return
        try:
            self._handle_search_path()  # leaves search_path_set_schemas unset if the SET failed
        except psycopg.Error:  # e.g. the server closed the connection
            self.search_path_set_schemas = None
        if not self.search_path_set_schemas:
            self.close()
        self.health_check_done = True

    def _handle_search_path(self, cursor: Any = None) -> None:
        if self.pool is None or self.search_path_set_schemas or self._setting_search_path or not self.schema_name:
            super()._handle_search_path(cursor)
            return
        paths = self._get_cursor_search_paths()
        known = _REPORTED_PATHS.get(tuple(paths))
        pgconn = self.connection.pgconn
        if (
            known is not None
            and pgconn.status == ConnStatus.OK
            and pgconn.transaction_status == TransactionStatus.IDLE
            and pgconn.parameter_status(b"search_path") == known
            and not _has_input_waiting(self.connection)
        ):
            self.search_path_set_schemas = paths
            return
        super()._handle_search_path(cursor)
        reported = pgconn.parameter_status(b"search_path")  # None before PostgreSQL 18
        if self.search_path_set_schemas and reported is not None:
            if len(_REPORTED_PATHS) >= _MAX_REPORTED_PATHS:
                _REPORTED_PATHS.clear()
            _REPORTED_PATHS[tuple(paths)] = reported

    def drop_if_lost(self) -> None:
        """Let go of a connection the server has ended, outside a transaction, so that the next query opens (or
        takes from the pool) another: no round trip, one ``poll``.

        A thread keeps its connection for a whole request, and a chat turn's lasts minutes: a PostgreSQL restart,
        a failover or ``pg_terminate_backend`` meanwhile left a closing server's FATAL message (or the end of the
        connection) on its socket, and the turn's next write failed on it after the model had answered. Its reply
        was lost and its stream broke off without an error (QA, 2026-12-08). Outside a transaction nothing is lost
        by taking another connection. Within one, the transaction fails, as it must.
        """
        connection = self.connection
        if connection is None or self.in_atomic_block:
            return
        pgconn = connection.pgconn
        if pgconn.status == ConnStatus.OK and pgconn.transaction_status == TransactionStatus.IDLE:
            if not _has_input_waiting(connection):
                return
        elif pgconn.status == ConnStatus.OK:  # a transaction under way, outside Django's: not ours to end
            return
        connection.close()  # so that a pool drops it instead of keeping it
        self.close()
        if self.pool is not None:  # its other idle connections are likely gone too (a server restart)
            self.pool.check()

    def ensure_connection(self) -> None:
        self.drop_if_lost()
        super().ensure_connection()

    def _cursor(self, name: str | None = None) -> Any:
        self.drop_if_lost()
        fresh_from_pool = self.pool is not None and self.connection is None and not self.in_atomic_block
        cursor = super()._cursor(name)
        if not fresh_from_pool or self.search_path_set_schemas:
            return cursor
        # The SET failed: the server ended the connection (its FATAL message can arrive before
        # libpq sees the socket close, so the connection need not look broken yet).
        # The pool's other idle connections are likely gone too (a server restart): check them all
        # once, here, rather than on every checkout.
        cursor.close()
        self.connection.close()  # so the pool drops it (and opens a new one) instead of keeping it
        self.close()
        self.pool.check()
        cursor = super()._cursor(name)
        if not self.search_path_set_schemas:
            # Never query with the path a connection's previous user left: it may be another tenant's.
            cursor.close()
            raise OperationalError("the tenant's search_path could not be set on a pooled connection")
        return cursor
