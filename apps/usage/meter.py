"""Live counters in Redis: the tenant's rate limit, its monthly calls and tokens, and the quota check.

Each AI call costs one Redis round trip: ``charge`` runs one Lua script that
counts the request against the tenant's per-minute rate, checks the monthly call
quota, storage and the member's calls of the day (``member_daily_calls``, which
the tenant's admins set), and takes one call, atomically. With Q calls left and K
concurrent requests, across any number of processes, exactly min(K, Q) get
through: Redis runs scripts one at a time. The script can also read one more key
the call needs (``also_get``: a chat turn's AI setup), so that read costs no round
trip of its own. ``record`` then writes the call, with its tokens, to the ledger
(``UsageEvent``) in PostgreSQL; calls that end together share the ``INSERT``
(``apps.usage.ledger``). The tokens reach the month and day hashes with the
minute's flush, as nothing is checked against them.

The rate limit is django-ratelimit's fixed window (a counter per tenant per
minute that expires with its window), but counted inside the same script as the
quota so the pair costs one round trip; django-ratelimit's ``get_usage`` needs
two (``add`` then ``incr``) before the quota check could even start.

Keys (all under ``CACHE_KEY_PREFIX``, each naming the tenant's schema):

* ``usage:<schema>:m:<YYYYMM>``: hash, ``calls`` and ``tokens`` of the month (tokens
  as of the last flush), and ``g``, the counters' generation (see ``rebuild``);
* ``usage:<schema>:d:<YYYYMMDD>``: hash, ``<who>:calls`` and ``<who>:tokens`` of the
  day, where ``<who>`` is a user id or ``k`` for API keys, ``init`` and ``g``;
* ``usage:<schema>:storage``: the schema's last measured size in bytes;
* ``usage:<schema>:lock``: held while the month and day hashes are rebuilt, or while a
  flush moves calls Redis missed and adds them (``counters_turn``);
* ``rl:<schema>:<window start>``: requests in the current minute.

When a month or day hash (or the storage value) is missing, because Redis
restarted or was flushed or a new month or day began, ``charge`` rebuilds it from
``UsageStat`` plus the ledger rows not yet flushed, then carries on. Each hash it
writes is a new generation (``g``), also when the other is still there, and the rows
name the generation of each hash that counted them, so the flush adds to each hash
what it lacks (``apps.usage.selectors.counters_for_rebuild``).

When Redis cannot be reached: the rate limit fails open; the quota check fails
closed (503 ``metering_unavailable``) where calls could have to stop (the free
plan, a spending cap) and open elsewhere, with the ledger row marked so the
flush adds it to Redis later; the member's calls a day and a claim fail open
with it. A charge whose rebuild fails in Redis, or whose counters are lost again
after each rebuild, is decided the same way. Usage in PostgreSQL is exact either way.

Every ticket ``charge`` returns must end in ``record`` or ``release``, whatever
fails in between: a call Redis counted and the ledger never got would stay in the
live counters for the month.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from redis.exceptions import RedisError

from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError, QuotaExceeded, RateLimited
from apps.core.templatetags.times import zoned, zoned_day_time
from apps.plans.models import fen_to_yuan
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_current
from apps.usage import ledger
from apps.usage import limits as L
from apps.usage.models import CallKind, Quota
from apps.usage.scripts import Adjustment, add_to_counters, redis_client, script

logger = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 60
MONTH_TTL_SECONDS = 70 * 24 * 3600
DAY_TTL_SECONDS = 3 * 24 * 3600
# How many times one charge rebuilds counters it finds missing before it takes them as unreachable.
REBUILDS = 2

# What the charge script answers.
OK, RATE_LIMITED, REBUILD, CALLS_EXCEEDED, STORAGE_EXCEEDED, MEMBER_EXCEEDED, CLAIMED = 0, 1, 2, 3, 4, 5, 6

# KEYS: rate, month, day, storage, then optionally a claim's key (with a claim token), then optionally a key to
# read when the call is let through
# ARGV: count_rate, rate_limit, rate_ttl, calls, calls_stop_at (-1: none), who, storage_stop_at (-1: none),
# who's calls a day (-1: none), claim token ('': none), claim ttl in ms
# Returns {status, requests in this window, calls before, calls after, storage bytes[, the counters'
# generation, the key's value]}: a call that was let through gets the generation of the counters it is in
# (the month's and the day's: apps.usage.models.UsageEvent.counted_in).
# MEMBER_EXCEEDED has who's calls of the day where the others have the month's calls after.
# Numbers go to Redis commands as the integer strings they came in (ARGV), never as Lua numbers: Redis 7.2.0
# to 7.2.4 write 100000000 as "1e+08" (and every version 10^17 as "1e+17"), which HINCRBY, EXPIRE and SET PX
# refuse (redis/redis#13113).
_CHARGE = """
local rate = -1
if ARGV[1] == '1' then
  rate = redis.call('INCR', KEYS[1])
  if rate == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  if rate > tonumber(ARGV[2]) then return {1, rate, 0, 0, 0} end
