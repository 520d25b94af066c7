"""Metering in one process: what counts, the ledger and its flush, quotas, the rate limit, Redis faults."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
import time_machine
from django.conf import settings
from django.core import mail
from django.db import connection as default_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, Role, User
from apps.accounts.services import api_key_create, api_key_revoke
from apps.audit.models import AuditEvent
from apps.chat.models import Conversation, Message
from apps.core.actors import Actor
from apps.core.templatetags.times import zoned
from apps.llm.setup_cache import ai_setup_key
from apps.tenants.models import Tenant
from apps.usage import limits as L
from apps.usage.meter import RATE_WINDOW_SECONDS, Meter, day_key, month_key, storage_key
from apps.usage.models import ApiKeyUsage, QuotaAlert, UsageEvent, UsageStat
from apps.usage.services import _FLUSH_SQL, calls_alerts_catch_up, storage_measure, usage_flush
from apps.usage.tasks import send_quota_alert_email
from tests.conftest import TEST_ACTOR, TenantFixture, admin_of, api_key_secret, bearer, jwt_pair, make_member
from tests.usage.conftest import counters, dead_redis, direct_dsn, flush, forget_counters, member_client, set_limits

pytestmark = pytest.mark.django_db

QUESTION = "站点 S001 最近的水位是多少?"


def v1(client: Client, content: str = "Hello") -> Any:
    body = {"model": "hydronet-demo", "messages": [{"role": "user", "content": content}]}
    return client.post("/v1/chat/completions", body, content_type="application/json")


def key_client(tenant: TenantFixture, role: str = Role.USER) -> Client:
    return tenant.client(**bearer(api_key_secret(tenant, role)))


def streamed_question(client: Client) -> tuple[dict[str, Any], str]:
    """A new conversation, and the whole streamed reply to the demo question in it."""
    conversation = client.post("/api/conversations", {}, content_type="application/json").json()
    response: Any = client.post(f"/api/conversations/{conversation['id']}/messages",
                                {"content": QUESTION, "stream": True}, content_type="application/json")  # fmt: skip
    return conversation, b"".join(response.streaming_content).decode()


def events(tenant: TenantFixture) -> list[UsageEvent]:
    with schema_context(tenant.tenant.schema_name):
        return list(UsageEvent.objects.order_by("id"))


def with_schema(tenant: TenantFixture, read: Callable[[], Any]) -> Any:
    with schema_context(tenant.tenant.schema_name):
        return read()


def one_window() -> None:
    """Wait for the next rate-limit window if this one ends within 2 s: a test's burst must fit in one."""
    left = RATE_WINDOW_SECONDS - time.time() % RATE_WINDOW_SECONDS
    if left < 2:
        time.sleep(left + 0.05)


def limits(tenant: TenantFixture, **changes: Any) -> Tenant:
    return set_limits(Tenant.objects.get(pk=tenant.tenant.pk), **changes)


# --- What counts ------------------------------------------------------------------------


