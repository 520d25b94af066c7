"""A thin layer over django-ratelimit that answers with Retry-After."""

from __future__ import annotations

import logging

from django.http import HttpRequest
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from apps.core.exceptions import RateLimited

logger = logging.getLogger(__name__)


def enforce_rate_limit(request: HttpRequest, *, group: str, key: str, rate: str, fail_open: bool) -> None:
    """Count this request against ``rate`` for ``key``; raise RateLimited once over it.

    ``fail_open`` decides what happens when Redis cannot be reached: let the
    request through (and log it), or refuse it with 429 and a short Retry-After.
    """
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
    except RedisError:
        logger.warning("rate limit %s unavailable: Redis is down; failing %s", group, "open" if fail_open else "closed")
        if fail_open:
            return
        raise RateLimited(retry_after=5) from None
    if usage is not None and usage["should_limit"]:
        raise RateLimited(retry_after=usage["time_left"])