end
local n = tonumber(ARGV[4])
if n == 0 then return {0, rate, 0, 0, 0} end
local claim, get_key = ARGV[9] or '', KEYS[5]
if claim ~= '' then
  get_key = KEYS[6]
  local holder = redis.call('GET', KEYS[5])
  if holder and holder ~= claim then return {6, rate, 0, 0, 0} end
end
local used = redis.call('HGET', KEYS[2], 'calls')
local storage = redis.call('GET', KEYS[4])
if (not used) or (not storage) or redis.call('HEXISTS', KEYS[3], 'init') == 0 then
  return {2, rate, 0, 0, 0}
end
used = tonumber(used)
storage = tonumber(storage)
local storage_stop = tonumber(ARGV[7])
if storage_stop >= 0 and storage >= storage_stop then return {4, rate, used, used, storage} end
local stop = tonumber(ARGV[5])
if stop >= 0 and used + n > stop then return {3, rate, used, used, storage} end
local member_stop = tonumber(ARGV[8])
if member_stop >= 0 then
  local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[6] .. ':calls') or '0')
  if mine + n > member_stop then return {5, rate, used, mine, storage} end
end
local after = redis.call('HINCRBY', KEYS[2], 'calls', ARGV[4])
redis.call('HINCRBY', KEYS[3], ARGV[6] .. ':calls', ARGV[4])
local generation = redis.call('HGET', KEYS[2], 'g') or ''
local of_day = redis.call('HGET', KEYS[3], 'g') or ''
if of_day ~= generation then generation = generation .. '/' .. of_day end
if claim ~= '' then redis.call('SET', KEYS[5], claim, 'PX', ARGV[10]) end
if get_key then return {0, rate, used, after, storage, generation, redis.call('GET', get_key)} end
return {0, rate, used, after, storage, generation}
"""

# KEYS: a claim. ARGV: its holder's token. Gives the claim up only if that holder still has it.
_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: a claim. ARGV: its holder's token, its ttl in ms. Renews the claim only if that holder still has it.
_KEEP_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: claims. ARGV: each one's holder's token and ttl in ms, in turn. Renews each claim its holder still has.
_KEEP_CLAIMS = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[2 * i - 1] then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 0
"""

# KEYS: month, day, storage. ARGV: calls, tokens, storage bytes, month ttl, day ttl, generation, then day
# field/value pairs. Writes only what is missing, so of two processes rebuilding at once the first wins and
# the second is a no-op. Each hash it writes carries the new generation ('g').
_REBUILD_SCRIPT = """
if not redis.call('HGET', KEYS[1], 'calls') then
  redis.call('HSET', KEYS[1], 'calls', ARGV[1], 'tokens', ARGV[2], 'g', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
if redis.call('HEXISTS', KEYS[2], 'init') == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'init', '1', 'g', ARGV[6])
  for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if not redis.call('GET', KEYS[3]) then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
"""


def _prefix(schema: str) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:usage:{schema}"


def month_key(schema: str, day: dt.date) -> str:
    return f"{_prefix(schema)}:m:{day:%Y%m}"


