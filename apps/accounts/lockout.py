"""Brute-force protection: count failures, and refuse once there were too many.

Failures are counted in Redis per subject: (tenant, email) and IP address for
logins, IP address for API-key guesses, (tenant, email) and IP address for
password-reset requests. A subject with LOCKOUT_ATTEMPTS failures inside
LOCKOUT_WINDOW_SECONDS (counted from its first failure) is locked until that
window ends, and every attempt meanwhile gets 429 with Retry-After, even with
the right password.

If Redis is unreachable the check fails open (logged): locking everyone out of
their workspace would be worse than an unthrottled minute of guessing, which
Argon2 hashing still slows down.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from apps.core.exceptions import RateLimited

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """One thing failures are counted against."""

    kind: str  # "login", "apikey" or "reset"
    scope: str  # a tenant schema, or "*" for every tenant (IP counters)
    value: str  # an email or an IP address

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.value.strip().lower().encode()).hexdigest()[:32]
        return f"{settings.CACHE_KEY_PREFIX}:lockout:{self.kind}:{self.scope}:{digest}"


def _redis() -> Any:
    return get_redis_connection("default")


def check(subjects: list[Subject]) -> None:
    """Raise RateLimited if any subject is locked. One Redis round trip."""
    if not subjects:
        return
    try:
        pipe = _redis().pipeline(transaction=False)
        for subject in subjects:
            pipe.get(subject.key)
            pipe.ttl(subject.key)
        replies = pipe.execute()
    except RedisError:
        logger.warning("lockout check skipped: Redis is unreachable")
        return
    for count, ttl in zip(replies[::2], replies[1::2], strict=True):
        if count is not None and int(count) >= settings.LOCKOUT_ATTEMPTS:
            raise RateLimited(retry_after=max(int(ttl), 1))


def record_failure(subjects: list[Subject]) -> bool:
    """Count one failure for each subject; True if that locked one of them. One round trip."""
    try:
        pipe = _redis().pipeline(transaction=True)
        for subject in subjects:
            # The window starts at the first failure (SET NX); INCR keeps its expiry.
            # Redis 6.2 (the embedded server) has no EXPIRE ... NX.
            pipe.set(subject.key, 0, ex=settings.LOCKOUT_WINDOW_SECONDS, nx=True)
            pipe.incr(subject.key)
        replies = pipe.execute()
    except RedisError:
        logger.warning("lockout failure not counted: Redis is unreachable")
        return False
    return any(int(count) == settings.LOCKOUT_ATTEMPTS for count in replies[1::2])


def clear(subjects: list[Subject]) -> None:
    """Forget the failures of subjects that just proved themselves (a successful login)."""
    try:
        _redis().delete(*[subject.key for subject in subjects])
    except RedisError:
        logger.warning("lockout reset skipped: Redis is unreachable")


def login_subjects(*, schema: str, email: str, ip: str | None) -> list[Subject]:
    subjects = [Subject("login", schema, email)]
    if ip:
        subjects.append(Subject("login-ip", "*", ip))
    return subjects


def reset_subjects(*, schema: str, email: str, ip: str | None) -> list[Subject]:
    subjects = [Subject("reset", schema, email)]
    if ip:
        subjects.append(Subject("reset-ip", "*", ip))
    return subjects


def api_key_subjects(*, ip: str | None) -> list[Subject]:
    return [Subject("apikey-ip", "*", ip)] if ip else []
