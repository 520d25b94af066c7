"""Times on the pages name their zone: the usage pages count by UTC days, the others show the server's zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.core.templatetags.times import zoned


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Asia/Shanghai", "2026-12-07 10:13 UTC+8"),
        ("UTC", "2026-12-07 02:13 UTC"),
        ("Asia/Kolkata", "2026-12-07 07:43 UTC+5:30"),
        ("America/St_Johns", "2026-12-06 22:43 UTC-3:30"),
    ],
)
def test_a_time_is_shown_in_the_zone_it_names(zone: str, expected: str) -> None:
    moment = dt.datetime(2026, 12, 7, 2, 13, tzinfo=dt.UTC)
    with override_settings(TIME_ZONE=zone), timezone.override(zoneinfo.ZoneInfo(zone)):
        assert zoned(moment) == expected
    assert zoned(None) == ""


def test_a_time_of_day_names_its_zone_too() -> None:
    midnight_utc = dt.datetime(2026, 12, 8, 0, 0, tzinfo=dt.UTC)
    with timezone.override(zoneinfo.ZoneInfo("Asia/Shanghai")):
        assert zoned(midnight_utc, "H:i") == "08:00 UTC+8"