def day_key(schema: str, day: dt.date) -> str:
    return f"{_prefix(schema)}:d:{day:%Y%m%d}"


def storage_key(schema: str) -> str:
    return f"{_prefix(schema)}:storage"


def rate_key(schema: str, window: int) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:rl:{schema}:{window}"


def who(user_id: int | None) -> str:
    return str(user_id) if user_id is not None else "k"


# How long a rebuild or a flush batch may hold a tenant's counters (the lock then expires, so a
# killed process cannot block the tenant), and how long the other waits for its turn.
COUNTERS_LOCK_SECONDS = 30
COUNTERS_WAIT_SECONDS = 5


@contextmanager
def counters_turn(schema: str) -> Iterator[bool]:
    """A rebuild of the tenant's counters and a flush's catching up of Redis take turns.

    A flush moves the calls Redis missed into usage_stats, commits, then adds them to
    Redis. A rebuild in between would read them from usage_stats and then get them a
    second time from the flush. So each holds a Redis lock (redis-py's ``Lock``) per
    tenant for its whole span. Without Redis there is nothing to rebuild or add to, and
    after waiting ``COUNTERS_WAIT_SECONDS`` for a holder that is still busy the work
    goes ahead anyway: the flush's rows must reach usage_stats, and a call must not wait
    longer for its counters. Yields whether it holds the turn.
    """
    lock = redis_client().lock(
        f"{_prefix(schema)}:lock", timeout=COUNTERS_LOCK_SECONDS, sleep=0.01, blocking_timeout=COUNTERS_WAIT_SECONDS
    )
    try:
        held = bool(lock.acquire())
    except RedisError:
        held = False
    else:
        if not held:
            logger.warning("usage counters of %s: went ahead without the lock after %d s", schema,
                           COUNTERS_WAIT_SECONDS)  # fmt: skip
    try:
        yield held
    finally:
        if held:
            try:
                lock.release()
            except RedisError:  # expired (held too long), or Redis went away: nothing left to release
                logger.warning("usage counters of %s: the lock was lost before its release", schema)


# --- The rate limit's state, for the X-RateLimit-* headers -----------------------------


@dataclass
class RateState:
    limit: int
    reset: int  # when the window ends, in Unix seconds
    remaining: int | None = None  # None: unknown (Redis unreachable)

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Reset": str(self.reset)}
        if self.remaining is not None:
            headers["X-RateLimit-Remaining"] = str(self.remaining)
        return headers


@dataclass
class Ticket:
    """One AI call that was let through and not yet recorded or released."""

    kind: str
    day: dt.date
    counted: bool  # False when Redis was unreachable as it was charged
    done: bool = False
    #: The value of ``charge``'s ``also_get`` key as stored (bytes), None if missing or not read.
    fetched: bytes | None = None
    #: The month's calls before and after this one, for a quota alert ``charge`` was told to leave.
    used: tuple[int, int] | None = None
    #: The generation of the live counters that counted the call ("" before generations).
    generation: str = ""


@dataclass(frozen=True)
class Claim:
    """A Redis key one holder at a time keeps while its calls go on: a conversation's turn.

    A meter that holds one takes it with its first charge and keeps it with each charge
    after (each sets ``ttl_ms`` anew), in the charge's round trip; while another holder
    has it, a charge raises ``refusal`` and charges nothing. ``Meter.unclaim`` gives it
    up; a holder that died loses it after ``ttl_ms``.
    """

    key: str
    token: str
    ttl_ms: int
    refusal: ApplicationError


