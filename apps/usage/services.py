"""Writes of usage: quota alerts, the flush into usage_stats, storage measurement, the spending cap."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import translation
from django.utils.translation import gettext as _
from django_tenants.utils import quote_schema_name
from redis.exceptions import RedisError

from apps.audit.services import audit_record
from apps.core.actors import Actor
from apps.core.exceptions import InvalidInput
from apps.tenants.db import connection
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_current_locked
from apps.usage import limits as L
from apps.usage.meter import counters_turn, day_key, month_key, storage_key, who
from apps.usage.models import SPENDING_CAP, Quota
from apps.usage.scripts import Adjustment, add_to_counters, redis_client
from apps.usage.selectors import month_calls, quota_used

logger = logging.getLogger(__name__)

MAX_SPENDING_CAP_FEN = 100_000_000_00  # ¥100 million: anything above is a typo
MAX_MEMBER_DAILY_CALLS = 1_000_000  # a call every 0.09 s all day: anything above is a typo


# --- Alerts ----------------------------------------------------------------------------


def quota_alerts_raise(*, quota: str, limit: int, used: int, thresholds: list[int], day: dt.date) -> list[int]:
    """Record the thresholds of ``limit`` crossed in ``day``'s month, each once; email the admins about new ones.

    The unique (quota, period, threshold, limit) row makes "once" hold under any
    concurrency; the row is also the event webhooks will deliver. Thresholds crossed
    at once (one call past several, a new limit) make one email, for the highest.
    Returns the thresholds that were new.
    """
    fired: list[int] = []
    newest = 0
    period = L.period_start(day)
    with connection.cursor() as cursor:
        for threshold in sorted(thresholds):
            cursor.execute(
                'INSERT INTO usage_quotaalert (quota, period, threshold, "limit", used, created_at) '
                "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT DO NOTHING RETURNING id",
                [quota, period, threshold, limit, used],
            )
            row = cursor.fetchone()
            if row is not None:
                fired.append(threshold)
                newest = row[0]
    if fired:  # one email, for the highest threshold crossed: lower ones crossed at once would say too little
        _queue_alert_email(newest)
        schema = connection.schema_name
        transaction.on_commit(  # a change refused after its check (a duplicate email) rolls the alert back too
            lambda: logger.info("quota %s of %s crossed %s%% (%s of %s)", quota, schema, fired, used, limit)
        )
    return fired


def _queue_alert_email(alert_id: int) -> None:
    from apps.usage.tasks import send_quota_alert_email

    schema, language = connection.schema_name, translation.get_language() or "zh-hans"
    transaction.on_commit(
        lambda: send_quota_alert_email.apply_async(args=[alert_id, language], headers={"_schema_name": schema}),
        robust=True,
    )


def quota_check_count_alerts(*, quota: str, limit: int | None, used_before: int, used_after: int) -> None:
    """Alerts for the counted quotas (users, MCP services), in the caller's transaction."""
    thresholds = L.crossed(limit, used_before, used_after)
    if thresholds and limit is not None:
        quota_alerts_raise(quota=quota, limit=limit, used=used_after, thresholds=thresholds, day=L.today())


# --- Flush -----------------------------------------------------------------------------

# Moves ledger rows into usage_stats, and the calls made with API keys also into the per-key
# table, in one statement: a worker killed or a flush retried either moved a row (and deleted
# it) or did not; nothing counts twice.
_FLUSH_SQL = """
WITH moved AS (
  DELETE FROM usage_usageevent
   WHERE id IN (SELECT id FROM usage_usageevent ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
  RETURNING user_id, api_key_id, day, calls, tokens, counted_calls, counted_tokens, counted_in
), added AS (
  INSERT INTO usage_stats AS s (user_id, date, api_calls, tokens_used, storage_used_mb, storage_bytes, updated_at)
  SELECT user_id, day, SUM(calls), SUM(tokens), 0, 0, now() FROM moved GROUP BY user_id, day
  ON CONFLICT ON CONSTRAINT usage_stats_user_date_unique DO UPDATE
    SET api_calls = s.api_calls + EXCLUDED.api_calls, tokens_used = s.tokens_used + EXCLUDED.tokens_used,
        updated_at = now()
), by_key AS (
  INSERT INTO usage_api_key_stats AS k (api_key_id, date, api_calls, tokens_used, updated_at)
  SELECT api_key_id, day, SUM(calls), SUM(tokens), now() FROM moved WHERE api_key_id IS NOT NULL
   GROUP BY api_key_id, day
  ON CONFLICT ON CONSTRAINT usage_api_key_stats_key_date_unique DO UPDATE
    SET api_calls = k.api_calls + EXCLUDED.api_calls, tokens_used = k.tokens_used + EXCLUDED.tokens_used,
        updated_at = now()
)
SELECT user_id, day, counted_in, COUNT(*),
       COALESCE(SUM(calls) FILTER (WHERE NOT counted_calls), 0),
       COALESCE(SUM(tokens) FILTER (WHERE NOT counted_tokens), 0),
       COALESCE(SUM(calls) FILTER (WHERE counted_calls), 0),
       COALESCE(SUM(tokens) FILTER (WHERE counted_tokens), 0)
  FROM moved GROUP BY user_id, day, counted_in
"""


