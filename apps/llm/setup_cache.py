"""The tenant's model provider, MCP services and assistant instructions, as every chat turn needs them,
cached in Redis.

A chat turn's time to first token is spent mostly before the model is called,
so the two rows every turn reads (the provider and the active MCP services with
their cached tools) are kept in the tenant-aware cache and read in one round
trip, or none: a metered turn reads the entry in the round trip that charges
its call (``ai_setup_key`` for ``Meter.charge(also_get=...)``, then
``ai_setup(prefetched=...)``). Every service that changes either calls
``ai_setup_forget()``, which drops the entry at once and again after commit.

It is only a cache of PostgreSQL: while Redis is unreachable every turn reads
the two tables instead (fail open). A change made during an outage can be
missed by the cache for at most ``_SECONDS`` after Redis returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from apps.llm.models import AssistantSettings, ModelProvider
from apps.mcp.models import McpService

logger = logging.getLogger(__name__)

_KEY = "ai-setup:v2"  # v2: with the instructions
_REDIS_DOWN = (ConnectionInterrupted, RedisError)
_SECONDS = 300


@dataclass(frozen=True)
class AiSetup:
    provider: ModelProvider | None
    services: list[McpService]
    instructions: str = ""  # the admins' instructions to the model (AssistantSettings)


def ai_setup_key() -> str:
    """The current tenant's entry, as the Redis key the cache stores it under."""
    return str(cache.client.make_key(_KEY))  # type: ignore[attr-defined]


def ai_setup(prefetched: bytes | None = None) -> AiSetup:
    """The active provider (None: the platform's) and the active services that have tools.

    ``prefetched``: the entry as already read from Redis (``ai_setup_key``); when it
    holds none, the cache is read as usual.
    """
    if prefetched is not None:
        value: Any = cache.client.decode(prefetched)  # type: ignore[attr-defined]
        if isinstance(value, AiSetup):
            return value
    try:
        cached: Any = cache.get(_KEY)
    except _REDIS_DOWN:
        logger.warning("AI setup read from PostgreSQL: Redis is unreachable")
        return _read()
    if isinstance(cached, AiSetup):
        return cached
    setup = _read()
    try:
        cache.set(_KEY, setup, _SECONDS)
    except _REDIS_DOWN:
        logger.warning("AI setup not cached: Redis is unreachable")
    return setup


def ai_setup_forget() -> None:
    """Call after any change to the provider or the services of the current tenant."""
    _delete()
    transaction.on_commit(_delete)


def _read() -> AiSetup:
    return AiSetup(
        provider=ModelProvider.objects.filter(is_active=True).first(),
        services=list(McpService.objects.filter(is_active=True).exclude(tools=[]).order_by("name", "id")),
        instructions=AssistantSettings.objects.values_list("instructions", flat=True).first() or "",
    )


def _delete() -> None:
    try:
        cache.delete(_KEY)
    except _REDIS_DOWN:
        logger.warning("AI setup cache not cleared: Redis is unreachable; it expires within %s s", _SECONDS)
