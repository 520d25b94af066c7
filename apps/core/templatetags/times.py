"""Times as the pages and emails show them: in the server's zone (``TIME_ZONE``), which they name, as the
usage pages count by UTC days and months and a reader may be anywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import dateformat, timezone

register = template.Library()


@register.filter
def zoned(value: Any, format: str = "Y-m-d H:i") -> str:
    """``value`` (an aware datetime) in the current time zone, in ``format``, then the zone's offset:
    ``2026-12-07 10:13 UTC+8``. Nothing for no value."""
    if not isinstance(value, dt.datetime):
        return ""
    local = timezone.localtime(value)
    return f"{dateformat.format(local, format)} {zone_label(local)}"


def zone_label(local: dt.datetime) -> str:
    """``UTC``, ``UTC+8``, ``UTC-3:30``: the offset of ``local``, which a zone's abbreviation ("CST") is not."""
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
