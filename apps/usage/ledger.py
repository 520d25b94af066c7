"""The ledger rows of AI calls, with their tokens added to Redis: written together when calls end together.

Every AI call leaves one ``UsageEvent`` row in its tenant's schema before its
response goes out, and its tokens are added to the live counters in Redis
(``apps.usage.meter``). Done one call at a time that is an ``INSERT`` and a Redis
script call per call. Here the calls that end while another call's rows are being
written wait, and the next of them to go writes all of theirs at once (group
commit, as PostgreSQL does with its WAL): one script call with the tokens summed
per counter, and one statement with a multi-row ``INSERT`` per schema. A call alone
writes its own row at once, as before; under load each row costs a fraction of a
round trip, and a call that writes other tenants' rows waits for one round trip
more at most.

Each call still returns only once its row is committed, so the ledger stays
exact. The rows name their schema in the statement, so the call that writes a
batch does not depend on its connection's search path. A caller inside a
transaction (``atomic``) writes its own row there instead, so that the row
commits or rolls back with that transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from redis.exceptions import RedisError

from apps.usage.scripts import add_to_counters

logger = logging.getLogger(__name__)

_COLUMNS = "(user_id, api_key_id, kind, calls, tokens, day, counted_calls, counted_tokens, created_at)"
_VALUES = "(%s, %s, %s, 1, %s, %s, %s, %s, now())"


@dataclass(eq=False)
class Row:
    """One AI call's ledger row, with the Redis counters its tokens go to."""

    schema: str
    user_id: int | None
    api_key_id: int | None
    kind: str
    tokens: int
    day: dt.date
    counted_calls: bool  # False: Redis did not count the call (the flush will)
    month_key: str
    day_key: str
    who: str  # the day counter's "<user id>" or "k" (API keys)
    # Whether the tokens reached Redis (False: the flush adds them); set by the write.
    counted_tokens: bool = field(init=False)
    done: bool = False
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.counted_tokens = self.counted_calls


class LedgerWriteError(Exception):
    """The batch that held this call's row failed; the row was not written."""


class _GroupCommit:
    """One per process: at most one batch being written at a time, the next one gathering meanwhile."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: list[Row] = []
        self._writing = False

    def write(self, row: Row) -> None:
        with self._changed:
            self._waiting.append(row)
            while self._writing and not row.done:
                self._changed.wait()
            if row.done:  # another call wrote it
                if row.error is not None:
                    raise LedgerWriteError("the usage ledger row was not written") from row.error
                return
            self._writing = True
            batch, self._waiting = self._waiting, []
        failed: BaseException | None = None
        try:
            write_rows(batch)
        except BaseException as exc:  # nothing was inserted: every row fails with it
            failed = exc
            raise
        finally:
            with self._changed:
                for other in batch:
                    if failed is not None and other.error is None:
                        other.error = failed
                    other.done = True
                self._writing = False
                self._changed.notify_all()
        if row.error is not None:
            raise row.error


_group = _GroupCommit()


def write(row: Row) -> None:
    """Add the row's tokens to Redis and commit the row; return once it is committed."""
    if connection.in_atomic_block:
        write_rows([row])
        if row.error is not None:
            raise row.error
        return
    _group.write(row)


def write_rows(rows: list[Row]) -> None:
    """Write ``rows`` on this thread's connection: one Redis script call and one statement.

    Rows of several tenants go in one statement (an ``INSERT`` per schema, each a
    ``WITH`` clause), so a call that writes other tenants' rows waits for one round
    trip, not one per tenant. If it fails, each schema is tried alone: a schema whose
    ``INSERT`` fails sets ``error`` on its rows, and the others are written.
    """
    _add_tokens([row for row in rows if row.counted_calls and row.tokens])
    inserts: list[tuple[str, list[Any], list[Row]]] = []
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute of django.db.connection looks it up again
    by_schema: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_schema[row.schema].append(row)
    for schema, batch in by_schema.items():
        params: list[Any] = []
        for row in batch:
            params += [row.user_id, row.api_key_id, row.kind, row.tokens, row.day, row.counted_calls,
                       row.counted_tokens]  # fmt: skip
        table = f"{db.ops.quote_name(schema)}.usage_usageevent"
        inserts.append((f"INSERT INTO {table} {_COLUMNS} VALUES {', '.join([_VALUES] * len(batch))}", params, batch))
    db.ensure_connection()
    # psycopg's own cursor (server-side binding, not prepared, so poolers still work): Django's
    # cursor wrapper costs twice the CPU of the statement itself (docs/benchmarks.md).
    with psycopg.Cursor(db.connection) as cursor:
        if len(inserts) > 1:
            together = "WITH " + ", ".join(f"s{n} AS ({sql})" for n, (sql, _p, _b) in enumerate(inserts))
            try:
                cursor.execute(f"{together} SELECT 1", [param for _sql, params, _b in inserts for param in params])
                return
            except Exception:  # one statement: nothing was written; try each schema alone
                logger.warning("usage ledger rows of %d schemas failed together; writing each alone", len(inserts))
        for sql, params, batch in inserts:
            try:
                cursor.execute(sql, params)
            except Exception as exc:  # handed to each row's caller
                for row in batch:
                    row.error = exc


def _add_tokens(rows: list[Row]) -> None:
    """One script call: each counter gets the sum of its rows' tokens."""
    if not rows:
        return
    sums: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        sums[row.month_key, row.day_key, row.who] += row.tokens
    try:
        add_to_counters({group: (0, tokens) for group, tokens in sums.items()})
    except RedisError:
        logger.warning("usage tokens of %d call(s) not added to Redis; the flush will add them", len(rows))
        for row in rows:
            row.counted_tokens = False