class TestCounting:
    def test_a_chat_turn_counts_each_model_round_and_each_tool_call(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        reply = client.post(f"/api/conversations/{conversation['id']}/messages", {"content": QUESTION},
                            content_type="application/json")  # fmt: skip
        assert reply.status_code == 200, reply.content
        tokens = reply.json()["tokens"]
        assert tokens > 0

        ledger = events(tenant_alpha)
        assert [e.kind for e in ledger] == ["model", "tool", "model"]
        assert {e.user_id for e in ledger} == {client.member.pk}
        assert sum(e.tokens for e in ledger) == tokens
        assert counters(tenant_alpha) == {"calls": 3, "tokens": 0}  # the tokens reach Redis with the flush
        assert flush(tenant_alpha) == 3
        assert counters(tenant_alpha) == {"calls": 3, "tokens": tokens}
        day = get_redis_connection("default").hgetall(day_key(tenant_alpha.tenant.schema_name, L.today()))
        assert int(day[f"{client.member.pk}:calls".encode()]) == 3
        assert int(day[f"{client.member.pk}:tokens".encode()]) == tokens

    def test_v1_calls_count_under_the_api_key(self, tenant_alpha: TenantFixture) -> None:
        response = v1(key_client(tenant_alpha))
        assert response.status_code == 200, response.content
        (event,) = events(tenant_alpha)
        assert event.user_id is None
        assert event.api_key_id is not None
        assert event.tokens == response.json()["usage"]["total_tokens"] > 0
        assert counters(tenant_alpha)["calls"] == 1

    def test_the_charge_reads_the_turns_ai_setup_in_its_own_round_trip(
        self, tenant_alpha: TenantFixture, monkeypatch: Any
    ) -> None:
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200  # caches the setup
        sent: list[tuple[Any, ...]] = []
        execute = redis.Redis.execute_command

        def recording(self: redis.Redis, *args: Any, **options: Any) -> Any:
            sent.append(args)
            return execute(self, *args, **options)

        monkeypatch.setattr(redis.Redis, "execute_command", recording)
        assert v1(client).status_code == 200
        setup_key = with_schema(tenant_alpha, ai_setup_key)
        # read inside the charge script, not by a GET of its own
        assert [args[0] for args in sent if setup_key in args] == ["EVALSHA"]

    def test_charge_also_gets_one_key_in_its_script(self, tenant_alpha: TenantFixture) -> None:
        schema = tenant_alpha.tenant.schema_name
        probe = f"{settings.CACHE_KEY_PREFIX}:{schema}:probe"
        get_redis_connection("default").set(probe, b"value")
        try:
            with schema_context(schema):
                meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
                assert meter.charge(also_get=probe).fetched == b"value"
                assert meter.charge(also_get=f"{probe}-missing").fetched is None
                assert meter.charge().fetched is None
        finally:
            get_redis_connection("default").delete(probe)

    def test_ordinary_reads_and_writes_are_not_metered(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        assert client.get("/api/conversations").status_code == 200
        assert client.post("/api/conversations", {}, content_type="application/json").status_code == 201
        assert events(tenant_alpha) == []

    def test_a_model_server_failure_is_not_counted(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_BASE_URL = "http://127.0.0.1:1/v1"
        response = v1(key_client(tenant_alpha))
        assert response.status_code == 502
        assert events(tenant_alpha) == []
        assert counters(tenant_alpha).get("calls", 0) == 0


class TestFlush:
    def test_the_flush_moves_the_ledger_into_usage_stats_once(self, tenant_alpha: TenantFixture) -> None:
        client = key_client(tenant_alpha)
        tokens = sum(v1(client).json()["usage"]["total_tokens"] for _ in range(3))
        assert flush(tenant_alpha) == 3
        assert flush(tenant_alpha) == 0  # a retried flush counts nothing twice
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageEvent.objects.count() == 0
            stat = UsageStat.objects.get(user=None, date=L.today())
        assert (stat.api_calls, stat.tokens_used) == (3, tokens)
        v1(client)
        assert flush(tenant_alpha) == 1
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageStat.objects.get(user=None, date=L.today()).api_calls == 4

    def test_each_api_keys_calls_are_flushed_into_its_own_row_once(self, tenant_alpha: TenantFixture) -> None:
        """Two keys and a member: each key's calls and tokens on its own row, a day; the tenant's row has them all."""
        first, second = api_key_secret(tenant_alpha, Role.USER), api_key_secret(tenant_alpha, Role.ADMIN)
        first_tokens = sum(v1(tenant_alpha.client(**bearer(first))).json()["usage"]["total_tokens"] for _ in range(3))
        second_tokens = v1(tenant_alpha.client(**bearer(second))).json()["usage"]["total_tokens"]
        chat = member_client(tenant_alpha)  # a member's call: no key's
        conversation = chat.post("/api/conversations", {}, content_type="application/json").json()["id"]
        turn = chat.post(f"/api/conversations/{conversation}/messages", {"content": "Hello"},
                         content_type="application/json")  # fmt: skip
        assert turn.status_code == 200, turn.content
        assert flush(tenant_alpha) == 5
        assert flush(tenant_alpha) == 0  # a retried flush counts nothing twice
        with schema_context(tenant_alpha.tenant.schema_name):
            keys = {key.name: key.pk for key in ApiKey.objects.all()}
            per_key = {row.api_key_id: (row.api_calls, row.tokens_used) for row in ApiKeyUsage.objects.all()}
            tenant_row = UsageStat.objects.get(user=None, date=L.today())
        assert per_key == {keys["user key"]: (3, first_tokens), keys["admin key"]: (1, second_tokens)}
        assert (tenant_row.api_calls, tenant_row.tokens_used) == (4, first_tokens + second_tokens)
        v1(tenant_alpha.client(**bearer(first)))
        assert flush(tenant_alpha) == 1
        with schema_context(tenant_alpha.tenant.schema_name):
            assert ApiKeyUsage.objects.get(api_key_id=keys["user key"], date=L.today()).api_calls == 4

    def test_a_worker_killed_mid_flush_counts_nothing_twice(self, tenant_alpha: TenantFixture) -> None:
        """The flush is one statement in one transaction: a worker that dies before COMMIT moved nothing."""
        client = key_client(tenant_alpha)
        for _ in range(2):
            v1(client)
        # The test's own transaction holds the ledger rows; commit-free visibility needs this connection.
        with schema_context(tenant_alpha.tenant.schema_name):
            with default_connection.cursor() as cursor:
                cursor.execute("SAVEPOINT before_killed_flush")
                cursor.execute(_FLUSH_SQL, {"batch": 1000})
                assert sum(row[3] for row in cursor.fetchall()) == 2  # it got as far as moving them...
                cursor.execute("ROLLBACK TO SAVEPOINT before_killed_flush")  # ...and died before COMMIT
            assert UsageEvent.objects.count() == 2
            assert not ApiKeyUsage.objects.exists()
            assert usage_flush() == 2
            assert UsageStat.objects.get(user=None, date=L.today()).api_calls == 2
            assert ApiKeyUsage.objects.get().api_calls == 2


def test_a_killed_worker_connection_rolls_the_flush_back(tenant_alpha: TenantFixture) -> None:
    """The same with a real second connection, closed mid-transaction as a killed worker's would be."""
    dsn = direct_dsn()
    schema = tenant_alpha.tenant.schema_name
    with psycopg.connect(**dsn, autocommit=True) as setup:
        setup.execute(f'INSERT INTO "{schema}".usage_usageevent (kind, calls, tokens, day, counted_calls, '
                      "counted_tokens, created_at) VALUES ('model', 1, 10, %s, true, true, now())",
                      [L.today()])  # fmt: skip
    try:
        killed = psycopg.connect(**dsn)
        killed.execute(f'SET search_path TO "{schema}"')
        killed.execute(_FLUSH_SQL, {"batch": 1000})
        killed.close()  # no COMMIT: PostgreSQL rolls back
        with psycopg.connect(**dsn, autocommit=True) as check:
            count = check.execute(f'SELECT count(*) FROM "{schema}".usage_usageevent').fetchone()
            assert count is not None
            assert count[0] == 1
            stats = check.execute(f'SELECT count(*) FROM "{schema}".usage_stats').fetchone()
            assert stats is not None
            assert stats[0] == 0
    finally:
        with psycopg.connect(**dsn, autocommit=True) as cleanup:
            cleanup.execute(f'DELETE FROM "{schema}".usage_usageevent')
            cleanup.execute(f'DELETE FROM "{schema}".usage_stats')


class TestRedisLoss:
    def test_counts_are_rebuilt_from_the_database_after_a_flush(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, plan="free", api_calls_per_month_override=6)
        client = key_client(tenant_alpha)
        tokens = 0
        for n in range(5):
            response = v1(client)
            assert response.status_code == 200
            tokens += response.json()["usage"]["total_tokens"]
            if n == 2:
                assert flush(tenant_alpha) == 3  # the last two are not flushed yet

        forget_counters()  # Redis restarted empty

        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        quota = admin.get("/api/quota").json()["quotas"][0]
        assert (quota["quota"], quota["used"], quota["remaining"]) == ("api_calls", 5, 1)
        assert counters(tenant_alpha) == {"calls": 5, "tokens": tokens}
        assert v1(client).status_code == 200
        refused = v1(client)
        assert refused.status_code == 402
        assert refused.json()["error"]["details"]["used"] == 6

    def test_redis_down_the_rate_limit_fails_open(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        client = member_client(tenant_alpha)
        dead_redis(settings)
        response = client.get("/api/conversations")
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "1000"
        assert "X-RateLimit-Remaining" not in response  # not known without Redis

    def test_redis_down_a_hard_stop_quota_fails_closed(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        limits(tenant_alpha, plan="free")
        client = key_client(tenant_alpha)
        dead_redis(settings)
        response = v1(client)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "metering_unavailable"
        assert response["Retry-After"] == "5"
        assert events(tenant_alpha) == []

    def test_redis_down_paid_calls_go_on_and_reach_the_counters_later(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200  # the month's counter exists
        caches = settings.CACHES
        dead_redis(settings)
        missed = v1(client)
        assert missed.status_code == 200
        assert [e.counted_calls for e in events(tenant_alpha)] == [True, False]
        settings.CACHES = caches
        assert counters(tenant_alpha)["calls"] == 1
        assert flush(tenant_alpha) == 2
        assert counters(tenant_alpha)["calls"] == 2  # the flush added the call Redis missed
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageStat.objects.get(user=None, date=L.today()).api_calls == 2

    def test_calls_redis_missed_raise_the_alerts_they_reach_with_the_flush(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        """Calls made while Redis was unreachable reach the live counter with the flush, not with a charge, so
        no charge's crossing saw them: the thresholds they took the month past never fired."""
        from apps.usage.tasks import flush_usage

        limits(tenant_alpha, api_calls_per_month_override=10)
        client = key_client(tenant_alpha)
        assert [v1(client).status_code for _ in range(7)] == [200] * 7
        caches = settings.CACHES
        dead_redis(settings)
        assert [v1(client).status_code for _ in range(2)] == [200] * 2  # pro: calls go on, uncounted
        settings.CACHES = caches
        with schema_context(tenant_alpha.tenant.schema_name):
            assert not QuotaAlert.objects.exists()
            assert flush_usage() == 9  # the beat's task
            assert sorted(QuotaAlert.objects.values_list("threshold", flat=True)) == [80, 90]
            assert v1(client).status_code == 200  # the 10th: 100 %, by the charge's own crossing
            assert flush_usage() == 1
            assert sorted(QuotaAlert.objects.values_list("threshold", flat=True)) == [80, 90, 100]  # each once

    def test_redis_down_then_empty_counts_the_missed_call_once(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        client = key_client(tenant_alpha)
        caches = settings.CACHES
        dead_redis(settings)
        assert v1(client).status_code == 200
        settings.CACHES = caches
        forget_counters()
        assert v1(client).status_code == 200  # rebuilds from the ledger, which has the missed call
        assert counters(tenant_alpha)["calls"] == 2
        flush(tenant_alpha)
        assert counters(tenant_alpha)["calls"] == 2  # and the flush does not add it again

    @pytest.mark.parametrize(("plan", "status"), [("free", 503), ("pro", 200)])
    def test_a_redis_that_hangs_fails_open_or_closed_without_stalling(
        self, tenant_alpha: TenantFixture, settings: Any, silent_redis: str, plan: str, status: int
    ) -> None:
        """A Redis that accepts connections and never answers (CLIENT PAUSE, DEBUG SLEEP) is treated as down:
        every request gets the answer docs/architecture.md ("When Redis is down") decides, within the
        timeouts, where redis-py alone waits 5 s for each command."""
        limits(tenant_alpha, plan=plan)
        client = key_client(tenant_alpha)
        dead_redis(settings, silent_redis)
        started = time.monotonic()
        models = client.get("/v1/models")
        response = v1(client)
        elapsed = time.monotonic() - started
        assert models.status_code == 200  # the rate limit fails open
        assert response.status_code == status
        if status == 503:  # the free plan's quota fails closed
            assert response.json()["error"]["code"] == "metering_unavailable"
            assert response["Retry-After"] == "5"
            assert events(tenant_alpha) == []
        else:  # the paid plan's fails open, and the flush counts the call later
            assert [e.counted_calls for e in events(tenant_alpha)] == [False]
        assert "X-RateLimit-Remaining" not in response
        assert elapsed < 5  # a guard against hanging, not a measure of speed

    def test_a_missed_call_written_while_the_counters_are_rebuilt_counts_once(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The rebuild marks the calls Redis missed and reads the totals in one statement: a missed
        call written between two statements would be in the totals and still marked missed, and
        the flush would add it to Redis again."""
        from apps.usage import selectors

        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        forget_counters()  # the next call rebuilds the counters
        read = selectors.counters_for_rebuild

        def a_missed_call_arrives_first(*args: Any, **kwargs: Any) -> Any:
            # A call made while Redis was unreachable (in another process) commits its row now.
            UsageEvent.objects.create(kind="model", calls=1, tokens=7, day=L.today(), counted_calls=False,
                                      counted_tokens=False)  # fmt: skip
            return read(*args, **kwargs)

        monkeypatch.setattr(selectors, "counters_for_rebuild", a_missed_call_arrives_first)
        assert v1(client).status_code == 200  # rebuilds: the first call, the missed one, then this one
        monkeypatch.undo()
        assert counters(tenant_alpha)["calls"] == 3
        assert flush(tenant_alpha) == 3
        assert counters(tenant_alpha)["calls"] == 3  # not 4: the flush found the missed call marked counted
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UsageStat.objects.get(user=None, date=L.today()).api_calls == 3

    def test_a_rebuild_that_finds_the_counters_rebuilt_changes_nothing(self, tenant_alpha: TenantFixture) -> None:
        """Workers whose first charges all found the counters missing rebuild them one after another. A
        later one finds them rebuilt, and calls made meanwhile whose tokens only the flush adds to Redis:
        it must not mark those counted (they are in no counter yet), or the flush never adds them."""
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200  # the first rebuild, then a call: its tokens wait for the flush
        before = counters(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None).rebuild(
                L.today()
            )
        assert counters(tenant_alpha) == before
        assert flush(tenant_alpha) == 1
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=L.today()))
        assert stat.tokens_used > 0
        assert counters(tenant_alpha) == {"calls": stat.api_calls, "tokens": stat.tokens_used}

    def test_a_new_days_counters_are_rebuilt_without_losing_the_months_unflushed_usage(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """At midnight the new day's counters are missing while the month's are there: the rebuild writes
        the day's from what Redis had counted, and the flush adds the rest to both, once."""
        client = key_client(tenant_alpha)
        evening = dt.datetime(2026, 11, 29, 23, 59, 58, tzinfo=dt.UTC)
        with time_machine.travel(evening, tick=False):
            assert v1(client).status_code == 200  # its tokens wait for the flush
            # A call Redis missed (another process, while Redis was unreachable): calls and tokens uncounted.
            with schema_context(tenant_alpha.tenant.schema_name):
                UsageEvent.objects.create(kind="model", calls=1, tokens=7, day=L.today(), counted_calls=False,
                                          counted_tokens=False)  # fmt: skip
        with time_machine.travel(evening + dt.timedelta(seconds=4), tick=False):
            assert v1(client).status_code == 200  # the day's counters are missing: rebuilt; the month's are kept
            assert flush(tenant_alpha) == 3
            stats = with_schema(tenant_alpha, lambda: list(UsageStat.objects.filter(user=None).order_by("date")))
            assert [(s.date, s.api_calls) for s in stats] == [(dt.date(2026, 11, 29), 2), (dt.date(2026, 11, 30), 1)]
            assert counters(tenant_alpha) == {"calls": 3, "tokens": sum(s.tokens_used for s in stats)}
            today = get_redis_connection("default").hgetall(day_key(tenant_alpha.tenant.schema_name, L.today()))
            assert {k: int(v) for k, v in today.items() if k not in (b"init", b"g")} == {
                b"k:calls": 1,
                b"k:tokens": stats[1].tokens_used,
            }

    def test_a_rebuild_without_the_turn_marks_nothing(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rebuild that went ahead without the turn (its holder took too long) cannot know that no other
        rebuild writes the counters first, so it leaves the calls Redis missed to the flush."""
        from apps.usage import meter

        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):
            UsageEvent.objects.create(kind="model", calls=1, tokens=7, day=L.today(), counted_calls=False,
                                      counted_tokens=False)  # fmt: skip
        forget_counters()
        monkeypatch.setattr(meter, "COUNTERS_WAIT_SECONDS", 0.05)
        holder = get_redis_connection("default").lock(f"{meter._prefix(tenant_alpha.tenant.schema_name)}:lock",
                                                      timeout=10)  # fmt: skip
        assert holder.acquire()
        try:
            assert v1(client).status_code == 200  # rebuilt without the turn
        finally:
            holder.release()
        assert [e.counted_calls for e in events(tenant_alpha)] == [True, False, True]
        # Only this call: the first was counted in the lost counters, and Redis missed the other; the flush
        # adds both.
        assert counters(tenant_alpha)["calls"] == 1
        assert flush(tenant_alpha) == 3
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=L.today()))
        assert counters(tenant_alpha) == {"calls": 3, "tokens": stat.tokens_used}

    def test_a_call_in_flight_when_redis_loses_its_data_reaches_the_rebuilt_counters(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A call counted in counters Redis then loses commits its ledger row after the rebuild read the
        ledger: it is in neither. Its row names the generation that counted it, so the flush adds it."""
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None)
        with schema_context(tenant_alpha.tenant.schema_name):
            in_flight = meter.charge()  # the model is still answering when Redis restarts
        forget_counters()
        assert v1(client).status_code == 200  # rebuilt from the first call's row, then this call
        assert counters(tenant_alpha)["calls"] == 2
        with schema_context(tenant_alpha.tenant.schema_name):
            meter.record(in_flight, 5)  # the call in flight ends
        assert flush(tenant_alpha) == 3
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=L.today()))
        assert stat.api_calls == 3
        assert counters(tenant_alpha) == {"calls": 3, "tokens": stat.tokens_used}
        assert flush(tenant_alpha) == 0
        assert counters(tenant_alpha) == {"calls": 3, "tokens": stat.tokens_used}

    @pytest.mark.parametrize(
        "losses",
        [[("month",)], [("day",)], [("month", "day")], [("month",), ("day",)], [("day",), ("month",)]],
        ids=["month", "day", "both", "month-then-day", "day-then-month"],
    )
    def test_calls_in_flight_when_one_counter_is_lost_reach_it_with_the_flush(
        self, tenant_alpha: TenantFixture, losses: list[tuple[str, ...]]
    ) -> None:
        """Redis loses the month's hash, the day's, or both (DEL, eviction), while calls are charged and their
        ledger rows not yet written: the lost hash is rebuilt without them, the other still has them, and the
        flush adds them to the rebuilt one only, once."""
        client = key_client(tenant_alpha)
        schema, today = tenant_alpha.tenant.schema_name, L.today()
        keys = {"month": month_key(schema, today), "day": day_key(schema, today)}
        redis = get_redis_connection("default")
        meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None)
        assert v1(client).status_code == 200
        in_flight = []
        for lost in losses:
            with schema_context(schema):
                in_flight += [meter.charge(), meter.charge()]  # the model is still answering
            redis.delete(*(keys[name] for name in lost))
            assert v1(client).status_code == 200  # rebuilds what was lost, then this call
        with schema_context(schema):
            for ticket in in_flight:
                meter.record(ticket, 5)  # the calls in flight end
        calls = 1 + 3 * len(losses)
        assert flush(tenant_alpha) == calls
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=today))
        assert stat.api_calls == calls
        assert counters(tenant_alpha) == {"calls": calls, "tokens": stat.tokens_used}
        day = redis.hgetall(keys["day"])
        assert (int(day[b"k:calls"]), int(day[b"k:tokens"])) == (calls, stat.tokens_used)
        assert flush(tenant_alpha) == 0
        assert counters(tenant_alpha) == {"calls": calls, "tokens": stat.tokens_used}

    def test_a_call_given_back_after_redis_lost_its_data_leaves_the_rebuilt_counters_alone(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A call whose model server failed is given back only to the counters that counted it."""
        client = key_client(tenant_alpha)
        meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None)
        with schema_context(tenant_alpha.tenant.schema_name):
            failing = meter.charge()
        forget_counters()
        assert v1(client).status_code == 200  # rebuilt: only this call
        with schema_context(tenant_alpha.tenant.schema_name):
            meter.release(failing)
        assert counters(tenant_alpha)["calls"] == 1
        assert flush(tenant_alpha) == 1
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=L.today()))
        assert counters(tenant_alpha) == {"calls": stat.api_calls, "tokens": stat.tokens_used}

    def test_counters_from_before_generations_go_on_counting_exactly(self, tenant_alpha: TenantFixture) -> None:
        """Counters written before generations existed have no ``g``, nor have their ledger rows: all are of
        generation "", and a day's counters rebuilt beside such a month's leave the month's so."""
        client = key_client(tenant_alpha)
        schema, today = tenant_alpha.tenant.schema_name, L.today()
        redis = get_redis_connection("default")
        assert v1(client).status_code == 200
        redis.hdel(month_key(schema, today), "g")
        redis.hdel(day_key(schema, today), "g")
        with schema_context(schema):
            UsageEvent.objects.update(counted_in="")
        assert v1(client).status_code == 200
        redis.delete(day_key(schema, today))
        assert v1(client).status_code == 200  # the day's counters rebuilt beside the month's
        # The month's generation is "" in every row; the day's hash, written anew, has one of its own.
        assert [e.counted_in.partition("/")[0] for e in events(tenant_alpha)] == ["", "", ""]
        assert flush(tenant_alpha) == 3
        stat = with_schema(tenant_alpha, lambda: UsageStat.objects.get(user=None, date=today))
        assert counters(tenant_alpha) == {"calls": 3, "tokens": stat.tokens_used}
        day = redis.hgetall(day_key(schema, today))
        assert (int(day[b"k:calls"]), int(day[b"k:tokens"])) == (3, stat.tokens_used)

    def test_a_call_given_back_leaves_the_counters_that_counted_it(self, tenant_alpha: TenantFixture) -> None:
        meter = Meter(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk), user_id=None, api_key_id=None)
        with schema_context(tenant_alpha.tenant.schema_name):
            kept, failing = meter.charge(), meter.charge()
            assert counters(tenant_alpha)["calls"] == 2
            meter.release(failing)
            meter.record(kept, 3)
        assert counters(tenant_alpha)["calls"] == 1
        assert flush(tenant_alpha) == 1
        assert counters(tenant_alpha) == {"calls": 1, "tokens": 3}


@pytest.mark.parametrize("moment", ["2026-11-30T23:59:59+00:00"])
def test_a_month_boundary_puts_each_call_in_its_own_month(tenant_alpha: TenantFixture, moment: str) -> None:
    client = key_client(tenant_alpha)
    last = dt.datetime.fromisoformat(moment)
    with time_machine.travel(last, tick=False):
        assert v1(client).status_code == 200
    with time_machine.travel(last + dt.timedelta(seconds=2), tick=False):
        assert v1(client).status_code == 200
        assert [e.day for e in events(tenant_alpha)] == [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]
        assert counters(tenant_alpha, dt.date(2026, 11, 30))["calls"] == 1
        assert counters(tenant_alpha, dt.date(2026, 12, 1))["calls"] == 1
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        body = admin.get("/api/quota").json()
        assert dt.datetime.fromisoformat(body["resets_at"]) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        assert body["quotas"][0]["used"] == 1
        flush(tenant_alpha)
    with schema_context(tenant_alpha.tenant.schema_name):
        assert sorted(UsageStat.objects.values_list("date", "api_calls")) == [
            (dt.date(2026, 11, 30), 1),
            (dt.date(2026, 12, 1), 1),
        ]


# --- Quotas -----------------------------------------------------------------------------


class TestQuotas:
    def test_the_free_plan_stops_hard_and_the_refusal_changes_nothing(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, plan="free", api_calls_per_month_override=2)
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        for _ in range(2):
            assert client.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):
            stored = Message.objects.count()
        refused = client.post(url, {"content": "Hi"}, content_type="application/json")
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        resets = L.iso(L.resets_at(L.today()))
        assert error["details"] == {"quota": "api_calls", "limit": 2, "used": 2, "resets_at": resets}
        # When calls come back, in the workspace's zone, as the banner says it: "this month" alone read wrong at
        # 04:00 on the 1st in China, where the month had changed.
        assert zoned(L.resets_at(L.today())) in error["message"]
        with schema_context(tenant_alpha.tenant.schema_name):
            assert Message.objects.count() == stored  # no user message without a reply
        assert len(events(tenant_alpha)) == 2
        assert v1(key_client(tenant_alpha)).status_code == 402  # /v1 shares the quota

    def test_a_quota_running_out_mid_turn_ends_it_with_an_error_event(
        self, tenant_alpha: TenantFixture, hydrology: Any
    ) -> None:
        limits(tenant_alpha, plan="free", api_calls_per_month_override=1)  # the tool call will not fit
        conversation, body = streamed_question(member_client(tenant_alpha))
        assert "event: error" in body
        assert '"code":"quota_exceeded"' in body
        assert [e.kind for e in events(tenant_alpha)] == ["model"]
        tokens = with_schema(tenant_alpha, lambda: Conversation.objects.get(pk=conversation["id"]).tokens_used)
        assert tokens == events(tenant_alpha)[0].tokens > 0  # the round that ran is in the conversation's count
        failed = with_schema(tenant_alpha, lambda: Message.objects.get(conversation_id=conversation["id"],
                                                                       status="error"))  # fmt: skip
        # Stored for each reader's language (apps.core.languages).
        assert set(failed.error_translations) == {"en", "zh-hans"}
        resets = zoned(L.resets_at(L.today()))
        assert failed.error_translations["en"] == (
            f"The workspace's 1 API call this month is used up. More from {resets}."  # one, and maybe staff's override
        )
        assert failed.error_translations["zh-hans"] == f"本工作区本月的 1 次 API 调用已用完。{resets} 起可继续调用。"

    def test_paid_plans_run_into_overage_until_the_spending_cap(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, api_calls_per_month_override=2)  # pro: ¥10 per 1,000 calls, 1 fen a call
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        capped = admin.put("/api/quota/spending-cap", {"spending_cap_fen": 2}, content_type="application/json")
        assert capped.status_code == 200
        assert capped.json() == {"spending_cap_fen": 2}
        client = key_client(tenant_alpha)
        for _ in range(4):
            assert v1(client).status_code == 200  # 2 in the quota, 2 fen of overage
        refused = v1(client)
        assert refused.status_code == 402
        details = refused.json()["error"]["details"]
        assert details["quota"] == "spending_cap"
        # Calls, as for the quota (2 in the quota and 2 the cap pays for), and the cap's own money, in fen.
        assert (details["limit"], details["spending_cap_fen"], details["overage_fen"]) == (4, 2, 2), details
        calls = admin.get("/api/quota").json()["quotas"][0]
        assert (calls["used"], calls["overage"], calls["overage_fen"], calls["spending_cap_fen"]) == (4, 2, 2, 2)
        admin.put("/api/quota/spending-cap", {"spending_cap_fen": None}, content_type="application/json")
        assert v1(client).status_code == 200  # no cap: overage goes on

    @pytest.mark.parametrize("cap_fen", [0, 1])
    def test_a_cap_that_pays_for_no_call_is_named(self, tenant_alpha: TenantFixture, cap_fen: int) -> None:
        """A cap below one call's price said "Your plan's 2 API calls this month are used up", quota api_calls,
        though the plan bills overage and the cap is what the admin must raise."""
        limits(tenant_alpha, plan="basic", api_calls_per_month_override=2)  # ¥15 per 1,000 calls: 1.5 fen a call
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        admin.put("/api/quota/spending-cap", {"spending_cap_fen": cap_fen}, content_type="application/json")
        client = key_client(tenant_alpha)
        assert [v1(client).status_code for _ in range(2)] == [200, 200]
        refused = v1(client)
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert (error["details"]["quota"], error["details"]["spending_cap_fen"]) == ("spending_cap", cap_fen)
        assert error["message"].startswith("本月超额费用已达到您设置的支出上限"), error["message"]
        assert zoned(L.resets_at(L.today())) in error["message"]  # when calls resume without a higher cap

    def test_the_refusal_groups_the_quota_and_names_it_the_workspaces(self, tenant_alpha: TenantFixture) -> None:
        """It said "Your plan's 1500 API calls" of a staff override, ungrouped."""
        limits(tenant_alpha, plan="free", api_calls_per_month_override=1500)
        get_redis_connection("default").hset(month_key(tenant_alpha.tenant.schema_name, L.today()), "calls", 1500)
        refused = v1(tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, Role.USER))))
        assert refused.status_code == 402
        message = refused.json()["error"]["message"]
        assert message.startswith("The workspace's 1,500 API calls this month are used up. More from "), message

    def test_the_storage_refusal_groups_its_megabytes_in_both_languages(self, tenant_alpha: TenantFixture) -> None:
        """It said "Your plan's 10240 MB of storage", ungrouped, where the call quota's says "1,500"."""
        limits(tenant_alpha, plan="free", storage_mb_override=10240)
        get_redis_connection("default").set(storage_key(tenant_alpha.tenant.schema_name), 10240 * L.MB)
        said = {}
        for language in ("en", "zh-hans"):
            client = tenant_alpha.client(
                HTTP_ACCEPT_LANGUAGE=language, **bearer(api_key_secret(tenant_alpha, Role.USER))
            )
            refused = v1(client)
            assert refused.status_code == 402
            said[language] = refused.json()["error"]["message"]
        assert said["en"].startswith("The workspace's 10,240 MB of storage is used up."), said["en"]
        assert "10,240 MB" in said["zh-hans"], said["zh-hans"]

    @pytest.mark.parametrize("quota", ["users", "mcp_services"])
    def test_the_user_and_service_refusals_group_the_limit(self, tenant_alpha: TenantFixture, quota: str) -> None:
        """They said "Your plan allows 1500 users" of a staff override, ungrouped."""
        from django.db import transaction
        from django.utils import translation

        from apps.accounts import services as accounts
        from apps.core.exceptions import QuotaExceeded
        from apps.mcp import services as mcp

        limits(tenant_alpha, plan="free", max_users_override=1500, max_mcp_services_override=1500)
        check = accounts._check_user_quota if quota == "users" else mcp._check_service_quota
        schema = tenant_alpha.tenant.schema_name
        with (
            schema_context(schema),
            translation.override("en"),
            transaction.atomic(),
            pytest.raises(QuotaExceeded) as refused,
        ):
            check(adding=2000)
        assert refused.value.message.startswith("The workspace allows 1,500 "), refused.value.message

    def test_enterprise_is_never_blocked(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, plan="enterprise")
        get_redis_connection("default").hset(month_key(tenant_alpha.tenant.schema_name, L.today()), "calls", 10**9)
        assert v1(key_client(tenant_alpha)).status_code == 200

    def test_staff_overrides_replace_the_plans_limits(self, tenant_alpha: TenantFixture) -> None:
        overrides = {"api_calls_per_month_override": 5000, "max_users_override": 3, "storage_mb_override": 7,
                     "max_mcp_services_override": 2, "rate_limit_per_minute_override": 9}  # fmt: skip
        tenant = limits(tenant_alpha, plan="free", **overrides)
        got = L.limits_for(tenant)
        assert (got.api_calls, got.users, got.storage_bytes, got.mcp_services, got.rate_per_minute) == (
            5000, 3, 7 * L.MB, 2, 9,
        )  # fmt: skip
        assert got.calls_stop_at == 5000  # still a free plan: a hard stop

    def test_storage_full_on_a_hard_stop_plan_refuses_writes_that_add_data(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, plan="free")
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        get_redis_connection("default").set(storage_key(tenant_alpha.tenant.schema_name), 100 * L.MB)
        for response in (
            client.post(f"/api/conversations/{conversation['id']}/messages", {"content": "Hi"},
                        content_type="application/json"),
            client.post("/api/conversations", {}, content_type="application/json"),
        ):  # fmt: skip
            assert response.status_code == 402
            assert response.json()["error"]["details"]["quota"] == "storage"

    def test_storage_is_the_schemas_tables_plus_its_files(
        self, tenant_alpha: TenantFixture, settings: Any, tmp_path: Any
    ) -> None:
        settings.MEDIA_ROOT = tmp_path
        schema = tenant_alpha.tenant.schema_name
        files = tmp_path / "tenants" / schema
        files.mkdir(parents=True)
        (files / "export.zip").write_bytes(b"x" * 1_500_000)
        tenant = limits(tenant_alpha, plan="free", storage_mb_override=1)

        def tables_size() -> int:
            with default_connection.cursor() as cursor:
                cursor.execute(
                    "SELECT sum(pg_total_relation_size(format('%%I.%%I', schemaname, tablename)::regclass)) "
                    "FROM pg_tables WHERE schemaname = %s",
                    [schema],
                )
                return int(cursor.fetchone()[0])

        with schema_context(schema):
            # The tables' size before and after the measurement: what it writes (its usage_stats row, the
            # alerts) may add a table's first pages after it measured, and autovacuum may truncate a table's
            # empty end pages at any moment (other tests' committed rows come and go). The measured tables
            # lie between the two.
            before = tables_size()
            size = storage_measure(tenant=tenant)
            after = tables_size()
            assert min(before, after) <= size - 1_500_000 <= max(before, after)
            assert UsageStat.objects.get(user=None, date=L.today()).storage_bytes == size
            assert sorted(QuotaAlert.objects.filter(quota="storage").values_list("threshold", flat=True)) == [
                80, 90, 100,
            ]  # fmt: skip
        assert int(get_redis_connection("default").get(storage_key(schema))) == size


