"""The synthetic hydrology generators, without any server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from demo.hydrology import (
    MAX_RANGE_DAYS,
    STATIONS,
    HydrologyError,
    flood_warning_levels,
    max_possible_level,
    rainfall,
    stations,
    water_level_at,
    water_levels,
)


def test_ten_stations_with_chinese_names_and_coordinates() -> None:
    result = stations()
    assert result["count"] == 10
    assert [s["id"] for s in result["stations"]] == [f"S{i:03d}" for i in range(1, 11)]
    first = result["stations"][0]
    assert first == {
        "id": "S001",
        "name": "长江·寸滩站",
        "river": "长江",
        "latitude": 29.6167,
        "longitude": 106.6,
        "elevation_m": 158.0,
    }
    for s in result["stations"]:
        assert "站" in s["name"]
        assert 18 < s["latitude"] < 54
        assert 73 < s["longitude"] < 135


def test_water_levels_are_hourly_and_inclusive() -> None:
    series = water_levels("S001", "2025-07-01", "2025-07-03")
    assert series["station"] == "S001"
    assert series["unit"] == "m"
    readings = series["readings"]
    assert len(readings) == 72
    assert readings[0]["time"] == "2025-07-01T00:00:00Z"
    assert readings[-1]["time"] == "2025-07-03T23:00:00Z"
    assert all(isinstance(r["level_m"], float) for r in readings)
    assert len({r["level_m"] for r in readings}) > 10  # it moves


def test_water_levels_are_deterministic_and_differ_between_stations() -> None:
    assert water_levels("S003", "2025-01-30", "2025-02-02") == water_levels("s003", "2025-01-30", "2025-02-02")
    assert water_levels("S003", "2025-03-01", "2025-03-01") != water_levels("S004", "2025-03-01", "2025-03-01")
    # One day inside a longer range reads the same as that day alone: values depend on station and hour only.
    week = water_levels("S002", "2025-08-01", "2025-08-07")["readings"]
    day = water_levels("S002", "2025-08-04", "2025-08-04")["readings"]
    assert week[72:96] == day


def test_summer_is_higher_than_winter() -> None:
    def mean(start: str, end: str) -> float:
        readings = water_levels("S001", start, end)["readings"]
        return sum(r["level_m"] for r in readings) / len(readings)

    assert mean("2025-07-01", "2025-07-31") > mean("2025-01-01", "2025-01-31") + 3


@pytest.mark.parametrize("station_id", list(STATIONS))
def test_warning_levels_sit_above_every_generated_level(station_id: str) -> None:
    station = STATIONS[station_id]
    levels = flood_warning_levels(station_id)
    assert levels["station"] == station_id
    assert levels["warning_level_m"] < levels["guarantee_level_m"] < levels["historical_max_m"]
    assert levels["warning_level_m"] > max_possible_level(station)
    begin = datetime(2025, 1, 1, tzinfo=UTC)
    highest = max(water_level_at(station, begin + timedelta(hours=h)) for h in range(0, 365 * 24, 5))
    assert highest < levels["warning_level_m"]
    assert flood_warning_levels(station_id) == levels


def test_rainfall_daily_totals() -> None:
    series = rainfall("S008", "2025-07-01", "2025-07-31")
    assert series["unit"] == "mm"
    assert [d["date"] for d in series["daily"]] == [
        (date(2025, 7, 1) + timedelta(days=i)).isoformat() for i in range(31)
    ]
    amounts = [d["rainfall_mm"] for d in series["daily"]]
    assert all(a >= 0 for a in amounts)
    assert any(a > 0 for a in amounts)
    assert any(a == 0 for a in amounts)
    assert series["total_mm"] == round(sum(amounts), 1)
    assert rainfall("S008", "2025-07-01", "2025-07-31") == series


def test_a_range_of_exactly_the_maximum_is_allowed() -> None:
    end = (date(2025, 1, 1) + timedelta(days=MAX_RANGE_DAYS - 1)).isoformat()
    assert len(rainfall("S001", "2025-01-01", end)["daily"]) == MAX_RANGE_DAYS


@pytest.mark.parametrize(
    ("station", "start", "end", "message"),
    [
        ("S999", "2025-01-01", "2025-01-02", "Unknown station 'S999'"),
        ("", "2025-01-01", "2025-01-02", "Unknown station"),
        ("S001", "2025/01/01", "2025-01-02", "Invalid start date '2025/01/01'"),
        ("S001", "2025-01-01", "20250102", "Invalid end date '20250102'"),
        ("S001", "2025-02-30", "2025-03-01", "no such calendar day"),
        ("S001", "2025-01-05", "2025-01-04", "before the start date"),
        ("S001", "2025-01-01", "2025-02-01", "covers 32 days"),
    ],
)
def test_bad_requests_are_refused_clearly(station: str, start: str, end: str, message: str) -> None:
    with pytest.raises(HydrologyError, match=message):
        water_levels(station, start, end)
    with pytest.raises(HydrologyError, match=message):
        rainfall(station, start, end)


def test_unknown_station_has_no_warning_levels() -> None:
    with pytest.raises(HydrologyError, match="Known stations: S001"):
        flood_warning_levels("X1")


def test_readings_stop_at_until() -> None:
    until = datetime(2025, 7, 2, 9, 30, tzinfo=UTC)
    levels = water_levels("S001", "2025-07-01", "2025-07-03", until=until)["readings"]
    assert levels == water_levels("S001", "2025-07-01", "2025-07-03")["readings"][: 24 + 10]  # to 09:00 on the 2nd
    assert levels[-1]["time"] == "2025-07-02T09:00:00Z"
    days = rainfall("S008", "2025-07-01", "2025-07-31", until=until)["daily"]
    assert [d["date"] for d in days] == ["2025-07-01", "2025-07-02"]
    assert rainfall("S008", "2025-07-01", "2025-07-02", until=until)["total_mm"] == round(
        sum(d["rainfall_mm"] for d in days), 1
    )


def test_a_range_that_starts_after_until_is_refused() -> None:
    until = datetime(2025, 7, 2, 9, 30, tzinfo=UTC)
    for series in (water_levels, rainfall):
        with pytest.raises(HydrologyError, match="after now"):
            series("S001", "2025-07-03", "2025-07-04", until=until)
        assert series("S001", "2025-07-02", "2025-07-04", until=until)  # from today: what there is so far