def usage_flush(*, batch: int = 50_000) -> int:
    """Persist the current tenant's unflushed calls into usage_stats; return how many calls moved.

    After the commit the calls' tokens are added to the live counters in Redis
    (calls reach them with the call, tokens only here: ``apps.usage.ledger``), and
    so are calls Redis missed while it was unreachable and calls counted in counters
    Redis has lost since (another generation: ``apps.usage.scripts.Adjustment``), so
    the live quota catches up with them. One script call per batch.
    """
    moved = 0
    while True:
        # A counter rebuild between the commit and the adding would count the missed calls twice.
        with counters_turn(connection.schema_name):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_FLUSH_SQL, {"batch": batch})
                rows = cursor.fetchall()
            _add_uncounted(rows)
        count = sum(int(r[3]) for r in rows)
        moved += count
        if count < batch:
            return moved


def calls_alerts_catch_up(*, tenant: Tenant) -> list[int]:
    """The API-call thresholds the month's calls are at or past, each raised once: calls the flush adds to
    the live counter (made while Redis was unreachable, or counted in a counter lost since) reach it
    without a charge, and so without the crossing each charge checks; storage's measurement does the same.
    The spending cap too, where those calls took the month to it.
    """
    limits, day = L.limits_for(tenant), L.today()
    fired, used = _catch_up(Quota.API_CALLS, tenant, limits, day)
    spending_cap_alert(limits=limits, used=used, day=day)  # the month's calls, read once for both
    return fired


def spending_cap_alert(*, limits: L.Limits, used: int, day: dt.date) -> bool:
    """The month's calls, ``used``, stop at the spending cap: tell the admins, once a month for each cap.

    Only where the cap is what stops calls past the quota: a cap that pays for no call (0, or less than one
    call's price) stops them at the quota itself, which its 100 % alert says. ``limit`` is the cap and ``used``
    the overage, in fen. Returns whether the alert was new.
    """
    cap, stop = limits.spending_cap_fen, limits.calls_stop_at
    if cap is None or stop is None or not limits.bills_overage or limits.stops_at_quota or used < stop:
        return False
    fired = quota_alerts_raise(quota=SPENDING_CAP, limit=cap, used=limits.overage_fen(used), thresholds=[100],
                               day=day)  # fmt: skip
    return bool(fired)


def quota_alerts_catch_up(*, tenant: Tenant, quotas: list[str]) -> dict[str, list[int]]:
    """Raise, once each, the thresholds each of ``quotas`` is at or past now; returns the new ones by quota.

    For a use that reached its thresholds without crossing them one by one: calls that reach the live
    counter with the flush, and a limit set below what is used (another plan, a staff override). A workspace
    moved to the free plan with 700 calls made against its 100 has every call refused before the charge
    that would alert, and a workspace at 5 members told it may have 3 adds none: the limit is what moved.
    """
    limits, day = L.limits_for(tenant), L.today()
    fired = {}
    for quota in quotas:
        fired[quota], used = _catch_up(quota, tenant, limits, day)
        if quota == Quota.API_CALLS:  # a lower quota lowers where the spending cap stops calls too
            spending_cap_alert(limits=limits, used=used, day=day)
    return fired


