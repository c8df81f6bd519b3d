"""Daily partitions of the date-based marts: UTC days, as event_date is a UTC day everywhere."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg

from settings import partitions_start


def daily_partitions(env: dict[str, str] | None = None) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists (the hourly run keeps it current).
    return dg.DailyPartitionsDefinition(start_date=partitions_start(env), timezone="UTC", end_offset=1)


def dbt_partition_vars(start: date, end_inclusive: date) -> dict[str, str]:
    """What the daily-partitioned dbt models read to compute only [start, end] (both inclusive)."""
    return {"partition_start_date": start.isoformat(), "partition_end_date": end_inclusive.isoformat()}


def vars_for_time_window(window: dg.TimeWindow) -> dict[str, str]:
    """A Dagster time window (end exclusive) as the dbt vars of the days it covers."""
    start: datetime = window.start
    end: datetime = window.end
    return dbt_partition_vars(start.date(), (end - timedelta(days=1)).date())


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Days grouped into runs of consecutive days: [(first, last), ...]."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges
