"""The ledger rows of AI calls: written together when calls end together.

Every AI call leaves one ``UsageEvent`` row in its tenant's schema before its
response goes out. Done one call at a time that is an ``INSERT`` per call. Here
the calls that end while another call's rows are being written wait, and the
next of them to go writes all of theirs at once (group commit, as PostgreSQL
does with its WAL): one statement with a multi-row ``INSERT`` per schema. A call
alone writes its own row at once; under load each row costs a fraction of a
round trip, and a call that writes other tenants' rows waits for one round trip
more at most.

Each call still returns only once its row is committed, so the ledger stays
exact. The rows name their schema in the statement, so the call that writes a
batch does not depend on its connection's search path. A caller inside a
transaction (``atomic``) writes its own row there instead, so that the row
commits or rolls back with that transaction.

A lock on one tenant's ledger table (a migration's ``ALTER TABLE``, a long
transaction in that schema) must not hold up the other tenants' calls, whose rows
share the batch or wait for it. So a batch waits at most ``LOCK_TIMEOUT_MS`` for a
lock (``SET LOCAL lock_timeout``, in the statement's own round trip). When it times
out nothing of it was written; each schema is then tried alone the same way, and the
rows of a schema still locked go back to their own calls, which write them alone and
wait for that lock as long as it takes, outside the batch. Until one of them is
written, that schema's next calls write alone too instead of joining a batch.

A call's tokens reach the live counters in Redis with the next flush
(``apps.usage.services.usage_flush``, every minute), not with the call: the row
is written with ``counted_tokens`` false. Nothing is checked against tokens
before a call (no quota, alert or rate counts them) and everything that shows
them reads PostgreSQL, so adding them one call at a time would cost every AI
call a Redis round trip that no reader waits for (docs/benchmarks.md, metering).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections

logger = logging.getLogger(__name__)

_COLUMNS = "(user_id, api_key_id, kind, calls, tokens, day, counted_calls, counted_in, counted_tokens, created_at)"
# counted_tokens false: the flush adds the tokens to Redis (see above).
_VALUES = "(%s, %s, %s, 1, %s, %s, %s, %s, false, now())"


@dataclass(eq=False)
class Row:
    """One AI call's ledger row."""

    schema: str
    user_id: int | None
    api_key_id: int | None
    kind: str
    tokens: int
    day: dt.date
    counted_calls: bool  # False: Redis did not count the call (the flush will)
    counted_in: str = ""  # the live counters' generation that counted it (apps.usage.models.UsageEvent)
    done: bool = False
    error: BaseException | None = None
    locked: bool = False  # not written: its table stayed locked past the batch's lock timeout


#: How long a batch waits for a lock on a ledger table before its schemas are written apart.
LOCK_TIMEOUT_MS = 300


class LedgerWriteError(Exception):
    """The batch that held this call's row failed; the row was not written."""


