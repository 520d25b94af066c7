"""The Redis that holds the live usage counters, and the Lua scripts run on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_redis import get_redis_connection

_scripts: dict[str, Any] = {}

# KEYS: a month hash and a day hash per group. ARGV: per group, who ("<user id>" or "k"), generation, calls,
# tokens, calls and tokens if the hash's generation is another, calls if it is the same (see Adjustment).
# The generation names each hash's: "<month's>/<day's>", or one name for both (apps.usage.models.UsageEvent).
# Adds only to whole hashes (the month's has 'calls', the day's has 'init'): one that is missing is
# rebuilt from PostgreSQL, which already has what is added here, so adding to it would count twice.
# The sums go to HINCRBY as integer strings ('%d'), not as Lua numbers: Redis 7.2.0 to 7.2.4 write 100000000 as
# "1e+08" (and every version 10^17 as "1e+17"), which HINCRBY refuses as not an integer (redis/redis#13113).
_ADD = """
local function add(hash, present, calls_field, tokens_field, generation, calls, tokens, other_calls, other_tokens,
                   same_calls)
  if not present then return end
  if (redis.call('HGET', hash, 'g') or '') == generation then
    calls = calls + same_calls
  else
    calls, tokens = calls + other_calls, tokens + other_tokens
  end
  if calls ~= 0 then redis.call('HINCRBY', hash, calls_field, string.format('%d', calls)) end
  if tokens ~= 0 then redis.call('HINCRBY', hash, tokens_field, string.format('%d', tokens)) end
end
for g = 1, #KEYS / 2 do
  local month, day, a = KEYS[2 * g - 1], KEYS[2 * g], 7 * (g - 1)
  local who, generation = ARGV[a + 1], ARGV[a + 2]
  local of_month, of_day = string.match(generation, '^([^/]*)/(.*)$')
  if not of_month then of_month, of_day = generation, generation end
  local n = {tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]),
             tonumber(ARGV[a + 7])}
  add(month, redis.call('HGET', month, 'calls'), 'calls', 'tokens', of_month, n[1], n[2], n[3], n[4], n[5])
  add(day, redis.call('HEXISTS', day, 'init') == 1, who .. ':calls', who .. ':tokens', of_day, n[1], n[2],
      n[3], n[4], n[5])
end
return 1
"""


@dataclass(frozen=True)
class Adjustment:
    """What to add to the live counters of one (month, day, who), wherever they exist.

    ``calls`` and ``tokens`` are added to any generation of the counters. The
    ``if_other_*`` parts are what counters of ``generation`` counted already: added
    only to counters of another generation (rebuilt since, without them). ``if_same_calls``
    only to counters of ``generation``: a call given back leaves only the counters
    that counted it. The month's and the day's hash are each compared with their own
    part of ``generation`` (``apps.usage.models.UsageEvent.counted_in``).
    """

    month: str
    day: str
    who: str
    generation: str = ""
    calls: int = 0
    tokens: int = 0
    if_other_calls: int = 0
    if_other_tokens: int = 0
    if_same_calls: int = 0


def redis_client() -> Any:
    return get_redis_connection("default")


def script(name: str, source: str, client: Any) -> Any:
    """Run a Lua script on ``client``: EVALSHA, falling back to EVAL once per Redis start."""
    if name not in _scripts:
        _scripts[name] = client.register_script(source)
    registered = _scripts[name]
    return lambda *, keys, args: registered(keys=keys, args=args, client=client)


def add_to_counters(adjustments: list[Adjustment]) -> None:
    """Apply ``adjustments`` to the counters that exist: one round trip."""
    keys: list[str] = []
    args: list[Any] = []
    for a in adjustments:
        keys += [a.month, a.day]
        args += [a.who, a.generation, a.calls, a.tokens, a.if_other_calls, a.if_other_tokens, a.if_same_calls]
    script("add", _ADD, redis_client())(keys=keys, args=args)