def test_a_lower_storage_limit_alerts_at_the_next_measurement(
    tenant_alpha: TenantFixture, settings: Any, tmp_path: Any
) -> None:
    """Staff lower the limit below what is stored: no growth crosses a threshold, the measurement still alerts."""
    settings.MEDIA_ROOT = tmp_path
    files = tmp_path / "tenants" / tenant_alpha.tenant.schema_name
    files.mkdir(parents=True)
    (files / "export.zip").write_bytes(b"x" * 1_500_000)
    tenant = limits(tenant_alpha, plan="free", storage_mb_override=100)
    with schema_context(tenant.schema_name):
        storage_measure(tenant=tenant)
        assert not QuotaAlert.objects.exists()
        tenant = limits(tenant_alpha, storage_mb_override=1)  # 1.5 MB of files alone
        storage_measure(tenant=tenant)
        assert sorted(QuotaAlert.objects.values_list("threshold", flat=True)) == [80, 90, 100]
        storage_measure(tenant=tenant)
        assert QuotaAlert.objects.count() == 3  # each once a month


def test_a_large_write_queues_a_storage_measurement_once_a_minute(
    tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.usage import services
    from apps.usage.services import LARGE_WRITE_BYTES, storage_changed

    services._written.clear()  # what earlier tests wrote in this process
    with schema_context(tenant_alpha.tenant.schema_name), django_capture_on_commit_callbacks() as callbacks:
        assert storage_changed(bytes_written=LARGE_WRITE_BYTES) is True
        assert storage_changed(bytes_written=10 * LARGE_WRITE_BYTES) is False  # one is already coming
    assert len(callbacks) == 1


def test_small_writes_add_up_to_a_large_one(
    tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
) -> None:
    """A chat's turns write a few kB each: together they are measured as one large write would be."""
    from apps.usage import services
    from apps.usage.services import LARGE_WRITE_BYTES, storage_changed

    services._written.clear()
    eighth = LARGE_WRITE_BYTES // 8
    with schema_context(tenant_alpha.tenant.schema_name), django_capture_on_commit_callbacks() as callbacks:
        queued = [storage_changed(bytes_written=eighth) for _ in range(8)]
    assert queued == [False] * 7 + [True]
    assert len(callbacks) == 1
    with schema_context("t_beta"):
        assert storage_changed(bytes_written=eighth) is False  # each schema counts its own
    assert services._written == {"t_beta": eighth}


def test_a_members_questions_count_as_writes_as_the_replies_do(tenant_alpha: TenantFixture) -> None:
    """Only the replies and tool results were counted: sixty questions of 8,000 characters took a free workspace
    from 0.9 to 1.9 MB, past its 1 MB, unmeasured until the periodic measurement."""
    from apps.chat.models import Conversation
    from apps.chat.services import _store_user_message
    from apps.usage import services

    services._written.clear()
    with schema_context(tenant_alpha.tenant.schema_name):
        conversation = Conversation.objects.create(user=admin_of(tenant_alpha))
        _store_user_message(conversation, "问" * 1000)
        assert services._written == {tenant_alpha.tenant.schema_name: 3000}  # its bytes, as UTF-8


# --- Alerts -----------------------------------------------------------------------------


def chinese_admin(tenant: TenantFixture) -> Any:
    """Another admin of ``tenant``, who reads HydroNet in Chinese."""
    chinese = make_member(tenant, Role.ADMIN)
    with schema_context(tenant.tenant.schema_name):
        User.objects.filter(pk=chinese.pk).update(language="zh-hans")
    return chinese


class TestAlerts:
    def test_each_threshold_fires_once_per_period(
        self, tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
    ) -> None:
        limits(tenant_alpha, api_calls_per_month_override=10)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            with django_capture_on_commit_callbacks() as callbacks:
                for _ in range(12):
                    meter.record(meter.charge())
                forget_counters()  # a rebuild must not fire them again
                meter.record(meter.charge())
            alerts = list(QuotaAlert.objects.order_by("threshold").values_list("quota", "threshold", "used"))
        assert alerts == [("api_calls", 80, 8), ("api_calls", 90, 9), ("api_calls", 100, 10)]
        assert len([c for c in callbacks if "_queue_alert_email" in c.__qualname__]) == 3  # one email each

    def test_an_alert_rolled_back_is_not_logged(self, tenant_alpha: TenantFixture, caplog: Any) -> None:
        """A member refused after the quota check (its email taken) takes its alert back: no log line says it fired."""
        from django.db import transaction

        from apps.usage.services import quota_alerts_raise

        def refused() -> None:
            with transaction.atomic():
                quota_alerts_raise(quota="users", limit=5, used=4, thresholds=[80], day=L.today())
                raise RuntimeError("the member's email is taken")

        with schema_context(tenant_alpha.tenant.schema_name), caplog.at_level("INFO", logger="apps.usage.services"):
            with pytest.raises(RuntimeError):
                refused()
            assert not QuotaAlert.objects.exists()
        assert "crossed" not in caplog.text

    def test_a_refused_model_gives_its_call_back_before_any_alert(self, tenant_alpha: TenantFixture) -> None:
        """The call is charged before the model can be checked (one round trip): a refusal undoes it whole."""
        limits(tenant_alpha, api_calls_per_month_override=10)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            for _ in range(7):
                meter.record(meter.charge())
        client = key_client(tenant_alpha)
        body = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hello"}]}
        refused = client.post("/v1/chat/completions", body, content_type="application/json")
        assert refused.status_code == 400, refused.content
        assert counters(tenant_alpha)["calls"] == 7
        assert with_schema(tenant_alpha, QuotaAlert.objects.count) == 0
        assert v1(client).status_code == 200
        alerts = with_schema(tenant_alpha, lambda: list(QuotaAlert.objects.values_list("threshold", "used")))
        assert alerts == [(80, 8)]

    def test_a_limit_lowered_below_the_use_alerts(
        self, tenant_alpha: TenantFixture, monkeypatch: Any, django_capture_on_commit_callbacks: Any
    ) -> None:
        """Staff move a workspace to the free plan (1,000 calls, 1 member) after 1,200 calls, with 2 members:
        every call and member is now refused before the check that would alert, so the change itself does."""
        from apps.plans.models import Plan
        from apps.tenants.services import tenant_update
        from apps.usage.tasks import alerts_after_limits_lowered

        make_member(tenant_alpha, Role.USER)
        tenant = limits(tenant_alpha, plan="pro")
        get_redis_connection("default").hset(month_key(tenant.schema_name, L.today()), "calls", 1200)
        queued: list[tuple[Any, Any]] = []

        def queue(args: list[Any], headers: dict[str, str], kwargs: dict[str, Any]) -> None:
            assert kwargs == {"restate": []}  # free stops at lower limits: their alerts are new
            queued.append((args, headers))

        monkeypatch.setattr(alerts_after_limits_lowered, "apply_async", queue)
        with django_capture_on_commit_callbacks(execute=True):
            tenant_update(tenant=tenant, actor=TEST_ACTOR, plan=Plan.objects.get(code="free"))
        ((lowered,), headers) = queued[0]
        assert sorted(lowered) == ["api_calls", "mcp_services", "storage", "users"]  # free is lower in each
        assert headers == {"_schema_name": tenant.schema_name}
        with schema_context(tenant.schema_name):
            fired = alerts_after_limits_lowered.apply(args=[lowered]).get()
            assert fired["api_calls"] == [80, 90, 100]
            assert fired["users"] == [80, 90, 100]
            assert fired["storage"] == []  # still below
            assert fired["mcp_services"] == []
            assert alerts_after_limits_lowered.apply(args=[lowered]).get()["api_calls"] == []  # once a month

        queued.clear()
        with django_capture_on_commit_callbacks(execute=True):  # a higher limit: nothing to tell
            tenant_update(tenant=tenant, actor=TEST_ACTOR, overrides={"api_calls_per_month_override": 5000})
        assert queued == []

    def test_a_move_to_the_free_plan_mails_each_admin_once_for_each_quota_it_is_past(
        self, tenant_alpha: TenantFixture, monkeypatch: Any, django_capture_on_commit_callbacks: Any
    ) -> None:
        """Past its calls and members on the free plan: one email to each admin for each of the two quotas (the 100 %,
        not also 80 and 90), none to the other members, and none again when the month's flush or a move back and
        forth catches up."""
        from apps.plans.models import Plan
        from apps.tenants.services import tenant_update
        from apps.usage.tasks import alerts_after_limits_lowered

        def run(task: Any) -> Callable[..., None]:  # as a worker would, in the schema the header names
            def apply_async(args: list[Any], headers: dict[str, str], **_options: Any) -> None:
                with schema_context(headers["_schema_name"]), django_capture_on_commit_callbacks(execute=True):
                    task.apply(args=args).get()

            return apply_async

        monkeypatch.setattr(alerts_after_limits_lowered, "apply_async", run(alerts_after_limits_lowered))
        monkeypatch.setattr(send_quota_alert_email, "apply_async", run(send_quota_alert_email))
        second_admin = make_member(tenant_alpha, Role.ADMIN)
        make_member(tenant_alpha, Role.USER)
        limits(tenant_alpha, plan="pro")
        get_redis_connection("default").hset(month_key(tenant_alpha.tenant.schema_name, L.today()), "calls", 1200)
        for plan in ("free", "pro", "free"):  # moved down, back up, and down again within the month
            with django_capture_on_commit_callbacks(execute=True):
                tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
                tenant_update(tenant=tenant, actor=TEST_ACTOR, plan=Plan.objects.get(code=plan))
        with schema_context(tenant_alpha.tenant.schema_name), django_capture_on_commit_callbacks(execute=True):
            calls_alerts_catch_up(tenant=Tenant.objects.get(pk=tenant_alpha.tenant.pk))  # the next flush
        recipients = [sorted(message.to) for message in mail.outbox]
        assert recipients == [sorted([tenant_alpha.admin_email, second_admin.email])] * 2, recipients
        bodies = " ".join(str(message.body) for message in mail.outbox)
        assert "100%" in bodies
        assert "80%" not in bodies

    def test_a_plan_changed_within_the_month_alerts_against_its_new_limit(
        self, tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
    ) -> None:
        """A free workspace stopped at its quota moves up to a paid plan: when the new quota is used up too, the
        admins are told that calls are now billed as overage. The free plan's 100 % row swallowed that alert."""
        limits(tenant_alpha, plan="free", api_calls_per_month_override=10)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            for _ in range(10):
                meter.record(meter.charge())
        limits(tenant_alpha, plan="pro", api_calls_per_month_override=20)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            with django_capture_on_commit_callbacks() as callbacks:
                for _ in range(6):
                    meter.record(meter.charge())
                # The free plan's 100 % is higher than the new plan's 80 %, and says nothing of it.
                eighty = QuotaAlert.objects.get(limit=20, threshold=80)
                assert send_quota_alert_email.apply(args=[eighty.pk, "en"]).get() == [tenant_alpha.admin_email]
                for _ in range(4):
                    meter.record(meter.charge())
            assert len([c for c in callbacks if "_queue_alert_email" in c.__qualname__]) == 3
            alerts = list(QuotaAlert.objects.order_by("limit", "threshold").values_list("limit", "threshold", "used"))
            assert alerts == [(10, 80, 8), (10, 90, 9), (10, 100, 10), (20, 80, 16), (20, 90, 18), (20, 100, 20)]
            hundred = QuotaAlert.objects.get(limit=20, threshold=100)
            assert send_quota_alert_email.apply(args=[hundred.pk, "en"]).get() == [tenant_alpha.admin_email]
        assert "has used 16 of its 20 API calls: 80% of the plan." in mail.outbox[0].body
        assert "has used 20 of its 20 API calls: 100% of the plan." in mail.outbox[1].body
        assert "Further calls are billed as overage." in mail.outbox[1].body

    def test_a_limit_lowered_after_its_thresholds_fired_alerts_again(self, tenant_alpha: TenantFixture) -> None:
        """Staff move a workspace past 100 % of its paid quota to the free plan: calls now stop, and the admins are
        told so, though the month's 80, 90 and 100 % fired before (against the paid limit)."""
        from apps.plans.models import Plan
        from apps.tenants.services import tenant_update
        from apps.usage.tasks import alerts_after_limits_lowered

        tenant = limits(tenant_alpha, plan="pro", api_calls_per_month_override=10)
        with schema_context(tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            for _ in range(12):
                meter.record(meter.charge())
        tenant = tenant_update(tenant=tenant, actor=TEST_ACTOR, plan=Plan.objects.get(code="free"),
                               overrides={"api_calls_per_month_override": 5})  # fmt: skip
        with schema_context(tenant.schema_name):
            assert alerts_after_limits_lowered.apply(args=[["api_calls"]]).get()["api_calls"] == [80, 90, 100]
            assert alerts_after_limits_lowered.apply(args=[["api_calls"]]).get()["api_calls"] == []  # once
            alert = QuotaAlert.objects.get(limit=5, threshold=100)
            assert send_quota_alert_email.apply(args=[alert.pk, "en"]).get() == [tenant_alpha.admin_email]
        assert "AI calls are stopped until the quota resets on " in mail.outbox[0].body

    def test_reaching_the_spending_cap_tells_the_admins_once_for_each_cap(
        self, tenant_alpha: TenantFixture, django_capture_on_commit_callbacks: Any
    ) -> None:
        """Calls past the quota stop at the cap (402 spending_cap), and the admins heard nothing: the 100 % email
        had said calls would go on as overage."""
        from apps.core.exceptions import QuotaExceeded
        from apps.usage.models import SPENDING_CAP
        from apps.usage.selectors import alerts_standing

        limits(tenant_alpha, api_calls_per_month_override=2, spending_cap_fen=2)  # pro: 1 fen a call past the quota
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            with django_capture_on_commit_callbacks() as callbacks:
                for _ in range(4):
                    meter.record(meter.charge())
                with pytest.raises(QuotaExceeded):
                    meter.charge()
            assert len([c for c in callbacks if "_queue_alert_email" in c.__qualname__]) == 2  # the quota's, the cap's
            cap = QuotaAlert.objects.get(quota=SPENDING_CAP)
            assert (cap.threshold, cap.limit, cap.used) == (100, 2, 2)  # the cap and the overage, in fen
            # The banner shows a reached cap with the API calls' 100 % (apps.core.context_processors), once.
            standing = alerts_standing(Tenant.objects.get(pk=tenant_alpha.tenant.pk))
            assert [(item.alert.quota, item.alert.threshold) for item in standing] == [("api_calls", 100)]
            assert send_quota_alert_email.apply(args=[cap.pk, "en"]).get() == [tenant_alpha.admin_email]
        (message,) = mail.outbox
        assert message.subject == "Alpha Water: the spending cap is reached"
        assert message.body.startswith(
            "Alpha Water has reached its monthly spending cap of ¥0.02: this month's overage comes to ¥0.02.\n\n"
            "AI calls are stopped until an admin raises the cap or the quota resets on "
        )

        limits(tenant_alpha, spending_cap_fen=3)  # raised: one more call, then the new cap stops them again
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            meter.record(meter.charge())
            caps = QuotaAlert.objects.filter(quota=SPENDING_CAP)
            assert sorted(caps.values_list("limit", "used")) == [(2, 2), (3, 3)]
            newest = QuotaAlert.objects.get(quota=SPENDING_CAP, limit=3)
            limits(tenant_alpha, spending_cap_fen=10)  # raised again before the email went: calls go on, none sent
            assert send_quota_alert_email.apply(args=[newest.pk, "en"]).get() == []

    def test_the_100_percent_email_of_a_month_already_past_the_cap_says_calls_stop(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """Staff raise the quota to below the month's calls, under a cap they are past: the flush's catch-up raises
        the new limit's 100 %, whose email said calls go on as overage until the cap, of calls the cap stopped."""
        limits(tenant_alpha, api_calls_per_month_override=400_000, spending_cap_fen=300)  # stop at 400,300
        with schema_context(tenant_alpha.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=100,
                                              limit=400_000, used=400_300)  # fmt: skip
            send_quota_alert_email.apply(args=[alert.pk, "en"]).get()
        (message,) = mail.outbox
        assert "AI calls are stopped until an admin raises the cap or the quota resets on " in message.body
        assert "billed as overage" not in message.body

    def test_calls_that_reach_the_cap_with_the_flush_raise_its_alert(self, tenant_alpha: TenantFixture) -> None:
        """Calls in flight when Redis lost its counters reach them with the flush, past the cap, without a charge."""
        from apps.usage.models import SPENDING_CAP
        from apps.usage.services import calls_alerts_catch_up

        tenant = limits(tenant_alpha, api_calls_per_month_override=2, spending_cap_fen=5)
        with schema_context(tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            meter.record(meter.charge())
            get_redis_connection("default").hset(month_key(tenant.schema_name, L.today()), "calls", 8)
            assert calls_alerts_catch_up(tenant=tenant) == [80, 90, 100]
            assert list(QuotaAlert.objects.filter(quota=SPENDING_CAP).values_list("limit", "used")) == [(5, 6)]

    def test_a_cap_that_pays_for_no_call_has_only_the_quotas_alert(self, tenant_alpha: TenantFixture) -> None:
        """A cap of 0 stops calls at the quota itself: the 100 % email says so, and the cap adds nothing."""
        from apps.usage.models import SPENDING_CAP

        limits(tenant_alpha, api_calls_per_month_override=2, spending_cap_fen=0)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter = Meter.for_actor(Actor(user=admin_of(tenant_alpha)))
            for _ in range(2):
                meter.record(meter.charge())
            assert not QuotaAlert.objects.filter(quota=SPENDING_CAP).exists()
            assert QuotaAlert.objects.filter(quota="api_calls", threshold=100).exists()

    def test_a_limit_of_0_is_reached_at_once(self) -> None:
        assert L.reached(0, 0) == [80, 90, 100]
        assert L.reached(None, 10**9) == []
        assert L.crossed(0, 0, 1) == []  # nothing crosses it: its alerts come when it is set

    def test_the_email_goes_to_the_admins_once(self, tenant_alpha: TenantFixture) -> None:
        make_member(tenant_alpha, Role.USER)
        with schema_context(tenant_alpha.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=90,
                                              limit=100, used=90)  # fmt: skip
            assert send_quota_alert_email.apply(args=[alert.pk, "en"]).get() == [tenant_alpha.admin_email]
            assert send_quota_alert_email.apply(args=[alert.pk, "en"]).get() == []  # a retry sends nothing
        (message,) = mail.outbox
        assert message.to == [tenant_alpha.admin_email]
        assert "90%" in message.subject
        assert "API calls" in message.subject
        assert "/usage/" in message.body

    def test_no_email_for_a_threshold_a_higher_one_passed_before_it_was_sent(self, tenant_alpha: TenantFixture) -> None:
        """Two requests cross 90 and 100 % together: the 90 % email, sent last, said "Nothing stops yet." after the
        100 % one said calls had stopped."""
        with schema_context(tenant_alpha.tenant.schema_name):
            period = L.period_start(L.today())
            ninety = QuotaAlert.objects.create(quota="api_calls", period=period, threshold=90, limit=10, used=9)
            hundred = QuotaAlert.objects.create(quota="api_calls", period=period, threshold=100, limit=10, used=10)
            other = QuotaAlert.objects.create(quota="users", period=period, threshold=80, limit=5, used=4)
            assert send_quota_alert_email.apply(args=[hundred.pk, "en"]).get() == [tenant_alpha.admin_email]
            assert send_quota_alert_email.apply(args=[ninety.pk, "en"]).get() == []
            assert send_quota_alert_email.apply(args=[other.pk, "en"]).get() == [tenant_alpha.admin_email]
        assert ["100%" in message.subject for message in mail.outbox] == [True, False]

    def test_each_admin_reads_the_email_in_their_own_language(self, tenant_alpha: TenantFixture) -> None:
        chinese = chinese_admin(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=90,
                                              limit=100, used=90)  # fmt: skip
            sent = send_quota_alert_email.apply(args=[alert.pk, "en"]).get()  # "en": the page's, for who has none
        assert sorted(sent) == sorted([tenant_alpha.admin_email, chinese.email])
        by_recipient = {tuple(message.to): message for message in mail.outbox}
        assert set(by_recipient) == {(tenant_alpha.admin_email,), (chinese.email,)}
        assert "API calls" in by_recipient[(tenant_alpha.admin_email,)].subject
        assert "API 调用" in by_recipient[(chinese.email,)].subject, by_recipient[(chinese.email,)].subject

    def test_users_and_mcp_services_alert_too(self, tenant_alpha: TenantFixture, demo_mcp_url: str) -> None:
        from apps.accounts.services import user_create
        from apps.mcp.services import mcp_service_create

        limits(tenant_alpha, max_users_override=5, max_mcp_services_override=1)
        actor = Actor(user=admin_of(tenant_alpha))
        with schema_context(tenant_alpha.tenant.schema_name):
            for n in range(4):
                user_create(actor=actor, email=f"m{n}@alpha.example.com", password=None, role=Role.USER)
            mcp_service_create(actor=actor, name="Hydrology", url=demo_mcp_url)
            found = sorted(QuotaAlert.objects.values_list("quota", "threshold"))
        assert found == [("mcp_services", 80), ("mcp_services", 90), ("mcp_services", 100),
                         ("users", 80), ("users", 90), ("users", 100)]  # fmt: skip

    def test_thresholds_crossed_at_once_make_one_email_for_the_highest(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str, django_capture_on_commit_callbacks: Any
    ) -> None:
        """The first service on a limit of one crosses 80, 90 and 100 %: an 80 % email would say "nothing stops"."""
        from apps.mcp.services import mcp_service_create

        limits(tenant_alpha, max_mcp_services_override=1)
        with schema_context(tenant_alpha.tenant.schema_name):
            with django_capture_on_commit_callbacks() as callbacks:
                mcp_service_create(actor=Actor(user=admin_of(tenant_alpha)), name="Hydrology", url=demo_mcp_url)
            assert len([c for c in callbacks if "_queue_alert_email" in c.__qualname__]) == 1
            highest = QuotaAlert.objects.get(quota="mcp_services", threshold=100)
            assert send_quota_alert_email.apply(args=[highest.pk, "en"]).get() == [tenant_alpha.admin_email]
        (message,) = mail.outbox
        assert "has used 1 of its 1 MCP services: 100% of the plan." in message.body
        assert "No more MCP services can be added or enabled until some are removed or the plan changes." in (
            message.body
        )

    @pytest.mark.parametrize(
        ("quota", "plan", "cap", "says"),
        [("api_calls", "free", None, "AI calls are stopped until the quota resets on "),
         ("api_calls", "pro", None, "Further calls are billed as overage.\n"),
         ("api_calls", "pro", 500, "until this month's overage reaches the spending cap of ¥5.00."),
         ("storage", "free", None, "AI calls and new data are stopped until space is freed"),
         ("storage", "pro", None, "Further storage is billed as overage."),
         ("storage", "enterprise", None, "Nothing stops: the plan goes on past its storage quota."),
         ("users", "pro", None, "has used 100 of its 100 members: 100% of the plan.\n\nNo more members can be added "
                                "or invited")],
    )  # fmt: skip
    def test_the_100_percent_email_says_what_happens_on_the_workspaces_plan(
        self, tenant_alpha: TenantFixture, quota: str, plan: str, cap: int | None, says: str
    ) -> None:
        limits(tenant_alpha, plan=plan, spending_cap_fen=cap)
        with schema_context(tenant_alpha.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota=quota, period=L.period_start(L.today()), threshold=100,
                                              limit=100, used=100)  # fmt: skip
            send_quota_alert_email.apply(args=[alert.pk, "en"]).get()
        (message,) = mail.outbox
        assert says in message.body
        assert "On the free plan" not in message.body  # the workspace's own plan, not both

    def test_large_numbers_in_the_email_are_grouped_by_three_as_on_the_pages(self, tenant_alpha: TenantFixture) -> None:
        """The email said "已用 400286（配额 100000）" where the usage page says 400,286 of 100,000."""
        chinese = chinese_admin(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=100,
                                              limit=100_000, used=400_286)  # fmt: skip
            send_quota_alert_email.apply(args=[alert.pk, "en"]).get()
        by_recipient = {message.to[0]: message.body for message in mail.outbox}
        assert "has used 400,286 of its 100,000 API calls: 100% of the plan." in by_recipient[tenant_alpha.admin_email]
        assert "API 调用已用 400,286（配额 100,000）" in by_recipient[chinese.email], by_recipient[chinese.email]

    def test_yuan_in_the_emails_are_grouped_by_three_as_on_the_usage_page(self, tenant_alpha: TenantFixture) -> None:
        """The cap's email said "¥1000000" where the usage page says ¥1,000,000.00."""
        from apps.usage.models import SPENDING_CAP

        chinese_admin(tenant_alpha)  # the cap in Chinese too
        limits(tenant_alpha, plan="pro", spending_cap_fen=100_000_000)
        with schema_context(tenant_alpha.tenant.schema_name):
            period = L.period_start(L.today())
            cap = QuotaAlert.objects.create(quota=SPENDING_CAP, period=period, threshold=100, limit=100_000_000,
                                            used=123_456_750)  # fmt: skip
            calls = QuotaAlert.objects.create(quota="api_calls", period=period, threshold=100, limit=100, used=100)
            send_quota_alert_email.apply(args=[cap.pk, "en"]).get()
            send_quota_alert_email.apply(args=[calls.pk, "en"]).get()
        bodies = [message.body for message in mail.outbox]
        english = [body for body in bodies if "Alpha Water has" in body]
        assert "spending cap of ¥1,000,000.00: this month's overage comes to ¥1,234,567.50." in english[0]
        assert "until this month's overage reaches the spending cap of ¥1,000,000.00." in english[1]
        assert sum("1,000,000" in body for body in bodies) == 4, bodies  # and in Chinese
        assert not any("1000000" in body for body in bodies)

    def test_emails_are_plain_text_not_html_escaped(self) -> None:
        from apps.tenants.services import tenant_provision

        result = tenant_provision(name="Rivers & Lakes", slug="rivers-lakes", plan="pro",
                                  admin_email="admin@rivers-lakes.example.com", admin_password="s3cret-Passw0rd!",
                                  actor=TEST_ACTOR)  # fmt: skip
        mail.outbox.clear()  # the welcome email
        with schema_context(result.tenant.schema_name):
            alert = QuotaAlert.objects.create(quota="api_calls", period=L.period_start(L.today()), threshold=80,
                                              limit=100, used=80)  # fmt: skip
            send_quota_alert_email.apply(args=[alert.pk, "en"]).get()
        (message,) = mail.outbox
        assert "Rivers & Lakes: API calls at 80% of your plan" in message.subject
        assert message.body.startswith("Rivers & Lakes has used 80 of its 100 API calls")


# --- Rate limit -------------------------------------------------------------------------


class TestRateLimit:
    def test_every_response_carries_the_headers(self, tenant_alpha: TenantFixture) -> None:
        client = member_client(tenant_alpha)
        one_window()
        first, second = client.get("/api/conversations"), client.get("/api/conversations")
        assert first["X-RateLimit-Limit"] == second["X-RateLimit-Limit"] == "1000"  # pro
        assert (int(first["X-RateLimit-Remaining"]), int(second["X-RateLimit-Remaining"])) == (999, 998)
        now = time.time()
        assert now < int(first["X-RateLimit-Reset"]) <= math.ceil(now) + 60
        # Metered endpoints too, including a request refused for bad input, which still counts.
        bad = client.post("/api/conversations/999999/messages", {"content": ""}, content_type="application/json")
        metered = v1(key_client(tenant_alpha))
        for response in (bad, metered):
            assert response["X-RateLimit-Limit"] == "1000"
        assert int(metered["X-RateLimit-Remaining"]) == 996

    def test_over_the_limit_is_429_with_retry_after(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, rate_limit_per_minute_override=3)
        client = member_client(tenant_alpha)
        one_window()
        assert [client.get("/api/conversations").status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/api/conversations")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused["Retry-After"]) <= 60
        assert refused["X-RateLimit-Remaining"] == "0"
        metered = v1(key_client(tenant_alpha))
        assert metered.status_code == 429
        assert events(tenant_alpha) == []  # a refused request makes no AI call

    def test_a_request_refused_for_its_role_counts_and_carries_the_headers(self, tenant_alpha: TenantFixture) -> None:
        limits(tenant_alpha, rate_limit_per_minute_override=4)
        viewer = member_client(tenant_alpha, Role.VIEWER)
        one_window()
        forbidden = [
            viewer.get("/api/quota"),  # needs view_stats
            viewer.post("/api/conversations", {}, content_type="application/json"),  # needs create_conversation
            v1(key_client(tenant_alpha, Role.VIEWER)),  # metered: refused before its AI call
        ]
        assert [r.status_code for r in forbidden] == [403, 403, 403]
        assert [r["X-RateLimit-Remaining"] for r in forbidden] == ["3", "2", "1"]
        assert viewer.get("/api/conversations").status_code == 200  # the fourth and last of the minute
        over = viewer.get("/api/quota")
        assert over.status_code == 429  # the limit before the role: no flooding with forbidden requests
        assert over["X-RateLimit-Remaining"] == "0"
        assert events(tenant_alpha) == []

    def test_a_metered_request_refused_before_its_ai_call_is_429_over_the_limit(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """A metered request refused before its first charge (here for its body) counts when it is answered;
        over the limit its answer is the 429 any request gets there (docs/api.md), not its 400."""
        limits(tenant_alpha, rate_limit_per_minute_override=3)
        member, key = member_client(tenant_alpha), key_client(tenant_alpha)
        one_window()
        conversation = member.post("/api/conversations", {}, content_type="application/json").json()["id"]

        def bad_v1() -> Any:
            body = {"model": "hydronet-demo", "messages": [{"role": "user", "content": "Hi"}], "temperature": 5}
            return key.post("/v1/chat/completions", body, content_type="application/json")

        def bad_turn() -> Any:
            body = {"content": QUESTION, "unknown": True}
            return member.post(f"/api/conversations/{conversation}/messages", body, content_type="application/json")

        within = [bad_v1(), bad_turn()]  # the second and third requests of the minute
        assert [(r.status_code, r.json()["error"]["code"]) for r in within] == [(400, "invalid_input")] * 2
        assert [r["X-RateLimit-Remaining"] for r in within] == ["1", "0"]
        assert all("Retry-After" not in r for r in within)
        over_v1, over_turn = bad_v1(), bad_turn()
        assert over_v1.json()["error"]["type"] == "rate_limit_error"  # /v1's errors as OpenAI's clients read them
        for over in (over_v1, over_turn):
            assert over.status_code == 429
            assert over.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(over["Retry-After"]) <= 60
            assert over["X-RateLimit-Remaining"] == "0"
        assert with_schema(tenant_alpha, lambda: Message.objects.filter(conversation_id=conversation).count()) == 0
        assert events(tenant_alpha) == []

    def test_one_tenant_at_its_limit_leaves_another_alone(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        limits(tenant_alpha, rate_limit_per_minute_override=5)
        alpha, beta = member_client(tenant_alpha), member_client(tenant_beta)
        one_window()
        flood = [alpha.get("/api/conversations").status_code for _ in range(20)]
        assert flood.count(200) == 5
        assert flood.count(429) == 15
        answers = [beta.get("/api/conversations") for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5
        assert [int(r["X-RateLimit-Remaining"]) for r in answers] == [999, 998, 997, 996, 995]


# --- The APIs ---------------------------------------------------------------------------


class TestUsageApi:
    def seed(self, tenant: TenantFixture) -> tuple[Any, Any]:
        first, second = make_member(tenant, Role.USER), make_member(tenant, Role.USER)
        with schema_context(tenant.tenant.schema_name):
            UsageStat.objects.create(user_id=first.pk, date=dt.date(2026, 11, 2), api_calls=5, tokens_used=500)
            UsageStat.objects.create(user_id=second.pk, date=dt.date(2026, 11, 2), api_calls=1, tokens_used=100)
            UsageStat.objects.create(user_id=None, date=dt.date(2026, 11, 3), storage_bytes=4096)
            UsageEvent.objects.create(user_id=first.pk, kind="model", tokens=50, day=dt.date(2026, 11, 3))
        return first, second

    def get(self, client: Client, **params: str) -> Any:
        return client.get("/api/usage", params)

    def test_by_day_and_by_user_for_an_admin(self, tenant_alpha: TenantFixture) -> None:
        first, second = self.seed(tenant_alpha)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        by_day = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-04"}).json()
        assert by_day["scope"] == "tenant"
        assert [(d["date"], d["api_calls"], d["tokens"]) for d in by_day["series"]] == [
            ("2026-11-01", 0, 0), ("2026-11-02", 6, 600), ("2026-11-03", 1, 50), ("2026-11-04", 0, 0),
        ]  # fmt: skip
        assert by_day["series"][2]["storage_bytes"] == 4096
        assert by_day["totals"] == {"api_calls": 7, "tokens": 650}
        by_user = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-04", "group_by": "user"}).json()
        assert [(u["email"], u["api_calls"], u["tokens"]) for u in by_user["series"]] == [
            (first.email, 6, 550), (second.email, 1, 100),
        ]  # fmt: skip
        one = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-04", "user": str(second.pk)}).json()
        assert one["totals"] == {"api_calls": 1, "tokens": 100}

    def test_members_with_as_many_calls_come_in_the_order_of_their_ids(self, tenant_alpha: TenantFixture) -> None:
        """Ties in calls came in whatever order PostgreSQL's aggregation left them, from one request to the next;
        the page and the CSV read the same series. Then by id, the "API keys" line (no id) last."""
        members = [make_member(tenant_alpha, Role.USER) for _ in range(12)]
        with schema_context(tenant_alpha.tenant.schema_name):
            for member in reversed(members):
                UsageStat.objects.create(user_id=member.pk, date=dt.date(2026, 11, 2), api_calls=3, tokens_used=9)
                UsageEvent.objects.create(user_id=member.pk, kind="model", tokens=1, day=dt.date(2026, 11, 3))
            UsageStat.objects.create(user_id=None, date=dt.date(2026, 11, 2), api_calls=3)
            UsageStat.objects.create(user_id=members[5].pk, date=dt.date(2026, 11, 3), api_calls=4)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        body = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-04", "group_by": "user"}).json()
        ids = sorted(m.pk for m in members if m is not members[5])
        assert [u["user_id"] for u in body["series"]] == [members[5].pk, *ids, None]

    def test_a_deleted_members_usage_is_theirs_by_id(self, tenant_alpha: TenantFixture) -> None:
        """group_by=user lists a deleted member's calls as "Deleted member #id"; asking for that id was a 404."""
        from apps.accounts.services import user_delete

        _first, second = self.seed(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            user_delete(actor=Actor(user=admin_of(tenant_alpha)), user=second)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        month = {"from": "2026-11-01", "to": "2026-11-04"}
        listed = self.get(admin, **month, group_by="user").json()["series"]
        assert {(u["user_id"], u["email"]) for u in listed} >= {(second.pk, "")}
        one = self.get(admin, **month, user=str(second.pk))
        assert one.status_code == 200, one.content
        assert one.json()["totals"] == {"api_calls": 1, "tokens": 100}
        assert self.get(admin, **month, user=str(second.pk + 1000)).status_code == 404  # never a member

    def test_a_day_without_a_measurement_has_the_size_last_measured(self, tenant_alpha: TenantFixture) -> None:
        """Storage is measured every ten minutes: a day the beat was down, or today before the first, stored
        what the last measurement found, not nothing."""
        with schema_context(tenant_alpha.tenant.schema_name):
            UsageStat.objects.create(user_id=None, date=dt.date(2026, 10, 30), storage_bytes=2048)
            UsageStat.objects.create(user_id=None, date=dt.date(2026, 11, 3), storage_bytes=4096)
            UsageStat.objects.create(user_id=None, date=dt.date(2026, 11, 4), api_calls=3)  # API keys' calls only
        with time_machine.travel(dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC), tick=False):
            admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
            series = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-06"}).json()["series"]
        assert [d["storage_bytes"] for d in series] == [2048, 2048, 4096, 4096, 4096, 0]  # the 6th has not come

    def test_members_without_view_stats_see_only_their_own(self, tenant_alpha: TenantFixture) -> None:
        first, second = self.seed(tenant_alpha)
        client = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, first)["access"]))
        month = {"from": "2026-11-01", "to": "2026-11-30", "group_by": "user"}
        for asked in ({}, {"user": str(first.pk)}):  # naming oneself is the same
            body = self.get(client, **month, **asked).json()
            assert body["scope"] == "user"
            assert [(u["email"], u["api_calls"]) for u in body["series"]] == [(first.email, 6)]
        someone_else = self.get(client, **month, user=str(second.pk))  # not quietly one's own instead
        assert someone_else.status_code == 403
        assert someone_else.json()["error"]["details"] == {"permission": "view_stats"}
        viewer = make_member(tenant_alpha, Role.VIEWER)
        client = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, viewer)["access"]))
        assert self.get(client, **{"from": "2026-11-01", "to": "2026-11-30"}).json()["totals"]["api_calls"] == 0

    def test_another_tenants_usage_is_never_shown(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        self.seed(tenant_beta)
        assert v1(key_client(tenant_beta)).status_code == 200
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        body = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-30"}).json()
        assert body["totals"] == {"api_calls": 0, "tokens": 0}
        assert admin.get("/api/quota").json()["quotas"][0]["used"] == 0

    def test_by_api_key_is_the_tenants_and_needs_view_stats(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        v1(key_client(tenant_beta))  # another tenant's key: never shown
        with schema_context(tenant_alpha.tenant.schema_name):
            reports, _secret = api_key_create(actor=TEST_ACTOR, name="Reports", role=Role.USER)
            sync, _secret = api_key_create(actor=TEST_ACTOR, name="Sync", role=Role.USER)
            _idle, _secret = api_key_create(actor=TEST_ACTOR, name="Idle", role=Role.USER)
            ApiKeyUsage.objects.create(api_key=reports, date=dt.date(2026, 11, 2), api_calls=4, tokens_used=400)
            ApiKeyUsage.objects.create(api_key=sync, date=dt.date(2026, 11, 3), api_calls=9, tokens_used=90)
            ApiKeyUsage.objects.create(api_key=sync, date=dt.date(2026, 10, 31), api_calls=100, tokens_used=1)
            UsageEvent.objects.create(api_key=reports, kind="model", tokens=40, day=dt.date(2026, 11, 3))  # unflushed
            api_key_revoke(actor=TEST_ACTOR, api_key=sync)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        body = self.get(admin, **{"from": "2026-11-01", "to": "2026-11-30", "group_by": "api_key"}).json()
        assert body["scope"] == "tenant"
        assert [(k["name"], k["prefix"], k["revoked"], k["api_calls"], k["tokens"]) for k in body["series"]] == [
            ("Sync", sync.prefix, True, 9, 90), ("Reports", reports.prefix, False, 5, 440),
        ]  # fmt: skip
        assert [k["api_key_id"] for k in body["series"]] == [sync.pk, reports.pk]
        assert body["totals"] == {"api_calls": 14, "tokens": 530}
        admin_key = tenant_alpha.client(**bearer(api_key_secret(tenant_alpha, Role.ADMIN)))  # view_stats too
        assert self.get(admin_key, **{"from": "2026-11-01", "group_by": "api_key"}).json()["totals"]["api_calls"] == 14

        both = self.get(admin, **{"group_by": "api_key", "user": str(admin_of(tenant_alpha).pk)})
        assert both.status_code == 400
        assert list(both.json()["error"]["details"]) == ["user"]
        for role in (Role.USER, Role.VIEWER):
            member = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, make_member(tenant_alpha, role))["access"]))
            refused = self.get(member, group_by="api_key")
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "permission_denied"

    @pytest.mark.parametrize(
        "params",
        [
            {"from": "2026-13-01"},
            {"from": "yesterday"},
            {"from": "2026-11-05", "to": "2026-11-01"},
            {"from": "2024-01-01", "to": "2026-11-01"},
            {"group_by": "week"},
            {"user": "abc"},
            {"colour": "blue"},
            # Dates as YYYY-MM-DD only, as the message says: not the other forms date.fromisoformat takes.
            {"from": "20261101"},
            {"from": "2026-W45-1"},
            {"from": "２０２６-１１-０１"},
            {"to": "2026-11-05\n"},
        ],
    )
    def test_bad_input_is_a_400(self, tenant_alpha: TenantFixture, params: dict[str, str]) -> None:
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        response = self.get(admin, **params)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "invalid_input"

    @pytest.mark.parametrize("day", ["2026-02-30", "2026-13-01", "2026-04-31"])
    def test_a_well_formed_date_that_does_not_exist_is_named_so(self, tenant_alpha: TenantFixture, day: str) -> None:
        """It said "Date has wrong format. Use one of these formats instead: YYYY-MM-DD." of a date in that format."""
        admin = tenant_alpha.client(
            HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
        )
        response = self.get(admin, **{"from": day})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["details"] == {"from": [f"There is no such date: {day} does not exist."]}

    @pytest.mark.parametrize(
        ("path", "query", "named"),
        [("/api/usage", "from=2026-11-01&from=2026-11-02", "from"),
         ("/api/usage", "group_by=user&to=2026-11-30&group_by=day", "group_by"),
         ("/api/users", "role=admin&role=user", "role"),
         ("/api/api-keys", "page=1&page=2", "page"),
         ("/api/conversations", "page_size=5&page_size=50", "page_size")],
    )  # fmt: skip
    def test_a_parameter_given_twice_is_a_400_naming_it(
        self, tenant_alpha: TenantFixture, path: str, query: str, named: str
    ) -> None:
        """The API took the last of ``?from=a&from=b`` silently, where every other doubt about a query is a 400."""
        admin = tenant_alpha.client(
            HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
        )
        response = admin.get(f"{path}?{query}")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["details"] == {named: ["Give this parameter once."]}

    def test_the_last_days_of_the_calendar_are_an_empty_series(self, tenant_alpha: TenantFixture) -> None:
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        body = self.get(admin, **{"from": "9999-12-30", "to": "9999-12-31"}).json()
        assert [(d["date"], d["api_calls"]) for d in body["series"]] == [("9999-12-30", 0), ("9999-12-31", 0)]

    def test_quota_lists_every_quota(self, tenant_alpha: TenantFixture) -> None:
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        v1(key_client(tenant_alpha))
        body = admin.get("/api/quota").json()
        assert body["plan"] == "pro"
        got = {q["quota"]: (q["limit"], q["used"], q["remaining"]) for q in body["quotas"]}
        assert got["api_calls"] == (100_000, 1, 99_999)
        assert got["users"][0] == 20
        assert got["mcp_services"][0] == 20
        assert got["storage"][0] == 10_000 * L.MB
        assert body["quotas"][0]["resets_at"] == body["resets_at"] == L.iso(L.resets_at(L.today()))
        assert "overage" in body["quotas"][0]
        assert not {"overage", "spending_cap_fen", "hard_stop"} & set(body["quotas"][1])  # the API calls' only
        user = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, make_member(tenant_alpha, Role.USER))["access"]))
        assert user.get("/api/quota").status_code == 403

    def test_quota_percent_says_100_only_at_the_limit(self, tenant_alpha: TenantFixture) -> None:
        """9,996 of 10,000 calls read 100.0 % while calls went on, and the usage page's bar said 99 %."""
        limits(tenant_alpha, api_calls_per_month_override=10_000)
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        key = month_key(tenant_alpha.tenant.schema_name, L.today())
        for used, percent in [(9_996, 99.9), (7_999, 79.9), (8_000, 80.0), (1, 0.0), (10_000, 100.0), (12_345, 123.4)]:
            v1(key_client(tenant_alpha))  # the counters exist, then stand at ``used``
            get_redis_connection("default").hset(key, "calls", used)
            assert admin.get("/api/quota").json()["quotas"][0]["percent"] == percent, used

    @pytest.mark.parametrize("cap", [-1, "ten", 10**15, 1.5, "100", "1_000", 100.0, True])
    def test_a_bad_spending_cap_changes_nothing(self, tenant_alpha: TenantFixture, cap: Any) -> None:
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        response = admin.put("/api/quota/spending-cap", json.dumps({"spending_cap_fen": cap}),
                             content_type="application/json")  # fmt: skip
        assert response.status_code == 400, response.content
        assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).spending_cap_fen is None

    def test_the_spending_cap_is_the_billing_admins_and_audited(self, tenant_alpha: TenantFixture) -> None:
        user = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, make_member(tenant_alpha, Role.USER))["access"]))
        body = {"spending_cap_fen": 500}
        assert user.put("/api/quota/spending-cap", body, content_type="application/json").status_code == 403
        admin = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]))
        assert admin.put("/api/quota/spending-cap", body, content_type="application/json").status_code == 200
        assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).spending_cap_fen == 500
        with schema_context(tenant_alpha.tenant.schema_name):
            event = AuditEvent.objects.get(action="billing.spending_cap_set")
        assert event.metadata == {"from_fen": None, "to_fen": 500}
        assert admin.put("/api/quota/spending-cap", body, content_type="application/json").status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):  # the same cap again: nothing changed, nothing recorded
            assert AuditEvent.objects.filter(action="billing.spending_cap_set").count() == 1

    @pytest.mark.parametrize(("plan", "says"), [("free", "stops calls at its quota"), ("enterprise", "no overage")])
    def test_no_spending_cap_where_the_plan_bills_no_overage(
        self, tenant_alpha: TenantFixture, plan: str, says: str
    ) -> None:
        """The usage page offers no cap then; the API refused nothing and stored a cap that did nothing."""
        limits(tenant_alpha, plan=plan)
        admin = tenant_alpha.client(
            HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
        )
        response = admin.put("/api/quota/spending-cap", {"spending_cap_fen": 500}, content_type="application/json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "no_overage"
        assert says in error["details"]["spending_cap_fen"][0]
        assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).spending_cap_fen is None
        removed = admin.put("/api/quota/spending-cap", {"spending_cap_fen": None}, content_type="application/json")
        assert removed.status_code == 200  # removing one (set before a change of plan) is always allowed