class _Heartbeat:
    """The claims this process's meters hold (turns' holds, whose ttl is ``CHAT_TURN_HOLD_SECONDS``), renewed
    together, one round trip every third of that ttl, by a thread, for as long as they are held: a claim is kept
    while its holder lives, whatever it waits on (a model server that says nothing for minutes, a slow tool), and
    a holder that died (a worker killed, a crash) loses it within its ttl (30 s), where a ttl long enough for the
    longest wait kept a crashed turn's conversation busy for 5 minutes (QA, 2026-12-08). A claim held two minutes
    past the longest turn (``CHAT_TURN_MAX_SECONDS``; its last read may wait a read timeout more) is no longer
    renewed, and expires: its holder never gave it up.

    A claim its holder could not give up (Redis did not answer, for a moment) is given up here, at the next beat
    that reaches Redis, within its ttl: it held the conversation busy for the rest of its ttl, with no turn in
    it (QA, 2026-12-08: a 4 s ``CLIENT PAUSE`` mid-turn)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, tuple[Claim, float]] = {}
        self.to_give_up: dict[int, tuple[Claim, float]] = {}
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()  # a claim to give up: the next beat, a third of the ttl, may be too late

    def add(self, claim: Claim) -> None:
        self._keep(self.held, claim, settings.CHAT_TURN_MAX_SECONDS + 120)

    def drop(self, claim: Claim) -> None:
        with self.lock:
            self.held.pop(id(claim), None)

    def give_up_later(self, claim: Claim) -> None:
        self._keep(self.to_give_up, claim, claim.ttl_ms / 1000)
        self.wake.set()

    def _keep(self, claims: dict[int, tuple[Claim, float]], claim: Claim, seconds: float) -> None:
        with self.lock:
            claims[id(claim)] = (claim, time.monotonic() + seconds)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="claims-heartbeat", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            if self.wake.wait(settings.CHAT_TURN_HOLD_SECONDS / 3):
                self.wake.clear()
                time.sleep(1)  # Redis failed just now: give it a moment
            with self.lock:
                now = time.monotonic()
                self.held = {at: (claim, until) for at, (claim, until) in self.held.items() if until > now}
                self.to_give_up = {at: (claim, until) for at, (claim, until) in self.to_give_up.items() if until > now}
                claims = [claim for claim, _until in self.held.values()]
                leftover = [claim for claim, _until in self.to_give_up.values()]
            if claims:
                self._renew(claims)
            if leftover and self._give_up(leftover):
                with self.lock:
                    for claim in leftover:
                        self.to_give_up.pop(id(claim), None)

    @staticmethod
    def _give_up(claims: list[Claim]) -> bool:
        try:
            unclaim = script("unclaim", _UNCLAIM, redis_client())
            for claim in claims:
                unclaim(keys=[claim.key], args=[claim.token])
        except RedisError:
            return False
        return True

    @staticmethod
    def _renew(claims: list[Claim]) -> None:
        args: list[Any] = []
        for claim in claims:
            args += [claim.token, claim.ttl_ms]
        try:
            script("keep_claims", _KEEP_CLAIMS, redis_client())(keys=[claim.key for claim in claims], args=args)
        except RedisError:
            logger.warning("%d claims were not renewed: Redis is unreachable", len(claims))


_heartbeat = _Heartbeat()


@dataclass
class Meter:
    """Meters one request (or task) of one tenant: rate limit, quota checks and usage records.

    ``count_rate``: the request still has to be counted against the rate limit,
    which the first ``charge`` does in the same round trip (``hit_rate`` otherwise).
    """

    tenant: Tenant
    user_id: int | None
    api_key_id: int | None
    count_rate: bool = False
    rate: RateState | None = None
    #: Taken and kept by this meter's charges (see Claim).
    claim: Claim | None = None
    #: A charge took the claim: ``unclaim`` has something to give up.
    claim_held: bool = False
    #: Calls this meter wrote to the ledger: charged for good, whatever happens to the request after.
    recorded: int = 0
    limits: L.Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = L.limits_for(self.tenant)

    @classmethod
    def for_actor(cls, actor: Actor, *, count_rate: bool = False, tenant: Tenant | None = None) -> Meter:
        """A meter for ``actor``'s work in ``tenant`` (by default the connection's)."""
        return cls(
            tenant=tenant or tenant_current(),
            user_id=actor.user.pk if actor.user is not None else None,
            api_key_id=actor.api_key.pk if actor.api_key is not None else None,
            count_rate=count_rate,
        )

    @classmethod
    def for_request(cls, request: HttpRequest | Any, actor: Actor) -> Meter:
        """The request's meter: it still has to count the request against the rate limit."""
        tenant = getattr(request, "tenant", None)
        return cls.for_actor(actor, count_rate=True, tenant=tenant if isinstance(tenant, Tenant) else None)

    @property
    def schema(self) -> str:
        return self.tenant.schema_name

    # --- Rate limit ----------------------------------------------------------------

    def _window(self) -> tuple[str, int, int]:
        now = int(time.time())
        start = now - now % RATE_WINDOW_SECONDS
        return rate_key(self.schema, start), start + RATE_WINDOW_SECONDS, RATE_WINDOW_SECONDS + 5

    def hit_rate(self, *, enforce: bool = True) -> None:
        """Count this request against the tenant's per-minute rate (one round trip)."""
        if not self.count_rate:
            return
        self._run(calls=0, enforce_rate=enforce)

    # --- Calls ---------------------------------------------------------------------

    def charge(self, kind: str = CallKind.MODEL, *, also_get: str | None = None, alert: bool = True) -> Ticket:
        """Take one AI call from the tenant's month, or raise RateLimited / QuotaExceeded.

        Call it before the work it pays for, then ``record`` or ``release`` the ticket.
        ``also_get``: a Redis key whose value the call needs, read in the same round
        trip into ``ticket.fetched``. ``alert=False`` leaves the quota alerts the call
        may cross to ``confirm``, for a caller that may still refuse the call.
        """
        day = L.today()
        status, used_before, used_after, storage, generation, fetched = self._charged(day, also_get)
        if status is None:
            return Ticket(kind=kind, day=day, counted=False)
        if status == STORAGE_EXCEEDED:
            raise self._storage_exceeded(storage, day)
        if status == CALLS_EXCEEDED:
            raise self._calls_exceeded(used_before, day)
        if status == MEMBER_EXCEEDED:
            raise self._member_exceeded(used_after, day)
        if status == CLAIMED and self.claim is not None:
            raise self.claim.refusal
        if self.claim is not None and not self.claim_held:
            _heartbeat.add(self.claim)
        self.claim_held = self.claim is not None
        ticket = Ticket(kind=kind, day=day, counted=True, fetched=fetched, generation=generation)
        if alert:
            try:
                self._alert_calls(used_before, used_after, day)
            except BaseException:  # the caller gets no ticket to record or release: the call is given back here
                self.release(ticket)
                raise
        else:
            ticket.used = (used_before, used_after)
        return ticket

    def confirm(self, ticket: Ticket) -> None:
        """The call charged with ``alert=False`` goes ahead: raise the quota alerts it crossed."""
        if ticket.used is not None:
            used_before, used_after = ticket.used
            ticket.used = None
            self._alert_calls(used_before, used_after, ticket.day)

    def record(self, ticket: Ticket, tokens: int = 0) -> None:
        """The call happened: write it, with its tokens, to the ledger.

        Returns once the ledger row is committed. Calls that end at the same time share
        one ``INSERT`` (``apps.usage.ledger``); the ledger row is the only database work
        metering adds to a request, and the tokens reach Redis with the next flush.
        When the row cannot be written (``LedgerWriteError``, a database error) the call
        is given back in Redis, as ``release`` does, and the error raised: no call is
        counted that the ledger, and so the invoice, does not have.
        """
        if ticket.done:
            return
        ticket.done = True
        row = ledger.Row(
            schema=self.schema, user_id=self.user_id, api_key_id=self.api_key_id, kind=ticket.kind,
            tokens=max(0, tokens), day=ticket.day, counted_calls=ticket.counted,
            counted_in=ticket.generation if ticket.counted else "",
        )  # fmt: skip
        try:
            ledger.write(row)
        except Exception:
            # No ledger row, so no call: Redis gives it back too, and the two agree (the caller gets the error).
            ticket.done = False
            self.release(ticket)
            raise
        self.recorded += 1

    def keep_claim(self) -> None:
        """Renew this meter's claim for its ttl if it still has it (one round trip): a turn whose answer goes on
        for longer than the ttl keeps its conversation. Without a claim, nothing; with Redis unreachable the next
        charge renews it, as it would have taken it."""
        claim = self.claim
        if claim is None or not self.claim_held:
            return
        try:
            script("keep_claim", _KEEP_CLAIM, redis_client())(keys=[claim.key], args=[claim.token, claim.ttl_ms])
        except RedisError:
            logger.warning("a claim of %s was not renewed: Redis is unreachable", self.schema)

    def unclaim(self) -> None:
        """Give up this meter's claim if it still has it (one round trip); the claim's ttl ends it otherwise.
        A claim no charge took (refused first, or Redis unreachable) costs nothing to drop."""
        claim, held, self.claim, self.claim_held = self.claim, self.claim_held, None, False
        if claim is None or not held:
            return
        _heartbeat.drop(claim)
        try:
            script("unclaim", _UNCLAIM, redis_client())(keys=[claim.key], args=[claim.token])
        except RedisError:
            logger.warning("a claim of %s is given up later: Redis is unreachable", self.schema)
            _heartbeat.give_up_later(claim)

    def release(self, ticket: Ticket) -> None:
        """The call did not happen (the model server failed): give it back."""
        if ticket.done:
            return
        ticket.done = True
        if not ticket.counted:
            return
        try:
            # Only to counters that exist and counted it: one that is missing is rebuilt from PostgreSQL
            # anyway, and counters rebuilt since (another generation) never had it.
            given_back = Adjustment(
                month=month_key(self.schema, ticket.day), day=day_key(self.schema, ticket.day),
                who=who(self.user_id), generation=ticket.generation, if_same_calls=-1,
            )  # fmt: skip
            add_to_counters([given_back])
        except RedisError:
            logger.warning("a released call of %s stays counted in Redis until its next rebuild", self.schema)

    # --- Storage -------------------------------------------------------------------

    def check_storage(self) -> None:
        """For writes that add data: refuse them once a hard-stop plan's storage is full."""
        stop = self.limits.storage_stop_at
        if stop is None:
            return
        from apps.usage.selectors import storage_used

        used = storage_used(self.tenant)
        if used >= stop:
            raise self._storage_exceeded(used, L.today())

    # --- Internals -----------------------------------------------------------------

    def _run(
        self, *, calls: int, enforce_rate: bool, day: dt.date | None = None, also_get: str | None = None
    ) -> tuple[int | None, int, int, int, str, bytes | None]:
        """Run the charge script: status, calls before and after, storage, the counters' generation, the
        ``also_get`` value. None as the status means Redis was unreachable and the check failed open."""
        day = day or L.today()
        key, reset, ttl = self._window()
        count_rate = self.count_rate
        limit = self.limits.rate_per_minute
        stop = self.limits.calls_stop_at
        storage_stop = self.limits.storage_stop_at
        # A member's own calls only: API keys are no member's.
        member_stop = self.limits.member_daily_calls if self.user_id is not None else None
        claim = self.claim if calls else None
        try:
            reply = script("charge", _CHARGE, redis_client())(
                keys=[key, month_key(self.schema, day), day_key(self.schema, day), storage_key(self.schema),
                      *([claim.key] if claim else []), *([also_get] if also_get else [])],
                args=[
                    "1" if count_rate else "0", limit, ttl, calls, -1 if stop is None else stop, who(self.user_id),
                    -1 if storage_stop is None else storage_stop, -1 if member_stop is None else member_stop,
                    claim.token if claim else "", claim.ttl_ms if claim else 0,
                ],
            )  # fmt: skip
        except RedisError:
            self.count_rate = False
            if count_rate:
                self.rate = RateState(limit=limit, reset=reset)
                logger.warning("rate limit of %s not checked: Redis is unreachable (fail open)", self.schema)
            if calls:
                self._unchecked("Redis is unreachable")
            return None, 0, 0, 0, "", None
        status, requests, before, after, storage = (int(v) for v in reply[:5])
        if count_rate:
            self.count_rate = False
            self.rate = RateState(limit=limit, reset=reset, remaining=max(0, limit - requests))
            if status == RATE_LIMITED and enforce_rate:
                raise RateLimited(retry_after=max(1, reset - int(time.time())))
        generation = reply[5].decode() if len(reply) > 5 else ""
        return status, before, after, storage, generation, reply[6] if len(reply) > 6 else None

    def _charged(self, day: dt.date, also_get: str | None) -> tuple[int | None, int, int, int, str, bytes | None]:
        """Run the charge script for one call; while it finds counters missing, rebuild them and run it again.

        At most ``REBUILDS`` times: counters lost again each time (evicted under memory pressure, flushed
        over and over) or a rebuild that fails in Redis leave the call unchecked, as when Redis cannot be
        reached: the quota fails closed or open (``_unchecked``) and a call let through is not counted in
        Redis, so its ledger row tells the flush to add it.
        """
        for attempt in range(REBUILDS + 1):
            reply = self._run(calls=1, enforce_rate=True, day=day, also_get=also_get)
            if reply[0] != REBUILD:
                return reply
            if attempt == REBUILDS:
                self._unchecked(f"its counters were still missing after {REBUILDS} rebuilds")
                break
            try:
                self.rebuild(day)
            except RedisError:
                self._unchecked("Redis failed while its counters were rebuilt")
                break
        return None, 0, 0, 0, "", None

    def _unchecked(self, why: str) -> None:
        """A call's quota could not be checked in Redis: refuse it (503 ``metering_unavailable``) where calls
        may have to stop at the quota (the free plan, a spending cap), else let it through uncounted."""
        if self.limits.calls_stop_at is not None or self.limits.storage_stop_at is not None:
            logger.warning("quota of %s not checked: %s (fail closed)", self.schema, why)
            raise ApplicationError(
                _("Usage metering is unavailable for a moment. Try again shortly."),
                code="metering_unavailable", status_code=503, headers={"Retry-After": "5"},
            ) from None  # fmt: skip
        logger.warning("quota of %s not checked: %s (fail open)", self.schema, why)

    def rebuild(self, day: dt.date) -> None:
        """Restore missing counters from PostgreSQL: usage_stats plus the ledger not yet flushed.

        Only what is missing is written, so of the workers whose charges all found the
        counters missing (a new month or day, Redis emptied) the first rebuilds them and
        the others change nothing (``counters_for_rebuild`` says what each writes).
        A hash written anew, the month's, the day's or both, is a new generation: calls
        counted in the lost one and still in flight are not in it, and their ledger rows,
        which name the old generation, tell the flush to add them to it, and only to it
        (docs/architecture.md).
        """
        from apps.usage.selectors import counters_for_rebuild

        month, today = month_key(self.schema, day), day_key(self.schema, day)
        client = redis_client()
        with counters_turn(self.schema) as held:  # not between a flush's commit and its adding to Redis
            # Which counters are missing. In the turn no other rebuild can write them before this
            # one's script does; without it (a holder that took too long) one may: nothing is marked.
            with client.pipeline(transaction=False) as pipe:
                pipe.hexists(month, "calls")
                pipe.hexists(today, "init")
                month_there, day_there = pipe.execute()
            # 7 characters: a row names at most two generations, "<month's>/<day's>", in 16 (before
            # this, 8: at most one of the two is one of those).
            generation = secrets.token_urlsafe(5)
            snapshot = counters_for_rebuild(
                day, generation=generation, month=not month_there, today=not day_there, mark=held
            )
            pairs: list[Any] = []
            for user_id, (calls, tokens) in snapshot.day.items():
                pairs += [f"{who(user_id)}:calls", calls, f"{who(user_id)}:tokens", tokens]
            script("rebuild", _REBUILD_SCRIPT, client)(
                keys=[month, today, storage_key(self.schema)],
                args=[snapshot.calls, snapshot.tokens, snapshot.storage_bytes, MONTH_TTL_SECONDS, DAY_TTL_SECONDS,
                      generation, *pairs],
            )  # fmt: skip
        logger.info("usage counters of %s rebuilt from the database for %s", self.schema, day)

    def _calls_exceeded(self, used: int, day: dt.date) -> QuotaExceeded:
        limits = self.limits
        assert limits.calls_stop_at is not None
        # limit and used count calls either way (the cap's limit: the quota and the calls the cap pays for).
        resets = L.resets_at(day)
        details: dict[str, Any] = {"limit": limits.calls_stop_at, "used": used, "resets_at": L.iso(resets)}
        # The moment calls come back, named in the workspace's zone as the banner does ("2027-01-01 08:00 UTC+8"):
        # "this month" alone read wrong where the month already changed (04:00 on the 1st in China).
        at = zoned(resets)
        # Words, not text: a turn stopped by it stores the message in each language (apps.core.languages).
        if limits.bills_overage:  # the cap stopped it, also a cap below one call's price (no overage at all)
            message = partial(_cap_reached_words, limits.spending_cap_fen or 0, at)
            details = {"quota": "spending_cap", **details, "spending_cap_fen": limits.spending_cap_fen,
                       "overage_fen": limits.overage_fen(used)}  # fmt: skip
        else:
            message = partial(_calls_used_up_words, limits.api_calls or 0, at)
            details = {"quota": Quota.API_CALLS.value, **details}
        return QuotaExceeded(message, details=details)

    def _member_exceeded(self, used: int, day: dt.date) -> QuotaExceeded:
        limit = self.limits.member_daily_calls
        assert limit is not None
        resets = L.day_resets_at(day)
        # The UTC day ends at 08:00 in China: tomorrow before midnight there and today after it.
        return QuotaExceeded(
            partial(_member_limit_words, limit, resets),
            details={"quota": "member_daily_calls", "limit": limit, "used": used, "resets_at": L.iso(resets)},
        )

    def _storage_exceeded(self, used: int, day: dt.date) -> QuotaExceeded:
        limit = self.limits.storage_bytes or 0
        return QuotaExceeded(
            lambda: (
                # Grouped as the other refusals' numbers ("10,240 MB"); "the workspace's": it may be an override.
                _("The workspace's %(limit)s MB of storage is used up. Delete conversations or change plans.")
                % {"limit": formats.number_format(limit // L.MB, force_grouping=True)}
            ),
            details={"quota": Quota.STORAGE.value, "limit": limit, "used": used, "resets_at": None},
        )

    def _alert_calls(self, before: int, after: int, day: dt.date) -> None:
        """The alerts a call taking the month from ``before`` to ``after`` calls crossed: 80, 90 and 100 % of the
        quota, and the spending cap once it stops calls."""
        limit = self.limits.api_calls
        thresholds = L.crossed(limit, before, after)
        if thresholds:
            from apps.usage.services import quota_alerts_raise  # only then: this runs with every call

            assert limit is not None
            quota_alerts_raise(quota=Quota.API_CALLS, limit=limit, used=after, thresholds=thresholds, day=day)
        stop = self.limits.calls_stop_at
        if stop is not None and before < stop <= after:
            from apps.usage.services import spending_cap_alert

            spending_cap_alert(limits=self.limits, used=after, day=day)


def _cap_reached_words(cap_fen: int, at: str) -> str:
    return _(
        "This month's overage reached your spending cap of ¥%(cap)s. Raise the cap to continue, or calls resume "
        "from %(time)s."
    ) % {"cap": fen_to_yuan(cap_fen), "time": at}


def _calls_used_up_words(limit: int, at: str) -> str:
    # "The workspace's", not "your plan's": the quota may be a staff override of the plan's.
    return ngettext(
        "The workspace's %(limit)s API call this month is used up. More from %(time)s.",
        "The workspace's %(limit)s API calls this month are used up. More from %(time)s.",
        limit,
    ) % {"limit": formats.number_format(limit, force_grouping=True), "time": at}


def _member_limit_words(limit: int, resets: dt.datetime) -> str:
    # When, in the workspace's time zone, named, and on which day there ("08:00 UTC+8 tomorrow (2026-12-08)"), as
    # the usage page says it.
    return ngettext(
        "You have made the %(limit)s AI call a day your workspace's admins allow each member. More from %(when)s.",
        "You have made the %(limit)s AI calls a day your workspace's admins allow each member. More from %(when)s.",
        limit,
    ) % {"limit": formats.number_format(limit, force_grouping=True), "when": zoned_day_time(resets)}
