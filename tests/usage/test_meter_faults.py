"""Faults between a charge and the call's end: every call Redis counts reaches the ledger, or is given back.

Whatever fails (Redis mid-rebuild, the ledger's write, a quota alert, any code of ours between the
charge and the model's answer), the live counters and the ledger must agree afterwards, a
conversation's turn must not stay held, and Redis failures follow the documented fail-open or
fail-closed decision (docs/architecture.md, "When Redis is down").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings
from django.db.models import Sum
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.chat import engine
from apps.core.exceptions import ApplicationError
from apps.tenants.models import Tenant
from apps.usage import ledger
from apps.usage import limits as L
from apps.usage import meter as meter_module
from apps.usage.meter import Claim, Meter, day_key, month_key
from apps.usage.models import UsageStat
from apps.usage.scripts import Adjustment, add_to_counters
from tests.conftest import TenantFixture
from tests.usage.conftest import counters, dead_redis, flush, forget_counters, member_client
from tests.usage.test_metering import QUESTION, events, key_client, limits, v1

pytestmark = pytest.mark.django_db


def meter_of(tenant: TenantFixture) -> Meter:
    return Meter(tenant=Tenant.objects.get(pk=tenant.tenant.pk), user_id=None, api_key_id=None)


def agree(tenant: TenantFixture) -> None:
    """After the flush, Redis's month and day counters have the calls PostgreSQL has: no more, no fewer."""
    flush(tenant)
    schema, today = tenant.tenant.schema_name, L.today()
    with schema_context(schema):
        stats = UsageStat.objects.filter(date__gte=L.period_start(today), date__lte=today)
        month = stats.aggregate(calls=Sum("api_calls"))["calls"] or 0
        day = stats.filter(date=today).aggregate(calls=Sum("api_calls"))["calls"] or 0
    assert counters(tenant).get("calls", 0) == month
    of_day = get_redis_connection("default").hgetall(day_key(schema, today))
    assert sum(int(value) for name, value in of_day.items() if name.endswith(b":calls")) == day


def failing(error: BaseException) -> Callable[..., Any]:
    """A stand-in for a function between the charge and the call's end: it raises ``error``."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


# --- Counters lost again, or Redis failing, while a charge rebuilds them ----------------------


def lost_after_each_rebuild(monkeypatch: pytest.MonkeyPatch) -> list[dt.date]:
    """Every rebuild is undone at once: the month's hash evicted again before the charge runs again."""
    real = Meter.rebuild
    rebuilt: list[dt.date] = []

    def rebuild_then_lost(self: Meter, day: dt.date) -> None:
        real(self, day)
        rebuilt.append(day)
        get_redis_connection("default").delete(month_key(self.schema, day))

    monkeypatch.setattr(Meter, "rebuild", rebuild_then_lost)
    return rebuilt


def rebuild_script_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild's script gets no answer (the socket timeout), after it read and marked the ledger."""
    real = meter_module.script

    def script(name: str, source: str, client: Any) -> Any:
        if name != "rebuild":
            return real(name, source, client)

        def timed_out(*, keys: Any, args: Any) -> Any:
            raise redis.exceptions.TimeoutError("Timeout reading from socket")

        return timed_out

    monkeypatch.setattr(meter_module, "script", script)


