"""Times as the pages and emails show them: in the server's zone (``TIME_ZONE``), which they name, as the
usage pages count by UTC days and months and a reader may be anywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import dateformat, timezone
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def zoned(value: Any, format: str = "Y-m-d H:i") -> str:
    """``value`` (an aware datetime) in the current time zone, in ``format``, then the zone's offset:
    ``2026-12-07 10:13 UTC+8``. Nothing for no value."""
    if not isinstance(value, dt.datetime):
        return ""
    local = timezone.localtime(value)
    return f"{dateformat.format(local, format)} {zone_label(local)}"


@register.filter
def zoned_day_time(value: Any) -> str:
    """``value`` (an aware datetime) as a time of day that names the day in the current time zone:
    "08:00 UTC+8 today (2026-12-07)", "… tomorrow (…)", else "2026-12-09 08:00 UTC+8", as the member limit's
    402 says when it ends (apps.usage.meter); the time alone read as either day. Nothing for no value."""
    if not isinstance(value, dt.datetime):
        return ""
    date = timezone.localdate(value)
    words = {"time": zoned(value, "H:i"), "date": date.isoformat()}
    days_ahead = (date - timezone.localdate()).days
    if days_ahead == 0:
        return _("%(time)s today (%(date)s)") % words
    if days_ahead == 1:
        return _("%(time)s tomorrow (%(date)s)") % words
    return zoned(value)


def zone_label(local: dt.datetime) -> str:
    """``UTC``, ``UTC+8``, ``UTC-3:30``: the offset of ``local``, which a zone's abbreviation ("CST") is not."""
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