class _GroupCommit:
    """One per process: at most one batch being written at a time, the next one gathering meanwhile."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: list[Row] = []
        self._writing = False
        # Schemas whose ledger table a batch found locked: their calls write alone until one has written.
        self._locked: set[str] = set()

    def write(self, row: Row) -> None:
        batch: list[Row] = []
        with self._changed:
            alone = row.schema in self._locked
            if not alone:
                self._waiting.append(row)
                while self._writing and not row.done:
                    self._changed.wait()
                if not row.done:
                    self._writing = True
                    batch, self._waiting = self._waiting, []
        if batch:  # this call writes the batch
            self._write_batch(batch)
            if row.error is not None:  # its schema's INSERT failed
                raise row.error
        elif row.error is not None:  # another call wrote the batch, and this row failed with it
            raise LedgerWriteError("the usage ledger row was not written") from row.error
        if alone or row.locked:
            self._write_alone(row)

    def _write_batch(self, batch: list[Row]) -> None:
        failed: BaseException | None = None
        try:
            write_rows(batch, lock_timeout_ms=LOCK_TIMEOUT_MS)
        except BaseException as exc:  # nothing was inserted: every row fails with it
            failed = exc
            raise
        finally:
            with self._changed:
                for other in batch:
                    if failed is not None and other.error is None:
                        other.error = failed
                    if other.locked:
                        self._locked.add(other.schema)
                    other.done = True
                self._writing = False
                self._changed.notify_all()

    def _write_alone(self, row: Row) -> None:
        """Write the row of a schema whose table is locked: this call waits for that lock, and no other call."""
        row.locked = False
        try:
            write_rows([row])
        finally:
            with self._changed:
                self._locked.discard(row.schema)
        if row.error is not None:
            raise row.error


_group = _GroupCommit()


def write(row: Row) -> None:
    """Commit the row; return once it is committed."""
    if connection.in_atomic_block:
        write_rows([row])
        if row.error is not None:
            raise row.error
        return
    _group.write(row)


def write_rows(rows: list[Row], *, lock_timeout_ms: int | None = None) -> None:
    """Write ``rows`` on this thread's connection, in one statement.

    Rows of several tenants go in one statement (an ``INSERT`` per schema, each a
    ``WITH`` clause), so a call that writes other tenants' rows waits for one round
    trip, not one per tenant. If it fails, each schema is tried alone: a schema whose
    ``INSERT`` fails sets ``error`` on its rows, and the others are written.

    ``lock_timeout_ms`` (only outside a transaction): each statement waits at most that
    long for a lock on a table, set in the same round trip; a schema whose table stays
    locked sets ``locked`` on its rows, which are not written.
    """
    inserts: list[tuple[str, list[Any], list[Row]]] = []
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute of django.db.connection looks it up again
    by_schema: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_schema[row.schema].append(row)
    for schema, batch in by_schema.items():
        params: list[Any] = []
        for row in batch:
            params += [row.user_id, row.api_key_id, row.kind, row.tokens, row.day, row.counted_calls, row.counted_in]
        table = f"{db.ops.quote_name(schema)}.usage_usageevent"
        inserts.append((f"INSERT INTO {table} {_COLUMNS} VALUES {', '.join([_VALUES] * len(batch))}", params, batch))
    db.ensure_connection()
    if lock_timeout_ms is None:
        # psycopg's own cursor (server-side binding, not prepared, so poolers still work): Django's
        # cursor wrapper costs twice the CPU of the statement itself (docs/benchmarks.md).
        cursor: psycopg.Cursor[Any] = psycopg.Cursor(db.connection)
        first = ""
    else:
        # SET LOCAL and the statement in one query string: one round trip and one implicit
        # transaction, which the setting ends with. That needs the simple query protocol, so
        # the parameters are bound on the client.
        assert not db.in_atomic_block, "a lock timeout would outlast the statement in the caller's transaction"
        cursor = psycopg.ClientCursor(db.connection)
        first = f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'; "
    with cursor:
        if len(inserts) > 1:
            together = "WITH " + ", ".join(f"s{n} AS ({sql})" for n, (sql, _p, _b) in enumerate(inserts))
            try:
                cursor.execute(
                    f"{first}{together} SELECT 1", [param for _sql, params, _b in inserts for param in params]
                )
                return
            except Exception as exc:  # one transaction: nothing was written; try each schema alone
                logger.warning("usage ledger rows of %d schemas failed together (%s); writing each alone",
                               len(inserts), type(exc).__name__)  # fmt: skip
        for sql, params, batch in inserts:
            try:
                cursor.execute(first + sql, params)
            except psycopg.errors.LockNotAvailable:  # only with a lock timeout: left to the rows' own calls
                logger.warning("usage ledger table of %s is locked; its calls write their rows alone", batch[0].schema)
                for row in batch:
                    row.locked = True
            except Exception as exc:  # handed to each row's caller
                for row in batch:
                    row.error = exc
