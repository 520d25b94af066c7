"""The ledger rows of AI calls: written together when calls end together, each committed before its call returns.

The group path runs only outside a transaction, so these tests write from threads of
their own (each with its own autocommit connection) and clean up what they committed.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from django.db import connections, transaction
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.tenants.models import Tenant
from apps.usage import ledger
from apps.usage import limits as L
from apps.usage.meter import Meter, day_key
from apps.usage.models import UsageEvent
from tests.conftest import TenantFixture
from tests.usage.conftest import counters, dead_redis, direct_dsn, flush, forget_counters

pytestmark = pytest.mark.django_db


def row(schema: str, tokens: int, *, user_id: int | None = 7) -> ledger.Row:
    day = L.today()
    return ledger.Row(
        schema=schema, user_id=user_id, api_key_id=None, kind="model", tokens=tokens, day=day, counted_calls=True,
    )  # fmt: skip


def committed(schema: str) -> list[tuple[int, dt.datetime]]:
    """(tokens, created_at) of the rows another connection sees, i.e. the committed ones."""
    with psycopg.connect(**direct_dsn(), autocommit=True) as check:
        return check.execute(f'SELECT tokens, created_at FROM "{schema}".usage_usageevent ORDER BY id').fetchall()


@pytest.fixture
def committed_rows(tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> Iterator[None]:
    """Rows committed outside the test's transaction, removed again with the live counters."""
    forget_counters()
    yield
    forget_counters()
    with psycopg.connect(**direct_dsn(), autocommit=True) as cleanup:
        for tenant in (tenant_alpha, tenant_beta):
            cleanup.execute(f'DELETE FROM "{tenant.tenant.schema_name}".usage_usageevent')


