"""The Redis that holds the live usage counters, and the Lua scripts run on it."""

from __future__ import annotations

from typing import Any

from django_redis import get_redis_connection

_scripts: dict[str, Any] = {}


def redis_client() -> Any:
    return get_redis_connection("default")


def script(name: str, source: str, client: Any) -> Any:
    """Run a Lua script on ``client``: EVALSHA, falling back to EVAL once per Redis start."""
    if name not in _scripts:
        _scripts[name] = client.register_script(source)
    registered = _scripts[name]
    return lambda *, keys, args: registered(keys=keys, args=args, client=client)
