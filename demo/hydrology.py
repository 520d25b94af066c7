"""Synthetic, deterministic hydrology data for the demo MCP server.

Everything here is a pure function of its arguments: no clock, no randomness (the
MCP server passes the current time as ``until``, so no reading is from the future).
"Noise" comes from a SHA-256 hash of the station id and the timestamp, so the
same question always gets the same answer, on every machine.

Water levels are ``base + seasonal + daily + noise`` where the seasonal term
peaks in mid-July (the flood season), the daily term is a small sine and the
noise is bounded. Warning levels sit above the highest level the generator can
ever produce, so the demo never cries wolf.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypedDict

MAX_RANGE_DAYS = 31
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class HydrologyError(ValueError):
    """A request the data layer refuses: unknown station, bad date, bad range."""


@dataclass(frozen=True)
class Station:
    """A gauging station and the parameters of its synthetic signal."""

    id: str
    name: str
    river: str
    latitude: float
    longitude: float
    elevation_m: float
    base_level_m: float
    seasonal_amplitude_m: float
    daily_amplitude_m: float
    noise_m: float
    mean_rain_mm: float


class StationInfo(TypedDict):
    """What ``list_stations`` tells about a station."""

    id: str
    name: str
    river: str
    latitude: float
    longitude: float
    elevation_m: float


class StationList(TypedDict):
    """The result of ``list_stations``."""

    count: int
    stations: list[StationInfo]


class WaterLevelReading(TypedDict):
    """One hourly reading."""

    time: str
    level_m: float


class WaterLevelSeries(TypedDict):
    """Hourly water levels of one station over a date range."""

    station: str
    station_name: str
    unit: str
    start: str
    end: str
    readings: list[WaterLevelReading]


class RainfallDay(TypedDict):
    """One daily rainfall total."""

    date: str
    rainfall_mm: float


class RainfallSeries(TypedDict):
    """Daily rainfall totals of one station over a date range."""

    station: str
    station_name: str
    unit: str
    start: str
    end: str
    total_mm: float
    daily: list[RainfallDay]


class FloodWarningLevels(TypedDict):
    """The flood thresholds of one station."""

    station: str
    station_name: str
    unit: str
    warning_level_m: float
    guarantee_level_m: float
    historical_max_m: float


STATIONS: dict[str, Station] = {
    s.id: s
    for s in (
        Station("S001", "长江·寸滩站", "长江", 29.6167, 106.6000, 158.0, 168.5, 3.5, 0.25, 0.12, 12.0),
        Station("S002", "长江·宜昌站", "长江", 30.6833, 111.2833, 38.0, 45.2, 2.8, 0.18, 0.10, 11.0),
        Station("S003", "长江·汉口站", "长江", 30.5833, 114.2833, 12.5, 19.8, 3.0, 0.12, 0.08, 14.0),
        Station("S004", "长江·大通站", "长江", 30.7667, 117.6167, 3.2, 9.6, 2.6, 0.30, 0.08, 15.0),
        Station("S005", "黄河·花园口站", "黄河", 34.9167, 113.6500, 88.0, 91.3, 1.2, 0.08, 0.05, 8.0),
        Station("S006", "黄河·兰州站", "黄河", 36.0667, 103.8167, 1508.0, 1511.6, 1.5, 0.10, 0.06, 5.0),
        Station("S007", "淮河·蚌埠站", "淮河", 32.9500, 117.3833, 14.0, 17.4, 2.2, 0.10, 0.07, 13.0),
        Station("S008", "西江·梧州站", "西江", 23.4833, 111.3167, 2.0, 8.2, 4.0, 0.20, 0.15, 18.0),
        Station("S009", "嘉陵江·北碚站", "嘉陵江", 29.8333, 106.4333, 175.0, 181.0, 3.2, 0.22, 0.12, 12.0),
        Station("S010", "汉江·丹江口站", "汉江", 32.5500, 111.5167, 140.0, 158.0, 2.0, 0.05, 0.04, 10.0),
    )
}


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) derived from ``parts``."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _season(day: date) -> float:
    """The seasonal cycle in [-1, 1]: +1 in mid-July, -1 in mid-January."""
    return math.sin(2 * math.pi * (day.timetuple().tm_yday - 105) / 365.25)


def get_station(station: str) -> Station:
    """The station with id ``station`` (case-insensitive), or :class:`HydrologyError`."""
    key = station.strip().upper() if isinstance(station, str) else ""
    try:
        return STATIONS[key]
    except KeyError:
        known = ", ".join(STATIONS)
        raise HydrologyError(f"Unknown station {station!r}. Known stations: {known}.") from None


def parse_date(value: str, field: str) -> date:
    """Parse a ``YYYY-MM-DD`` date, or raise :class:`HydrologyError` naming ``field``."""
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise HydrologyError(f"Invalid {field} date {value!r}: expected YYYY-MM-DD, e.g. 2025-07-01.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HydrologyError(f"Invalid {field} date {value!r}: no such calendar day.") from None


def parse_date_range(start: str, end: str) -> tuple[date, date]:
    """Parse and check an inclusive date range of at most :data:`MAX_RANGE_DAYS` days."""
    first, last = parse_date(start, "start"), parse_date(end, "end")
    if last < first:
        raise HydrologyError(f"The end date {end} is before the start date {start}.")
    days = (last - first).days + 1
    if days > MAX_RANGE_DAYS:
        raise HydrologyError(
            f"The range {start} to {end} covers {days} days; at most {MAX_RANGE_DAYS} days can be asked for at once."
        )
    return first, last


def station_info(station: Station) -> StationInfo:
    """The public description of ``station``."""
    return {
        "id": station.id,
        "name": station.name,
        "river": station.river,
        "latitude": station.latitude,
        "longitude": station.longitude,
        "elevation_m": station.elevation_m,
    }


def stations() -> StationList:
    """All demo stations, S001 to S010."""
    infos = [station_info(s) for s in STATIONS.values()]
    return {"count": len(infos), "stations": infos}


def water_level_at(station: Station, when: datetime) -> float:
    """The synthetic water level (m) of ``station`` at the UTC instant ``when``, to the centimetre."""
    when = when.astimezone(UTC)
    phase_h = 24 * _unit(station.id, "phase")
    hours = when.hour + when.minute / 60
    seasonal = station.seasonal_amplitude_m * _season(when.date())
    daily = station.daily_amplitude_m * math.sin(2 * math.pi * (hours + phase_h) / 24)
    noise = station.noise_m * (2 * _unit(station.id, when.strftime("%Y-%m-%dT%H:%M")) - 1)
    return round(station.base_level_m + seasonal + daily + noise, 2)


def _not_after(first: date, until: datetime | None) -> None:
    """Refuse a range that starts after ``until``: nothing has been measured there yet."""
    if until is not None and first > until.astimezone(UTC).date():
        now = until.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
        raise HydrologyError(f"The range starts on {first.isoformat()}, after now ({now}): nothing is measured yet.")


def water_levels(station: str, start: str, end: str, *, until: datetime | None = None) -> WaterLevelSeries:
    """Hourly water levels of ``station`` from ``start`` 00:00 to ``end`` 23:00 UTC (dates inclusive).

    With ``until`` (the server passes the current time), readings stop at the last
    hour before it, as a real gauge's would: "the latest level" is never in the future.
    """
    found = get_station(station)
    first, last = parse_date_range(start, end)
    _not_after(first, until)
    begin = datetime.combine(first, time(0), tzinfo=UTC)
    hours = ((last - first).days + 1) * 24
    readings: list[WaterLevelReading] = []
    for hour in range(hours):
        when = begin + timedelta(hours=hour)
        if until is not None and when > until:
            break
        readings.append({"time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "level_m": water_level_at(found, when)})
    return {
        "station": found.id,
        "station_name": found.name,
        "unit": "m",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "readings": readings,
    }


def rainfall_on(station: Station, day: date) -> float:
    """The synthetic rainfall total (mm) of ``station`` on ``day``: wetter and more often in summer."""
    wetness = (1 + _season(day)) / 2
    if _unit(station.id, day.isoformat(), "wet") >= 0.2 + 0.4 * wetness:
        return 0.0
    amount = -math.log(1 - _unit(station.id, day.isoformat(), "amount")) * station.mean_rain_mm * (0.5 + wetness)
    return round(amount, 1)


def rainfall(station: str, start: str, end: str, *, until: datetime | None = None) -> RainfallSeries:
    """Daily rainfall totals of ``station`` from ``start`` to ``end`` (inclusive); with ``until``,
    no day after its date (UTC)."""
    found = get_station(station)
    first, last = parse_date_range(start, end)
    _not_after(first, until)
    daily: list[RainfallDay] = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        if until is not None and day > until.astimezone(UTC).date():
            break
        daily.append({"date": day.isoformat(), "rainfall_mm": rainfall_on(found, day)})
    return {
        "station": found.id,
        "station_name": found.name,
        "unit": "mm",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "total_mm": round(sum(d["rainfall_mm"] for d in daily), 1),
        "daily": daily,
    }


def max_possible_level(station: Station) -> float:
    """The highest level :func:`water_level_at` can ever return for ``station``."""
    return station.base_level_m + station.seasonal_amplitude_m + station.daily_amplitude_m + station.noise_m


def flood_warning_levels(station: str) -> FloodWarningLevels:
    """Warning, guarantee and historical-maximum levels of ``station``, above anything the generator produces."""
    found = get_station(station)
    warning = max_possible_level(found) + 1.0 + _unit(found.id, "warning")
    guarantee = warning + 1.5 + _unit(found.id, "guarantee")
    historical = guarantee + 1.0 + 2 * _unit(found.id, "historical")
    return {
        "station": found.id,
        "station_name": found.name,
        "unit": "m",
        "warning_level_m": round(warning, 2),
        "guarantee_level_m": round(guarantee, 2),
        "historical_max_m": round(historical, 2),
    }