def _catch_up(quota: str, tenant: Tenant, limits: L.Limits, day: dt.date) -> tuple[list[int], int]:
    """The thresholds of ``quota`` it is at or past now, raised once each (the new ones), and what is used of it."""
    limit, used = quota_used(quota, tenant, limits, day)
    thresholds = L.reached(limit, used)
    if not thresholds or limit is None:
        return [], used
    return quota_alerts_raise(quota=quota, limit=limit, used=used, thresholds=thresholds, day=day), used


def quota_alerts_restate(*, tenant: Tenant, quotas: list[str]) -> list[str]:
    """Email again this month's 100 % alert of each of ``quotas`` whose use is at its limit, where work now stops
    there (``stops_moved_sooner``); returns the quotas whose email is queued again.

    The alert fires once a month for each limit, and its email said the calls (or the storage) went on, billed as
    overage: after staff made the plan stop at its quota, with the limit as it was, no new alert fired, and the
    admins learnt that calls had stopped from members who met the refusals. The email says what holds when it
    is sent. An alert whose email has not gone yet will say so anyway, and is left as it is.
    """
    from apps.usage.models import QuotaAlert

    limits, day = L.limits_for(tenant), L.today()
    restated = []
    for quota in quotas:
        limit, used = quota_used(quota, tenant, limits, day)
        stops = limits.stops_at_quota if quota == Quota.API_CALLS else limits.storage_stop_at is not None
        if limit is None or not stops or used < limit:
            continue
        alert = QuotaAlert.objects.filter(quota=quota, period=L.period_start(day), limit=limit, threshold=100).first()
        if alert is None or (alert.emailed_at is None and not alert.email_skipped):
            continue
        QuotaAlert.objects.filter(pk=alert.pk).update(emailed_at=None, email_skipped=False)
        _queue_alert_email(alert.pk)
        restated.append(quota)
    return restated


def stops_moved_sooner(before: L.Limits, after: L.Limits) -> list[str]:
    """The quotas (API calls, storage) whose limit stayed the same while work now stops at it, where it went on
    before: a plan that no longer bills overage, or now stops hard. A limit that moved raises alerts of its own."""
    calls = after.api_calls == before.api_calls and after.stops_at_quota and not before.stops_at_quota
    storage = after.storage_bytes == before.storage_bytes and after.storage_stop_at is not None
    storage = storage and before.storage_stop_at is None
    return [quota.value for quota, moved in ((Quota.API_CALLS, calls), (Quota.STORAGE, storage)) if moved]


def quotas_lowered(before: L.Limits, after: L.Limits) -> list[str]:
    """The quotas whose limit ``after`` is lower than ``before`` (unlimited is highest)."""
    pairs = {
        Quota.API_CALLS: (before.api_calls, after.api_calls),
        Quota.STORAGE: (before.storage_bytes, after.storage_bytes),
        Quota.USERS: (before.users, after.users),
        Quota.MCP_SERVICES: (before.mcp_services, after.mcp_services),
    }
    return [quota.value for quota, (old, new) in pairs.items() if new is not None and (old is None or new < old)]


def _add_uncounted(rows: list[tuple[int | None, dt.date, str, int, int, int, int, int]]) -> None:
    """Add what Redis has not counted yet: every call's tokens, calls made while it was unreachable, and
    calls counted in counters Redis has lost since (their generation is not the live counters')."""
    schema = connection.schema_name
    missed = [
        Adjustment(
            month=month_key(schema, day),
            day=day_key(schema, day),
            who=who(user_id),
            generation=generation,
            calls=int(calls),
            tokens=int(tokens),
            if_other_calls=int(counted_calls),
            if_other_tokens=int(counted_tokens),
        )
        for user_id, day, generation, _n, calls, tokens, counted_calls, counted_tokens in rows
        if calls or tokens or counted_calls or counted_tokens
    ]
    if not missed:
        return
    try:
        add_to_counters(missed)  # one round trip for the whole batch
    except RedisError:
        logger.warning("usage of %s not added to Redis; its next rebuild restores it from PostgreSQL", schema)


# --- Storage ---------------------------------------------------------------------------

_SCHEMA_SIZE_SQL = """
SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relkind IN ('r', 'm', 'p')
"""


def files_dir(tenant: Tenant) -> Path:
    return Path(settings.MEDIA_ROOT) / "tenants" / tenant.schema_name