class TestRebuild:
    def test_counters_lost_again_after_each_rebuild_fail_open_uncounted_on_paid_plans(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The charge ran again after its rebuild and answered REBUILD again: the call went ahead unchecked,
        and its ledger row said Redis had counted it."""
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        forget_counters()
        rebuilt = lost_after_each_rebuild(monkeypatch)
        assert v1(client).status_code == 200
        assert [e.counted_calls for e in events(tenant_alpha)] == [True, False]  # the flush adds it
        assert len(rebuilt) == meter_module.REBUILDS  # bounded
        monkeypatch.undo()
        assert v1(client).status_code == 200
        agree(tenant_alpha)
        assert counters(tenant_alpha)["calls"] == 3

    def test_counters_lost_again_after_each_rebuild_fail_closed_on_the_free_plan(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        limits(tenant_alpha, plan="free", api_calls_per_month_override=1)
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200  # the quota is used up
        forget_counters()
        lost_after_each_rebuild(monkeypatch)
        response = v1(client)
        assert response.status_code == 503, response.content  # was 200: past the quota, uncounted
        assert response.json()["error"]["code"] == "metering_unavailable"
        assert response["Retry-After"] == "5"
        assert len(events(tenant_alpha)) == 1

    @pytest.mark.parametrize(("plan", "status"), [("pro", 200), ("free", 503)])
    def test_redis_failing_in_the_rebuild_fails_open_or_closed(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch, plan: str, status: int
    ) -> None:
        """A Redis timeout inside the rebuild was a 500."""
        limits(tenant_alpha, plan=plan)
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        forget_counters()
        rebuild_script_times_out(monkeypatch)
        response = v1(client)
        assert response.status_code == status, response.content
        if status == 503:
            assert response.json()["error"]["code"] == "metering_unavailable"
        assert [e.counted_calls for e in events(tenant_alpha)] == [True, False][: 1 + (status == 200)]
        monkeypatch.undo()
        assert v1(client).status_code == 200  # rebuilt for good this time
        agree(tenant_alpha)


class TestRedisDown:
    """The member's daily limit and a conversation's one turn at a time live in Redis: they fail open."""

    def test_the_member_daily_limit_fails_open_and_counts_the_calls_later(
        self, tenant_alpha: TenantFixture, settings: Any
    ) -> None:
        limits(tenant_alpha, member_daily_calls=1)
        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        assert client.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        caches = settings.CACHES
        dead_redis(settings)
        assert client.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        assert [e.counted_calls for e in events(tenant_alpha)] == [True, False]
        settings.CACHES = caches
        agree(tenant_alpha)  # the flush adds the call to the member's count of the day
        refused = client.post(url, {"content": "Hi"}, content_type="application/json")
        assert refused.status_code == 402
        assert refused.json()["error"]["details"]["quota"] == "member_daily_calls"

    def test_a_conversations_turn_is_not_held_one_at_a_time(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        from apps.chat.models import Conversation
        from apps.chat.services import turn_hold

        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        with schema_context(tenant_alpha.tenant.schema_name):
            hold = turn_hold(tenant_alpha.tenant.schema_name, Conversation.objects.get(pk=conversation["id"]))
        redis_up = get_redis_connection("default")
        redis_up.set(hold.key, "another turn's", px=60_000)  # another turn is answering
        try:
            busy = client.post(url, {"content": "Hi"}, content_type="application/json")
            assert busy.status_code == 409
            dead_redis(settings)
            assert client.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        finally:
            redis_up.delete(hold.key)


# --- Failures between the charge and the call's end -------------------------------------------


class TestEveryChargedCallEnds:
    def test_v1_failing_before_the_model_is_asked_gives_the_call_back(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from apps.openai_api import apis

        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        monkeypatch.setattr(apis, "tools_for", failing(RuntimeError("a bug between charge and model")))
        with pytest.raises(RuntimeError):
            v1(client)
        assert counters(tenant_alpha)["calls"] == 1  # was 2: Redis kept a call the ledger never got
        agree(tenant_alpha)

    @pytest.mark.parametrize("where", ["tools_for", "open_stream", "store"])
    def test_a_chat_turn_failing_before_its_stream_gives_the_call_and_the_conversation_back(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch, where: str
    ) -> None:
        from apps.chat import services

        client = member_client(tenant_alpha)
        conversation = client.post("/api/conversations", {}, content_type="application/json").json()
        url = f"/api/conversations/{conversation['id']}/messages"
        assert client.post(url, {"content": "Hi"}, content_type="application/json").status_code == 200
        bug = failing(RuntimeError(f"{where} failed"))
        if where == "tools_for":
            monkeypatch.setattr(services, "tools_for", bug)
        elif where == "open_stream":
            monkeypatch.setattr(engine, "open_stream", bug)
        else:
            monkeypatch.setattr(services, "_store_user_message", bug)
        with pytest.raises(RuntimeError):
            client.post(url, {"content": "Hi", "stream": True}, content_type="application/json")
        monkeypatch.undo()
        assert counters(tenant_alpha)["calls"] == 1
        agree(tenant_alpha)
        again = client.post(url, {"content": "Hi"}, content_type="application/json")
        assert again.status_code == 200, again.content  # was 409 conversation_busy until the claim's ttl

    def test_a_later_round_failing_to_start_gives_its_call_back(
        self, tenant_alpha: TenantFixture, hydrology: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """run_turn gave a round's call back only when open_stream raised UpstreamError."""
        real = engine.open_stream
        opened: list[int] = []

        def second_fails(*args: Any, **kwargs: Any) -> Any:
            opened.append(1)
            if len(opened) == 2:
                raise RuntimeError("a bug in the second round")
            return real(*args, **kwargs)

        monkeypatch.setattr(engine, "open_stream", second_fails)
        client = key_client(tenant_alpha)
        client.raise_request_exception = False  # Django's 500, or /v1's own after recorded calls
        response = v1(client, QUESTION)
        assert response.status_code == 500
        assert [e.kind for e in events(tenant_alpha)] == ["model", "tool"]
        assert counters(tenant_alpha)["calls"] == 2  # was 3
        agree(tenant_alpha)

    def test_a_quota_alert_that_fails_gives_the_call_back(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The charge raised after its increment without returning the ticket: nobody could give it back."""
        from apps.usage import services

        limits(tenant_alpha, api_calls_per_month_override=1)  # the first call crosses 80, 90 and 100 %
        monkeypatch.setattr(services, "quota_alerts_raise", failing(RuntimeError("the alert failed")))
        with schema_context(tenant_alpha.tenant.schema_name), pytest.raises(RuntimeError):
            meter_of(tenant_alpha).charge()  # alerts at once
        assert counters(tenant_alpha)["calls"] == 0
        with pytest.raises(RuntimeError):
            v1(key_client(tenant_alpha))  # turn_start's confirm raises them
        assert counters(tenant_alpha)["calls"] == 0
        agree(tenant_alpha)

    @pytest.mark.parametrize(
        "error", [ledger.LedgerWriteError("the batch failed"), psycopg.OperationalError("server closed")],
        ids=["batch", "database"],
    )  # fmt: skip
    def test_a_ledger_row_that_cannot_be_written_gives_the_call_back(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch, error: Exception
    ) -> None:
        """The ticket was marked done before the write: a failed write left the call counted in Redis alone."""
        client = key_client(tenant_alpha)
        assert v1(client).status_code == 200
        monkeypatch.setattr(ledger, "write_rows", failing(error))
        with pytest.raises(type(error)):
            v1(client)
        monkeypatch.undo()
        assert counters(tenant_alpha)["calls"] == 1
        agree(tenant_alpha)
        meter = meter_of(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            ticket = meter.charge()
            monkeypatch.setattr(ledger, "write_rows", failing(error))
            with pytest.raises(type(error)):
                meter.record(ticket, 5)
            monkeypatch.undo()
            meter.record(ticket, 5)  # given back: nothing more to record
            meter.release(ticket)
        assert meter.recorded == 0
        assert counters(tenant_alpha)["calls"] == 1
        agree(tenant_alpha)


# --- /v1 after recorded calls: openai's clients must not retry ------------------------------


class TestNoRetryAfterRecordedCalls:
    def test_a_quota_running_out_mid_turn(self, tenant_alpha: TenantFixture, hydrology: Any) -> None:
        limits(tenant_alpha, plan="free", api_calls_per_month_override=2)  # the model round and its tool call
        response = v1(key_client(tenant_alpha), QUESTION)
        assert response.status_code == 402, response.content
        assert response["x-should-retry"] == "false"

    def test_metering_unavailable_mid_turn(
        self, tenant_alpha: TenantFixture, hydrology: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """openai's clients retry a 503 twice: each retry ran the turn again, and charged its rounds again."""
        limits(tenant_alpha, plan="free")
        with schema_context(tenant_alpha.tenant.schema_name):
            meter_of(tenant_alpha).rebuild(L.today())  # so that each charge is one run of the script
        real = meter_module.script
        charges: list[int] = []

        def script(name: str, source: str, client: Any) -> Any:
            run = real(name, source, client)
            if name != "charge":
                return run

            def third_unreachable(*, keys: Any, args: Any) -> Any:
                charges.append(1)
                if len(charges) == 3:  # the round after the tool call
                    raise redis.exceptions.ConnectionError("Connection refused")
                return run(keys=keys, args=args)

            return third_unreachable

        monkeypatch.setattr(meter_module, "script", script)
        response = v1(key_client(tenant_alpha), QUESTION)
        assert response.status_code == 503, response.content
        assert response.json()["error"]["code"] == "metering_unavailable"
        assert response["x-should-retry"] == "false"
        assert [e.kind for e in events(tenant_alpha)] == ["model", "tool"]

    def test_a_failure_of_ours_mid_turn(
        self, tenant_alpha: TenantFixture, hydrology: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "_truncate", failing(RuntimeError("a bug after the tool ran")))
        response = v1(key_client(tenant_alpha), QUESTION)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "server_error"
        assert response["x-should-retry"] == "false"
        assert [e.kind for e in events(tenant_alpha)] == ["model", "tool"]

    def test_nothing_recorded_may_be_retried(self, tenant_alpha: TenantFixture, settings: Any) -> None:
        settings.LLM_BASE_URL = "http://127.0.0.1:1/v1"
        response = v1(key_client(tenant_alpha))
        assert response.status_code == 502
        assert "x-should-retry" not in response


# --- Numbers the scripts give Redis -------------------------------------------------------------


class TestIntegerArguments:
    """Lua numbers reach Redis commands formatted as floats: Redis 7.2.0 to 7.2.4 write 100000000 as "1e+08"
    (redis/redis#13113), and every version 10^17 as "1e+17", which HINCRBY, EXPIRE and SET PX refuse. Our
    Redis may be of a version without the first; 10^17 shows the same fault on every version."""

    @pytest.mark.parametrize("n", [10**8, 10**17])
    def test_the_add_script_adds_large_sums(self, tenant_alpha: TenantFixture, n: int) -> None:
        meter = meter_of(tenant_alpha)
        with schema_context(tenant_alpha.tenant.schema_name):
            meter.record(meter.charge())
        schema, today = tenant_alpha.tenant.schema_name, L.today()
        generation = events(tenant_alpha)[0].counted_in
        add_to_counters([Adjustment(month=month_key(schema, today), day=day_key(schema, today),
                                    who="k", generation=generation, tokens=n, if_same_calls=n)])  # fmt: skip
        assert counters(tenant_alpha) == {"calls": 1 + n, "tokens": n}

    def test_the_charge_script_takes_a_long_claim(self, tenant_alpha: TenantFixture) -> None:
        meter = meter_of(tenant_alpha)
        key = f"{settings.CACHE_KEY_PREFIX}:turn:{meter.schema}:test"
        meter.claim = Claim(key=key, token="t", ttl_ms=10**17, refusal=ApplicationError("busy"))
        try:
            with schema_context(tenant_alpha.tenant.schema_name):
                ticket = meter.charge()
            assert ticket.counted  # not a Redis error taken for Redis down
            assert get_redis_connection("default").pttl(key) > 10**16
        finally:
            get_redis_connection("default").delete(key)