class TestMemberDailyCalls:
    """The admins' limit on each member's AI calls a day: checked in the charge script, so no extra round trip."""

    @staticmethod
    def admin(tenant: TenantFixture) -> Client:
        return tenant.client(**bearer(jwt_pair(tenant, admin_of(tenant))["access"]))

    @staticmethod
    def set_limit(tenant: TenantFixture, calls: Any) -> Any:
        return TestMemberDailyCalls.admin(tenant).put(
            "/api/quota/member-daily-calls", json.dumps({"member_daily_calls": calls}), content_type="application/json"
        )

    @staticmethod
    def turn(client: Client) -> int:
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        return int(client.post(url, {"content": "Hi"}, content_type="application/json").status_code)

    def test_a_member_past_it_is_refused_while_others_and_api_keys_go_on(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture, fresh_counters: None
    ) -> None:
        response = self.set_limit(tenant_alpha, 2)
        assert response.status_code == 200
        assert response.json() == {"member_daily_calls": 2}
        alice, bob = member_client(tenant_alpha), member_client(tenant_alpha)
        conversation = alice.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        for _ in range(2):
            assert alice.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        stored = with_schema(tenant_alpha, Message.objects.count)
        local_days = {timezone.localdate()}  # the workspace's day as the refusal is made (16:00 UTC may pass)
        refused = alice.post(url, {"content": "Hi"}, content_type="application/json")
        local_days.add(timezone.localdate())
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        resets = L.day_resets_at(L.today())
        assert error["details"] == {"quota": "member_daily_calls", "limit": 2, "used": 2,
                                    "resets_at": L.iso(resets)}  # fmt: skip
        assert "You have made the 2 AI calls a day" in error["message"]
        # Midnight UTC, in the workspace's time zone (Asia/Shanghai), named, and on which day there.
        date = timezone.localdate(resets)
        said = {f"More from 08:00 UTC+8 {'today' if date == day else 'tomorrow'} ({date})." for day in local_days}
        assert any(each in error["message"] for each in said), error["message"]
        assert with_schema(tenant_alpha, Message.objects.count) == stored  # the refusal stored nothing
        assert self.turn(bob) == 200  # another member has calls of their own
        assert v1(key_client(tenant_alpha)).status_code == 200  # API keys (all /v1 takes) are no member's
        assert self.turn(member_client(tenant_beta)) == 200  # another workspace has no such limit
        assert counters(tenant_alpha)["calls"] == 4  # the refused calls were not taken
        assert len(events(tenant_alpha)) == 4
        assert self.admin(tenant_alpha).get("/api/quota").json()["quotas"][0]["member_daily_calls"] == 2

        assert self.set_limit(tenant_alpha, None).status_code == 200  # removed: Alice goes on
        assert self.turn(alice) == 200

    @pytest.mark.parametrize(
        ("moment", "more"),
        [  # 20:00 in China: the UTC day ends tomorrow there; 04:00 on the 1st: it ends today, and so does the month.
            (dt.datetime(2026, 12, 31, 12, tzinfo=dt.UTC), "More from 08:00 UTC+8 tomorrow (2027-01-01)."),
            (dt.datetime(2026, 12, 31, 20, tzinfo=dt.UTC), "More from 08:00 UTC+8 today (2027-01-01)."),
        ],
    )
    def test_the_refusal_says_on_which_day_calls_come_back(
        self, tenant_alpha: TenantFixture, fresh_counters: None, moment: dt.datetime, more: str
    ) -> None:
        """ "More from 08:00 UTC+8." did not say whether that was today or tomorrow where the workspace is."""
        with time_machine.travel(moment, tick=False):
            assert self.set_limit(tenant_alpha, 1).status_code == 200
            alice = member_client(tenant_alpha)
            assert self.turn(alice) == 200
            conversation = alice.post("/api/conversations", {}, content_type="application/json").json()
            refused = alice.post(f"/api/conversations/{conversation['id']}/messages", {"content": "Hi"},
                                 content_type="application/json")  # fmt: skip
            in_chinese = alice.post(f"/api/conversations/{conversation['id']}/messages", {"content": "Hi"},
                                    content_type="application/json", HTTP_ACCEPT_LANGUAGE="zh-hans")  # fmt: skip
        assert refused.status_code == 402
        message = refused.json()["error"]["message"]
        assert message.startswith("You have made the 1 AI call a day your workspace's admins allow"), message
        assert message.endswith(more)
        day = "明天" if "tomorrow" in more else "今天"
        assert in_chinese.json()["error"]["message"].endswith(f"{day}（2027-01-01）08:00 UTC+8 起可继续调用。")

    def test_tool_calls_count_and_a_turn_past_it_ends_with_an_error_event(
        self, tenant_alpha: TenantFixture, hydrology: Any, fresh_counters: None
    ) -> None:
        assert self.set_limit(tenant_alpha, 1).status_code == 200  # the model round fits, its tool call does not
        _conversation, body = streamed_question(member_client(tenant_alpha))
        assert "event: error" in body
        assert '"quota":"member_daily_calls"' in body
        assert [e.kind for e in events(tenant_alpha)] == ["model"]

    def test_exactly_the_calls_left_get_through_at_once(
        self, tenant_alpha: TenantFixture, fresh_counters: None
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from apps.core.exceptions import QuotaExceeded

        tenant = limits(tenant_alpha, member_daily_calls=5)
        member = make_member(tenant_alpha, Role.USER)
        meter = Meter(tenant=tenant, user_id=member.pk, api_key_id=None)
        with schema_context(tenant.schema_name):
            meter.release(meter.charge())  # builds the counters, so the threads only talk to Redis

        def one(_n: int) -> str:
            try:
                Meter(tenant=tenant, user_id=member.pk, api_key_id=None).charge()
            except QuotaExceeded as exc:
                return str(exc.details["quota"])
            return "through"

        with ThreadPoolExecutor(12) as pool:
            assert sorted(pool.map(one, range(24))) == ["member_daily_calls"] * 19 + ["through"] * 5

    @pytest.mark.parametrize("calls", [0, -1, "ten", 1.5, 1_000_001, True, "50", 50.0])
    def test_a_bad_limit_changes_nothing(self, tenant_alpha: TenantFixture, calls: Any) -> None:
        response = self.set_limit(tenant_alpha, calls)
        assert response.status_code == 400, response.content
        assert "member_daily_calls" in response.json()["error"]["details"]
        assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).member_daily_calls is None

    @pytest.mark.parametrize("role", [Role.USER, Role.VIEWER])
    def test_only_billing_admins_set_it_and_it_is_audited(self, tenant_alpha: TenantFixture, role: str) -> None:
        other = tenant_alpha.client(**bearer(jwt_pair(tenant_alpha, make_member(tenant_alpha, role))["access"]))
        body = {"member_daily_calls": 50}
        assert other.put("/api/quota/member-daily-calls", body, content_type="application/json").status_code == 403
        assert Tenant.objects.get(pk=tenant_alpha.tenant.pk).member_daily_calls is None
        assert self.set_limit(tenant_alpha, 50).status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):
            event = AuditEvent.objects.get(action="usage.member_daily_calls_set")
        assert event.metadata == {"from": None, "to": 50}
        assert self.set_limit(tenant_alpha, 50).status_code == 200
        with schema_context(tenant_alpha.tenant.schema_name):  # unchanged: not recorded again
            assert AuditEvent.objects.filter(action="usage.member_daily_calls_set").count() == 1


