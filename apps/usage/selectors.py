"""Reads of usage: the counters as PostgreSQL knows them, series for the dashboard, quota status."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q
from redis.exceptions import RedisError

from apps.accounts.models import ApiKey, User
from apps.accounts.selectors import user_count_for_quota
from apps.mcp.selectors import mcp_service_count_active
from apps.tenants.models import Tenant
from apps.usage import limits as L
from apps.usage.meter import Meter, month_key, storage_key
from apps.usage.models import Quota, QuotaAlert, UsageEvent, UsageStat
from apps.usage.scripts import redis_client


@dataclass(frozen=True)
class Snapshot:
    calls: int
    tokens: int
    storage_bytes: int
    day: dict[int | None, tuple[int, int]]  # user id (None: API keys) -> (calls, tokens) of the day


# The month's and the day's totals: usage_stats plus the ledger rows not flushed yet, whose calls
# and tokens are {calls} and {tokens}.
_SNAPSHOT_TEMPLATE = """
SELECT 'm', NULL::bigint, COALESCE(SUM(api_calls), 0), COALESCE(SUM(tokens_used), 0)
  FROM (SELECT api_calls, tokens_used FROM usage_stats WHERE date BETWEEN %(start)s AND %(end)s
        UNION ALL SELECT {calls}, {tokens} FROM usage_usageevent WHERE day BETWEEN %(start)s AND %(end)s) m
UNION ALL
SELECT 'd', user_id, SUM(calls), SUM(tokens)
  FROM (SELECT user_id, api_calls AS calls, tokens_used AS tokens FROM usage_stats WHERE date = %(day)s
        UNION ALL SELECT user_id, {calls}, {tokens} FROM usage_usageevent WHERE day = %(day)s) d
 GROUP BY user_id
UNION ALL
SELECT 's', NULL, COALESCE((SELECT storage_bytes FROM usage_stats WHERE user_id IS NULL AND storage_bytes > 0
                            ORDER BY date DESC LIMIT 1), 0), 0
