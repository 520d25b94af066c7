"""The Redis that holds the live usage counters, and the Lua scripts run on it."""

from __future__ import annotations

from typing import Any

from django_redis import get_redis_connection

_scripts: dict[str, Any] = {}

# KEYS: a month hash and a day hash per group. ARGV: per group, who ("<user id>" or "k"), calls, tokens.
# Adds only to whole hashes (the month's has 'calls', the day's has 'init'): one that is missing is
# rebuilt from PostgreSQL, which already has what is added here, so adding to it would count twice.
_ADD = """
for g = 1, #KEYS / 2 do
  local month, day = KEYS[2 * g - 1], KEYS[2 * g]
  local who, calls, tokens = ARGV[3 * g - 2], tonumber(ARGV[3 * g - 1]), tonumber(ARGV[3 * g])
  if redis.call('HGET', month, 'calls') then
    if calls ~= 0 then redis.call('HINCRBY', month, 'calls', calls) end
    if tokens ~= 0 then redis.call('HINCRBY', month, 'tokens', tokens) end
  end
  if redis.call('HEXISTS', day, 'init') == 1 then
    if calls ~= 0 then redis.call('HINCRBY', day, who .. ':calls', calls) end
    if tokens ~= 0 then redis.call('HINCRBY', day, who .. ':tokens', tokens) end
  end
end
return 1
"""


def redis_client() -> Any:
    return get_redis_connection("default")


def script(name: str, source: str, client: Any) -> Any:
    """Run a Lua script on ``client``: EVALSHA, falling back to EVAL once per Redis start."""
    if name not in _scripts:
        _scripts[name] = client.register_script(source)
    registered = _scripts[name]
    return lambda *, keys, args: registered(keys=keys, args=args, client=client)


def add_to_counters(counts: dict[tuple[str, str, str], tuple[int, int]]) -> None:
    """Add (calls, tokens) to the counters of each (month key, day key, who) that exist: one round trip."""
    keys: list[str] = []
    args: list[Any] = []
    for (month, day, who), (calls, tokens) in counts.items():
        keys += [month, day]
        args += [who, calls, tokens]
    script("add", _ADD, redis_client())(keys=keys, args=args)