def test_staff_see_usage_per_tenant_and_set_overrides_in_the_admin(tenant_alpha: TenantFixture) -> None:
    from apps.accounts.services import staff_user_create

    staff = staff_user_create(email="staff@hydronet.example.com", password="Staff-Password-123")
    client = Client(HTTP_HOST=settings.BASE_HOSTNAME, HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(staff)
    v1(key_client(tenant_alpha))
    listing = client.get("/admin/tenants/tenant/").content.decode()
    assert "1 / 100,000" in listing
    url = f"/admin/tenants/tenant/{tenant_alpha.tenant.pk}/change/"
    page = client.get(url).content.decode()
    assert "API calls: 1 / 100,000" in page
    assert 'name="api_calls_per_month_override"' in page


def test_the_admins_tenant_list_counts_calls_whose_counter_redis_lost(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    """After a FLUSHALL (or before a month's first call) the list showed "— / 100,000" where the change page
    rebuilt the counter and showed the calls; it reads them from PostgreSQL, in one statement for the page."""
    from django.db import connection

    from apps.accounts.services import staff_user_create

    staff = staff_user_create(email="staff@hydronet.example.com", password="Staff-Password-123")
    client = Client(HTTP_HOST=settings.BASE_HOSTNAME, HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(staff)
    for _ in range(3):
        v1(key_client(tenant_alpha))
    v1(key_client(tenant_beta))
    flush(tenant_alpha)  # alpha's three calls in usage_stats, and one more still in the ledger:
    with schema_context(tenant_alpha.tenant.schema_name):
        UsageEvent.objects.create(kind="model", calls=1, tokens=1, day=L.today(), counted_calls=True,
                                  counted_tokens=True)  # fmt: skip
    forget_counters()
    with CaptureQueriesContext(connection) as queries:
        listing = client.get("/admin/tenants/tenant/").content.decode()
    assert "4 / 100,000" in listing
    assert "1 / 100,000" in listing
    assert "—" not in listing
    assert sum("usage_stats" in q["sql"] for q in queries.captured_queries) == 1  # not one per tenant

    url = f"/admin/tenants/tenant/{tenant_alpha.tenant.pk}/change/"
    assert "API calls: 4 / 100,000" in client.get(url).content.decode()  # as the change page says


def test_a_rate_limit_of_0_is_refused_in_the_admin(tenant_alpha: TenantFixture) -> None:
    """0 would refuse every request for good while saying "try again in 60 s"; empty means the plan's limit."""
    from django.core.exceptions import ValidationError

    from apps.plans.models import Plan

    tenant = Tenant.objects.get(pk=tenant_alpha.tenant.pk)
    tenant.rate_limit_per_minute_override = 0
    with pytest.raises(ValidationError) as refused:
        tenant.full_clean()
    assert list(refused.value.message_dict) == ["rate_limit_per_minute_override"]
    plan = Plan.objects.get(code="pro")
    plan.rate_limit_per_minute = 0
    with pytest.raises(ValidationError) as refused:
        plan.full_clean()
    assert list(refused.value.message_dict) == ["rate_limit_per_minute"]