class Writer(threading.Thread):
    """Writes one row from a thread of its own, as a request of a threaded server would."""

    def __init__(self, write: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.write = write
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.write()
        except BaseException as exc:  # the test looks at it
            self.error = exc
        finally:
            connections.close_all()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# Statements of this database waiting for a lock on a ledger table.
LOCK_WAITS = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                  AND wait_event_type = 'Lock' AND query LIKE '%%usage_usageevent%%'"""


def test_calls_that_end_while_a_row_is_written_share_the_next_insert(
    tenant_alpha: TenantFixture, committed_rows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = tenant_alpha.tenant.schema_name
    monkeypatch.setattr(ledger, "LOCK_TIMEOUT_MS", 60_000)  # the lock below holds the first batch, not only 0.3 s
    with psycopg.connect(**direct_dsn()) as lock, psycopg.connect(**direct_dsn(), autocommit=True) as watch:
        # Holds the first writer inside its INSERT while four more calls end.
        lock.execute(f'LOCK TABLE "{schema}".usage_usageevent IN SHARE MODE')
        first = Writer(lambda: ledger.write(row(schema, 1)))
        first.start()
        wait_for(lambda: watch.execute(LOCK_WAITS).fetchone() == (1,), "the first INSERT to wait for the lock")
        missing = row("t_no_such_schema", 100)
        others = [Writer(partial(ledger.write, row(schema, n))) for n in (2, 3, 4)]
        others.append(Writer(lambda: ledger.write(missing)))
        for writer in others:
            writer.start()
        wait_for(lambda: len(ledger._group._waiting) == 4, "the four calls to queue behind the first")
        time.sleep(0.1)
        assert all(writer.is_alive() for writer in [first, *others])  # nobody returns before its row commits
        lock.rollback()
    for writer in [first, *others]:
        writer.join(10)

    assert first.error is None
    assert [writer.error for writer in others[:3]] == [None, None, None]
    # Its schema's INSERT failed, and only that one: raised as is if that call wrote the batch, else wrapped.
    failed = others[3].error
    assert isinstance(failed, ledger.LedgerWriteError | psycopg.errors.UndefinedTable), failed
    assert isinstance(failed.__cause__ if isinstance(failed, ledger.LedgerWriteError) else failed,
                      psycopg.errors.UndefinedTable)  # fmt: skip
    rows = committed(schema)
    assert sorted(tokens for tokens, _at in rows) == [1, 2, 3, 4]
    created = dict(rows)
    assert created[2] == created[3] == created[4] != created[1]  # one statement (one now()) for the three


def test_a_batch_writes_each_tenant_in_its_own_schema_in_one_statement(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture, committed_rows: None
) -> None:
    alpha, beta = tenant_alpha.tenant.schema_name, tenant_beta.tenant.schema_name
    rows = [row(alpha, 5), row(beta, 6), row(alpha, 7, user_id=None)]
    writer = Writer(lambda: ledger.write_rows(rows))
    writer.start()
    writer.join(10)
    assert writer.error is None
    assert [r.error for r in rows] == [None, None, None]
    assert sorted(t for t, _ in committed(alpha)) == [5, 7]
    assert [t for t, _ in committed(beta)] == [6]
    assert {at for _, at in committed(alpha) + committed(beta)} == {committed(beta)[0][1]}  # one statement


def test_a_lock_on_one_tenants_ledger_table_holds_up_only_that_tenants_calls(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture, committed_rows: None
) -> None:
    """A migration's ALTER TABLE, or a long transaction, in one schema: the other tenants' calls in the same
    process write their rows at once, each once; the locked tenant's calls wait for their own table only and
    write theirs, each once, when it is free again."""
    alpha, beta = tenant_alpha.tenant.schema_name, tenant_beta.tenant.schema_name
    with psycopg.connect(**direct_dsn()) as lock, psycopg.connect(**direct_dsn(), autocommit=True) as watch:
        lock.execute(f'LOCK TABLE "{alpha}".usage_usageevent IN ACCESS EXCLUSIVE MODE')
        first = Writer(lambda: ledger.write(row(alpha, 1)))
        first.start()
        wait_for(lambda: watch.execute(LOCK_WAITS).fetchone() == (1,), "alpha's row to wait for the lock")
        # They queue behind alpha's first row, so alpha's second shares a batch with beta's rows.
        alphas = [first, Writer(partial(ledger.write, row(alpha, 2)))]
        betas = [Writer(partial(ledger.write, row(beta, n))) for n in (10, 20, 30)]
        for writer in [alphas[1], *betas]:
            writer.start()
        for writer in betas:
            writer.join(10)
        betas_done = [not writer.is_alive() for writer in betas]
        alphas_waiting = [writer.is_alive() for writer in alphas]
        beta_rows = sorted(tokens for tokens, _at in committed(beta))
        lock.rollback()
    for writer in alphas:
        writer.join(10)

    assert betas_done == [True, True, True]  # before the lock was released
    assert [writer.error for writer in betas] == [None, None, None]
    assert beta_rows == [10, 20, 30]
    assert alphas_waiting == [True, True]  # nobody returns before its row commits
    assert [writer.is_alive() for writer in alphas] == [False, False]
    assert [writer.error for writer in alphas] == [None, None]
    assert sorted(tokens for tokens, _at in committed(alpha)) == [1, 2]
    assert sorted(tokens for tokens, _at in committed(beta)) == [10, 20, 30]


def test_a_batch_leaves_the_rows_of_a_locked_table_to_their_calls(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture, committed_rows: None
) -> None:
    """A batch that meets a lock waits for it only briefly; nothing of it was written then, so each schema is
    tried alone: the free ones are written, and the locked one's rows are marked, not written and not failed."""
    alpha, beta = tenant_alpha.tenant.schema_name, tenant_beta.tenant.schema_name
    rows = [row(alpha, 1), row(beta, 2), row(alpha, 3)]
    with psycopg.connect(**direct_dsn()) as lock:
        lock.execute(f'LOCK TABLE "{alpha}".usage_usageevent IN ACCESS EXCLUSIVE MODE')
        writer = Writer(lambda: ledger.write_rows(rows, lock_timeout_ms=ledger.LOCK_TIMEOUT_MS))
        writer.start()
        writer.join(10)
        returned = not writer.is_alive()
        lock.rollback()
    writer.join(10)
    assert returned  # with the lock still held
    assert writer.error is None
    assert [(r.locked, r.error) for r in rows] == [(True, None), (False, None), (True, None)]
    assert [tokens for tokens, _at in committed(beta)] == [2]
    assert committed(alpha) == []


def test_inside_a_transaction_the_row_commits_or_rolls_back_with_it(tenant_alpha: TenantFixture) -> None:
    schema = tenant_alpha.tenant.schema_name
    ledger.write(row(schema, 11))
    with schema_context(schema):
        assert list(UsageEvent.objects.values_list("tokens", flat=True)) == [11]
    assert committed(schema) == []  # the test's transaction, not committed

    def failing_transaction() -> None:
        with transaction.atomic():
            ledger.write(row(schema, 12))
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        failing_transaction()
    with schema_context(schema):
        assert list(UsageEvent.objects.values_list("tokens", flat=True)) == [11]


def test_a_calls_tokens_reach_redis_with_the_flush_once(tenant_alpha: TenantFixture, fresh_counters: None) -> None:
    """The call counts in Redis as it is charged; its tokens are in the ledger at once and reach Redis's month
    and day counters with the next flush, exactly once (a second flush finds nothing to add)."""
    meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=7, api_key_id=None)
    schema = tenant_alpha.tenant.schema_name
    with schema_context(schema):
        ticket = meter.charge()
        meter.record(ticket, 42)
        (event,) = UsageEvent.objects.all()
    assert (event.counted_calls, event.counted_tokens, event.tokens) == (True, False, 42)
    assert counters(tenant_alpha) == {"calls": 1, "tokens": 0}
    assert flush(tenant_alpha) == 1
    assert flush(tenant_alpha) == 0
    assert counters(tenant_alpha) == {"calls": 1, "tokens": 42}
    day = get_redis_connection("default").hgetall(day_key(schema, L.today()))
    assert (int(day[b"7:calls"]), int(day[b"7:tokens"])) == (1, 42)