def storage_measure(*, tenant: Tenant) -> int:
    """Measure the schema (tables with their indexes and TOAST) plus its stored files; record it.

    The size goes to today's tenant row in usage_stats and to Redis, where the
    quota check reads it. Being at or past 80, 90 or 100 % of the plan's storage
    raises the alert (once a month each, for each limit). Returns the size in bytes.
    """
    with connection.cursor() as cursor:
        cursor.execute(_SCHEMA_SIZE_SQL, [tenant.schema_name])
        size = int(cursor.fetchone()[0])
    folder = files_dir(tenant)
    if folder.is_dir():
        size += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    day = L.today()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO usage_stats AS s (user_id, date, api_calls, tokens_used, storage_used_mb, storage_bytes, "
                "updated_at) VALUES (NULL, %s, 0, 0, %s, %s, now()) "
                "ON CONFLICT ON CONSTRAINT usage_stats_user_date_unique DO UPDATE "
                "SET storage_bytes = EXCLUDED.storage_bytes, storage_used_mb = EXCLUDED.storage_used_mb, "
                "updated_at = now()",
                [day, round(size / L.MB, 3), size],
            )
        limits = L.limits_for(tenant)
        # Reached, not crossed: after a lower limit (a plan, an override) the size is past thresholds it never
        # crossed. Each still fires once a month for its limit (the unique row).
        thresholds = L.reached(limits.storage_bytes, size)
        if thresholds and limits.storage_bytes is not None:
            quota_alerts_raise(quota=Quota.STORAGE, limit=limits.storage_bytes, used=size, thresholds=thresholds,
                               day=day)  # fmt: skip
    try:
        redis_client().set(storage_key(tenant.schema_name), size)
    except RedisError:
        logger.warning("storage of %s not written to Redis; the next rebuild reads it from usage_stats", tenant)
    return size


# The tables members free space in by deleting (their conversations and messages), and how often a tenant's are
# rewritten at most.
RECLAIMED_TABLES = ("chat_message", "chat_conversation")
RECLAIM_EVERY_SECONDS = 300


def storage_freed(*, tenant: Tenant) -> bool:
    """After members deleted data, on a plan that stops at its storage quota: give the space back, then measure.

    PostgreSQL keeps a table's freed pages for its next rows, so the size measured (``pg_total_relation_size``)
    does not fall after a ``DELETE``: a free workspace whose storage was used up stayed refused however much it
    deleted, though the refusal tells it to delete. ``storage_reclaim`` rewrites the tables (``VACUUM FULL``),
    queued after commit, at most every ``RECLAIM_EVERY_SECONDS`` per tenant (Redis ``SET NX``; skipped if Redis is
    down: the next delete asks again). A delete within that time queues one more, for its end (once): until
    2026-12-07 it queued none, and a workspace that deleted twice in five minutes stayed refused until the
    periodic measurement happened to see the space. Paid plans go on past the quota, and their freed pages are
    reused. Returns whether a reclaim was queued.
    """
    if L.limits_for(tenant).storage_stop_at is None:
        return False
    schema = tenant.schema_name
    key = f"{storage_key(schema)}:reclaim"
    try:
        client = redis_client()
        countdown = 0
        if not client.set(key, 1, nx=True, ex=RECLAIM_EVERY_SECONDS):
            countdown = max(int(client.ttl(key)), 1)  # when the last reclaim's time is up
            if not client.set(f"{key}:next", 1, nx=True, ex=countdown):
                return False  # one is queued for then already
    except RedisError:
        return False
    from apps.usage.tasks import reclaim_storage

    transaction.on_commit(
        lambda: reclaim_storage.apply_async(countdown=countdown, headers={"_schema_name": schema}), robust=True
    )
    return True