"""
_SNAPSHOT_SQL = _SNAPSHOT_TEMPLATE.format(calls="calls", tokens="tokens")
# A row whose calls and tokens both counters written anew take whole: a row of the rebuilt day when the month
# is rebuilt too. Of the others they take what Redis counted (the flush adds the rest to every counter).
_WHOLE = "(%(month)s AND %(today)s AND day = %(day)s)"
# For a rebuild, in its counters' turn: the ledger rows' totals are read by the statement that marks the rows
# as counted in the new generation, so they share one snapshot. In two statements a call committed between
# them would be in the totals and still marked as before, and the next flush would add it to Redis a second
# time. Only the part of ``counted_in`` of the hash written anew changes (apps.usage.models.UsageEvent): the
# other hash has counted what it had. Rows the hashes take whole are marked counted, calls and tokens.
_MARKED_SNAPSHOT_SQL = f"""
WITH marked AS (
  UPDATE usage_usageevent SET
    counted_in = CASE
      WHEN {_WHOLE} THEN %(generation)s
      WHEN %(month)s THEN %(generation)s || '/' ||
                          CASE WHEN strpos(counted_in, '/') > 0 THEN split_part(counted_in, '/', 2) ELSE counted_in END
      ELSE split_part(counted_in, '/', 1) || '/' || %(generation)s END,
    counted_calls = counted_calls OR {_WHOLE}, counted_tokens = counted_tokens OR {_WHOLE}
   WHERE day BETWEEN %(start)s AND %(end)s AND (%(month)s OR (%(today)s AND day = %(day)s))
  RETURNING 1
)
""" + _SNAPSHOT_TEMPLATE.format(
    calls=f"CASE WHEN counted_calls OR {_WHOLE} THEN calls ELSE 0 END",
    tokens=f"CASE WHEN counted_tokens OR {_WHOLE} THEN tokens ELSE 0 END",
)
# Without the turn nothing is marked, so nothing of the ledger is in the new generation: the flush adds it all.
_UNMARKED_SNAPSHOT_SQL = _SNAPSHOT_TEMPLATE.format(calls="0", tokens="0")


def counters_from_database(day: dt.date) -> Snapshot:
    """The month's and the day's counts as PostgreSQL has them: usage_stats plus unflushed calls.

    One statement, so it sees one consistent state even while a flush moves rows.
    """
    return _snapshot(_SNAPSHOT_SQL, day)


def counters_for_rebuild(day: dt.date, *, generation: str, month: bool, today: bool, mark: bool) -> Snapshot:
    """What a rebuild writes into the live counters of ``day`` that are missing: ``month`` (the month's hash),
    ``today`` (the day's), each a new generation ``generation``.

    Call it in the tenant's counters turn (``apps.usage.meter.counters_turn``), after
    reading which counters are missing. ``mark`` (it holds the turn, so no other rebuild
    can write them first): usage_stats plus the ledger's rows, which are marked counted in
    the new generation in the same statement, in the hashes written anew only, so the
    flush adds to each hash exactly what it lacks. A call in flight (its row not yet
    written) is in no snapshot: its row names the lost hash's generation, so the flush
    adds it to the new hash and not to the other, which has it. A row both hashes take
    (both written anew, the row of ``day``) is taken whole, calls and tokens, and marked
    counted; of the others only what Redis counted. Without ``mark``: usage_stats only,
    and the flush adds every ledger row to the new hashes.
    """
    sql = _MARKED_SNAPSHOT_SQL if mark and (month or today) else _UNMARKED_SNAPSHOT_SQL
    return _snapshot(sql, day, generation, month=month, today=today)


def _snapshot(sql: str, day: dt.date, generation: str = "", *, month: bool = False, today: bool = False) -> Snapshot:
    calls = tokens = storage = 0
    per_user: dict[int | None, tuple[int, int]] = {}
    params: dict[str, dt.date | str | bool] = {
        "start": L.period_start(day), "end": L.period_end(day), "day": day, "generation": generation,
        "month": month, "today": today,
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, user_id, a, b in cursor.fetchall():
            if kind == "m":
                calls, tokens = int(a), int(b)
            elif kind == "d":
                per_user[user_id] = (int(a), int(b))
            else:
                storage = int(a)
    return Snapshot(calls=calls, tokens=tokens, storage_bytes=storage, day=per_user)


def storage_used(tenant: Tenant) -> int:
    """The schema's last measured size in bytes: from Redis, else from usage_stats."""
    try:
        value = redis_client().get(storage_key(tenant.schema_name))
        if value is not None:
            return int(value)
    except RedisError:
        pass
    return counters_from_database(L.today()).storage_bytes


def month_calls(tenant: Tenant, day: dt.date) -> int:
    """The calls of ``day``'s month: the live counter, rebuilt if lost; PostgreSQL if Redis is down.

    (The counter's tokens run up to a flush behind; what shows tokens reads PostgreSQL.)
    """
    try:
        client = redis_client()
        calls = client.hget(month_key(tenant.schema_name, day), "calls")
        if calls is None and day == L.today():
            meter = Meter(tenant=tenant, user_id=None, api_key_id=None)
            meter.rebuild(day)
            calls = client.hget(month_key(tenant.schema_name, day), "calls")
        if calls is not None:
            return int(calls)
    except RedisError:
        pass
    return counters_from_database(day).calls


def quota_used(quota: str, tenant: Tenant, limits: L.Limits, day: dt.date) -> tuple[int | None, int]:
    """A quota's limit (None: unlimited) and what is used of it now (API calls: in ``day``'s month)."""
    if quota == Quota.API_CALLS:
        return limits.api_calls, month_calls(tenant, day)
    if quota == Quota.STORAGE:
        return limits.storage_bytes, storage_used(tenant)
    if quota == Quota.USERS:
        return limits.users, user_count_for_quota()
    return limits.mcp_services, mcp_service_count_active()


def quota_status(tenant: Tenant) -> list[dict[str, Any]]:
    """Each quota: its limit, what is used, what remains and when it resets (None: it does not)."""
    day = L.today()
    limits = L.limits_for(tenant)
    resets = L.iso(L.resets_at(day))
    out = []
    calls = 0
    for quota in Quota:  # API calls first
        limit, used = quota_used(quota, tenant, limits, day)
        if quota == Quota.API_CALLS:
            calls = used
        out.append(
            {
                "quota": quota.value,
                "limit": limit,
                "used": used,
                "remaining": None if limit is None else max(0, limit - used),
                "percent": _percent(limit, used),
                "resets_at": resets if quota == Quota.API_CALLS else None,
            }
        )
    out[0]["overage"] = limits.overage_calls(calls)
    out[0]["overage_fen"] = limits.overage_fen(calls)
    out[0]["spending_cap_fen"] = limits.spending_cap_fen
    out[0]["member_daily_calls"] = limits.member_daily_calls
    out[0]["hard_stop"] = limits.hard_stop
    return out


def _percent(limit: int | None, used: int) -> float | None:
    """How much of a quota is used, in %, to one decimal rounded down; None if unlimited. A limit of 0 is full
    before any use.

    Down, as the usage page's bars: 9,996 of 10,000 calls rounded to 100.0 % while calls went on (and 79.96 % to
    80.0 % before the 80 % alert); 100.0 is the limit reached.
    """
    if limit is None:
        return None
    return used * 1000 // limit / 10 if limit else 100.0


def usage_member_known(user_id: int) -> bool:
    """A member, or a deleted one whose usage is kept: ``group_by=user`` lists it as "Deleted member #id", so its
    id asks for that usage and is not a 404."""
    return (
        User.objects.filter(pk=user_id).exists()
        or UsageStat.objects.filter(user_id=user_id).exists()
        or UsageEvent.objects.filter(user_id=user_id).exists()
    )


def usage_series(*, start: dt.date, end: dt.date, group_by: str, user_id: int | None = None,
                 only_user: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Calls and tokens per day (``group_by="day"``), per user (``"user"``) or per API key (``"api_key"``)
    over [start, end].

    Flushed totals and unflushed calls are added together, so the series is current.
    ``only_user`` limits it to ``user_id`` (members who may not see the whole tenant);
    calls made with API keys are no one's, so per key it does not apply. Per user: most calls first, ties by
    user id, the API keys' row (no user) last among them.
    """
    if group_by == "api_key":
        return _usage_by_api_key(start, end)
    params: dict[str, Any] = {"start": start, "end": end, "user": user_id}
    where_user = "AND user_id = %(user)s" if only_user else ""
    if group_by == "day":
        sql = f"""
        SELECT day, SUM(calls), SUM(tokens), MAX(storage) FROM (
          SELECT date AS day, api_calls AS calls, tokens_used AS tokens,
                 CASE WHEN user_id IS NULL THEN storage_bytes ELSE 0 END AS storage
            FROM usage_stats WHERE date BETWEEN %(start)s AND %(end)s {where_user}
          UNION ALL
          SELECT day, calls, tokens, 0 FROM usage_usageevent WHERE day BETWEEN %(start)s AND %(end)s {where_user}
        ) u GROUP BY day ORDER BY day"""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            found = {row[0]: row for row in cursor.fetchall()}
            storage = 0 if only_user else _storage_before(cursor, start)
        series = []
        today = L.today()
        for offset in range((end - start).days + 1):  # not day += 1 to past ``end``: 9999-12-31 has no next day
            day = start + dt.timedelta(days=offset)
            row = found.get(day)
            if row and row[3] and not only_user:
                storage = int(row[3])
            series.append(
                {
                    "date": day.isoformat(),
                    "api_calls": int(row[1]) if row else 0,
                    "tokens": int(row[2]) if row else 0,
                    # A day without a measurement of its own (today before the first, a day the beat was down)
                    # stored what the last one found; days to come have none.
                    "storage_bytes": storage if day <= today else 0,
                }
            )
        return series
    sql = f"""
    SELECT user_id, SUM(calls), SUM(tokens) FROM (
      SELECT user_id, api_calls AS calls, tokens_used AS tokens FROM usage_stats
       WHERE date BETWEEN %(start)s AND %(end)s {where_user}
      UNION ALL
      SELECT user_id, calls, tokens FROM usage_usageevent WHERE day BETWEEN %(start)s AND %(end)s {where_user}
    ) u GROUP BY user_id HAVING SUM(calls) > 0 OR SUM(tokens) > 0 ORDER BY SUM(calls) DESC, user_id NULLS LAST"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    emails = dict(User.objects.filter(pk__in=[r[0] for r in rows if r[0]]).values_list("pk", "email"))
    return [
        {"user_id": uid, "email": emails.get(uid, "") if uid else None, "api_calls": int(c), "tokens": int(t)}
        for uid, c, t in rows
    ]


def _storage_before(cursor: Any, day: dt.date) -> int:
    """The tenant's size as last measured before ``day`` (0 if never)."""
    cursor.execute(
        "SELECT storage_bytes FROM usage_stats WHERE user_id IS NULL AND date < %s AND storage_bytes > 0 "
        "ORDER BY date DESC LIMIT 1",
        [day],
    )
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def api_key_totals(start: dt.date, end: dt.date) -> list[tuple[int, int, int]]:
    """(key id, calls, tokens) of each API key with calls over [start, end], most calls first: flushed
    totals and unflushed calls together."""
    sql = """
    SELECT api_key_id, SUM(calls), SUM(tokens) FROM (
      SELECT api_key_id, api_calls AS calls, tokens_used AS tokens FROM usage_api_key_stats
       WHERE date BETWEEN %(start)s AND %(end)s
      UNION ALL
      SELECT api_key_id, calls, tokens FROM usage_usageevent
       WHERE day BETWEEN %(start)s AND %(end)s AND api_key_id IS NOT NULL
    ) u GROUP BY api_key_id HAVING SUM(calls) > 0 OR SUM(tokens) > 0 ORDER BY SUM(calls) DESC, api_key_id"""
    with connection.cursor() as cursor:
        cursor.execute(sql, {"start": start, "end": end})
        return [(int(key), int(calls), int(tokens)) for key, calls, tokens in cursor.fetchall()]


def _usage_by_api_key(start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    """Each API key's calls and tokens over [start, end], most calls first; keys without calls are left out.

    Counted per key since migration usage.0003: calls flushed before it count on the
    tenant's row only, so in a range that reaches back before it the keys add up to less than the
    "API keys" line of the per-user series.
    """
    rows = api_key_totals(start, end)
    keys = {key.pk: key for key in ApiKey.objects.filter(pk__in=[r[0] for r in rows])}
    out = []
    for key_id, calls, tokens in rows:
        key = keys.get(key_id)
        out.append(
            {
                "api_key_id": key_id,
                "name": key.name if key else "",
                "prefix": key.prefix if key else "",
                "revoked": bool(key and key.revoked_at),
                "api_calls": calls,
                "tokens": tokens,
            }
        )
    return out


@dataclass(frozen=True)
class StandingAlert:
    """A quota's highest threshold crossed this month that its use is still at or above, and that use."""

    alert: QuotaAlert
    used: int


# Quotas of a level that a new month does not reset: their alerts of earlier months stand while the level does.
LEVEL_QUOTAS = (Quota.STORAGE, Quota.USERS, Quota.MCP_SERVICES)


def alerts_standing(tenant: Tenant, day: dt.date | None = None) -> list[StandingAlert]:
    """For each quota, the highest threshold crossed that its use is still at or above: the banner.

    API calls start again each month, so only this month's alerts count for them. Storage, members and MCP
    services do not: a workspace still at 5 of its 5 members on the 1st keeps its banner, from the alert of the
    month it reached them. Use can fall (members or MCP services removed, data deleted) and limits can rise
    (another plan, a staff override), so an alert that no longer stands is not shown; it fired once all the
    same. The use is read only for quotas with an alert, so most pages pay the one query for the alerts alone.
    """
    day = day or L.today()
    recorded: dict[str, list[QuotaAlert]] = {}
    month = L.period_start(day)
    # Quotas only: a reached spending cap shows with the API calls' 100 %, as the use against the cap now.
    alerts = QuotaAlert.objects.filter(Q(period=month, quota__in=Quota.values) | Q(quota__in=LEVEL_QUOTAS,
                                                                                     period__lt=month))  # fmt: skip
    for alert in alerts.order_by("quota", "-threshold", "-period"):
        recorded.setdefault(alert.quota, []).append(alert)
    if not recorded:
        return []
    limits = L.limits_for(tenant)
    standing = []
    for quota, alerts_of_quota in recorded.items():
        limit, used = quota_used(quota, tenant, limits, day)
        if limit is None:  # unlimited now
            continue
        reached = L.reached(limit, used)
        top = next((alert for alert in alerts_of_quota if alert.threshold in reached), None)
        if top is not None:
            standing.append(StandingAlert(alert=top, used=used))
    return standing


def usage_by_tenant(tenants: list[Tenant]) -> dict[int, int]:
    """This month's calls of each tenant: the live counters, in one round trip, and for those whose counter is
    missing (Redis emptied, no call yet this month) or all of them if Redis is down, what PostgreSQL has, in
    one statement, as ``month_calls`` finds it for one tenant (the list showed "—" there)."""
    if not tenants:
        return {}
    day = L.today()
    try:
        pipe = redis_client().pipeline(transaction=False)
        for tenant in tenants:
            pipe.hget(month_key(tenant.schema_name, day), "calls")
        values = pipe.execute()
    except RedisError:
        values = [None] * len(tenants)
    calls = {tenant.pk: int(v) for tenant, v in zip(tenants, values, strict=True) if v is not None}
    missing = [tenant for tenant in tenants if tenant.pk not in calls]
    return {**calls, **_month_calls_from_database(missing, day)}


def _month_calls_from_database(tenants: list[Tenant], day: dt.date) -> dict[int, int]:
    """The month's calls of each of ``tenants`` as PostgreSQL has them (usage_stats plus the ledger's unflushed
    rows, as ``counters_from_database``), in one statement across their schemas."""
    if not tenants:
        return {}
    quote = connection.ops.quote_name
    parts = [
        f"""SELECT %s, (SELECT COALESCE(SUM(api_calls), 0) FROM {quote(t.schema_name)}.usage_stats
                         WHERE date BETWEEN %s AND %s)
                     + (SELECT COALESCE(SUM(calls), 0) FROM {quote(t.schema_name)}.usage_usageevent
                         WHERE day BETWEEN %s AND %s)"""
        for t in tenants
    ]
    start, end = L.period_start(day), L.period_end(day)
    params = [value for t in tenants for value in (t.pk, start, end, start, end)]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        return {int(pk): int(calls) for pk, calls in cursor.fetchall()}