def test_redis_lost_after_the_charge_still_records_the_call(
    tenant_alpha: TenantFixture, settings: Any, fresh_counters: None
) -> None:
    meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None)
    with schema_context(tenant_alpha.tenant.schema_name):
        ticket = meter.charge()  # counted in Redis
        caches = settings.CACHES
        dead_redis(settings)
        meter.record(ticket, 42)  # needs only PostgreSQL
        settings.CACHES = caches
        (event,) = UsageEvent.objects.all()
    assert (event.counted_calls, event.counted_tokens, event.tokens) == (True, False, 42)
    assert flush(tenant_alpha) == 1
    assert counters(tenant_alpha) == {"calls": 1, "tokens": 42}  # the call once, its tokens by the flush


@pytest.fixture
def committed_usage(tenant_alpha: TenantFixture) -> Iterator[None]:
    """Ledger rows and usage_stats committed outside the test's transaction, removed again."""
    forget_counters()
    yield
    forget_counters()
    with psycopg.connect(**direct_dsn(), autocommit=True) as cleanup:
        for table in ("usage_usageevent", "usage_stats"):
            cleanup.execute(f'DELETE FROM "{tenant_alpha.tenant.schema_name}".{table}')


def test_a_flush_and_a_rebuild_that_overlap_count_a_missed_call_once(
    tenant_alpha: TenantFixture, committed_usage: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush moves a call Redis missed, then adds it to Redis; a rebuild in between would read it
    from usage_stats and then get it a second time from the flush. The two take turns per tenant."""
    from apps.usage import services

    schema, day = tenant_alpha.tenant.schema_name, L.today()
    with psycopg.connect(**direct_dsn(), autocommit=True) as setup:  # a call made while Redis was unreachable
        setup.execute(
            f'INSERT INTO "{schema}".usage_usageevent {ledger._COLUMNS} VALUES {ledger._VALUES}',
            [None, None, "model", 7, day, False, ""],
        )
    moved, resume = threading.Event(), threading.Event()
    add_uncounted = services._add_uncounted

    def moved_then_wait(rows: Any) -> None:  # the flush has committed; Redis not yet told
        moved.set()
        assert resume.wait(10)
        add_uncounted(rows)

    def flush_alpha() -> None:
        flush(tenant_alpha)

    monkeypatch.setattr(services, "_add_uncounted", moved_then_wait)
    flusher = Writer(flush_alpha)
    flusher.start()
    assert moved.wait(10)
    tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)

    def rebuild() -> None:
        with schema_context(schema):
            Meter(tenant=tenant, user_id=None, api_key_id=None).rebuild(day)

    rebuilder = Writer(rebuild)  # Redis lost its counters: the next call rebuilds them
    rebuilder.start()
    rebuilder.join(0.5)
    waited = rebuilder.is_alive()  # its turn comes once the flush has told Redis
    resume.set()
    flusher.join(10)
    rebuilder.join(10)
    assert waited
    assert flusher.error is None
    assert rebuilder.error is None
    assert counters(tenant_alpha) == {"calls": 1, "tokens": 7}