def storage_reclaim(*, tenant: Tenant) -> int:
    """Rewrite the tables deletes free space in, giving their freed pages back, then measure; returns the size.

    ``VACUUM FULL`` holds the table (its reads wait) while it copies the live rows: a second or two for a free
    plan's 100 MB. It waits at most 5 s for the table (a long transaction on it): then that table is left as
    it is, for the next delete's reclaim.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")
        try:
            for table in RECLAIMED_TABLES:
                try:
                    cursor.execute(f"VACUUM (FULL) {quote_schema_name(tenant.schema_name)}.{table}")
                except OperationalError:
                    logger.warning("storage of %s: %s not rewritten (locked); the next delete tries again",
                                   tenant.schema_name, table)  # fmt: skip
        finally:
            cursor.execute("RESET lock_timeout")
    return storage_measure(tenant=tenant)


LARGE_WRITE_BYTES = 64 * 1024


# Bytes each schema was written in this process since it last asked for a measurement: many small writes (a
# chat's turns) add up to a large one. Per process, so several web processes may each write up to this much.
_written: dict[str, int] = {}
_written_lock = threading.Lock()


def storage_changed(*, bytes_written: int) -> bool:
    """After large writes, measure the tenant's storage soon: once this process wrote LARGE_WRITE_BYTES to the
    schema since it last asked (in one write or in many), at most once a minute per tenant, after commit.

    Returns whether a measurement was queued.
    """
    schema = connection.schema_name
    with _written_lock:
        written = _written.get(schema, 0) + bytes_written
        if written < LARGE_WRITE_BYTES:
            _written[schema] = written
            return False
        _written.pop(schema, None)
    try:
        if not redis_client().set(f"{storage_key(schema)}:measure-soon", 1, nx=True, ex=60):
            return False
    except RedisError:
        return False  # the periodic measurement still comes
    from apps.usage.tasks import measure_storage

    transaction.on_commit(lambda: measure_storage.apply_async(headers={"_schema_name": schema}), robust=True)
    return True


# --- Spending cap ----------------------------------------------------------------------


@transaction.atomic
def spending_cap_set(*, actor: Actor, cap_fen: int | None) -> Tenant:
    """Set (or with None, remove) the monthly cap on overage spending, in fen."""
    if cap_fen is not None and not (0 <= cap_fen <= MAX_SPENDING_CAP_FEN):
        message = _("Enter an amount between 0 and %(max)d fen.") % {"max": MAX_SPENDING_CAP_FEN}
        raise InvalidInput(message, details={"spending_cap_fen": [message]})
    tenant = tenant_current_locked()
    limits = L.limits_for(tenant)
    if cap_fen is not None and not limits.bills_overage:
        # The usage page shows no form then; a cap here would be stored and do nothing.
        if limits.hard_stop:
            message = _("Your plan stops calls at its quota instead of billing overage, so no spending cap applies.")
        else:
            message = _("Your plan has no overage charges, so no spending cap applies.")
        raise InvalidInput(message, code="no_overage", details={"spending_cap_fen": [message]})
    old = tenant.spending_cap_fen
    if old == cap_fen:
        return tenant  # nothing changed: nothing to record
    tenant.spending_cap_fen = cap_fen
    tenant.save(update_fields=["spending_cap_fen", "updated_at"])
    audit_record(actor=actor, action="billing.spending_cap_set", target_type="tenant", target_id=tenant.pk,
                 metadata={"from_fen": old, "to_fen": cap_fen})  # fmt: skip
    if cap_fen is not None:
        # A cap set below the month's overage stops calls at once, and no call gets far enough to raise its
        # alert (the charge refuses it first): the other admins, and the event, hear of it here.
        day = L.today()
        spending_cap_alert(limits=L.limits_for(tenant), used=month_calls(tenant, day), day=day)
    return tenant


# --- Each member's calls a day ---------------------------------------------------------


@transaction.atomic
def member_daily_calls_set(*, actor: Actor, calls: int | None) -> Tenant:
    """Set (or with None, remove) the AI calls each member may make a day (UTC), so that no one member uses up
    the workspace's month. API keys are not limited by it (apps.usage.meter)."""
    if calls is not None and not (1 <= calls <= MAX_MEMBER_DAILY_CALLS):
        message = _("Enter a number of calls between 1 and %(max)d.") % {"max": MAX_MEMBER_DAILY_CALLS}
        raise InvalidInput(message, details={"member_daily_calls": [message]})
    tenant = tenant_current_locked()
    old = tenant.member_daily_calls
    if old == calls:
        return tenant  # nothing changed: nothing to record
    tenant.member_daily_calls = calls
    tenant.save(update_fields=["member_daily_calls", "updated_at"])
    audit_record(actor=actor, action="usage.member_daily_calls_set", target_type="tenant", target_id=tenant.pk,
                 metadata={"from": old, "to": calls})  # fmt: skip
    return tenant
