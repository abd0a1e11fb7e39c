"""H&M weeks: Wednesday..Tuesday. A partition key is the Wednesday that starts a target week.

Everything computed for a partition may use only transactions dated before its first day;
its ground truth is the transactions inside the week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg


WEDNESDAY = 2  # date.weekday() of Wednesday
DAGSTER_WEDNESDAY = 3  # WeeklyPartitionsDefinition.day_offset counts from Sunday
WEEK = timedelta(days=7)


def week_start(day: date) -> date:
    """The Wednesday on or before ``day``."""
    return day - timedelta(days=(day.weekday() - WEDNESDAY) % 7)


def parse_week(key: str) -> date:
    day = date.fromisoformat(key)
    if day.weekday() != WEDNESDAY:
        raise ValueError(f"week {key} does not start on a Wednesday (H&M weeks run Wednesday..Tuesday)")
    return day


def week_key(day: date) -> str:
    return week_start(day).isoformat()


@dataclass(frozen=True)
class DataRange:
    first_day: date
    last_day: date

    @property
    def first_week(self) -> date:
        return week_start(self.first_day)

    @property
    def live_week(self) -> date:
        """The first week with no observed transactions: the week to predict."""
        return week_start(self.last_day) + WEEK

    @property
    def newest_week_with_truth(self) -> date:
        return self.live_week - WEEK


def fallback_range(today: date | None = None) -> DataRange:
    """Range used before any data exists: the year up to the most recent Tuesday."""
    today = today or date.today()
    last = week_start(today) - timedelta(days=1)
    if last >= today:
        last -= WEEK
    return DataRange(last - timedelta(days=52 * 7 - 1), last)


def follows_calendar(data_range: DataRange, today: date | None = None) -> bool:
    """Whether the data is current: its live week is this calendar week or the one before (data
    due on Tuesday night may arrive a day late). Current data gets a partition set that follows the
    calendar; an archive (the Kaggle dump ends 2020-09-22) gets one that ends with its live week."""
    return data_range.live_week >= week_start(today or date.today()) - WEEK


def weekly_partitions(data_range: DataRange, start: date | None = None, follow_calendar: bool = False) -> dg.WeeklyPartitionsDefinition:
    """Weeks from ``start`` (default: the data's first week) to the live week. Following the
    calendar, the set has no end: the week that starts each Wednesday appears without a reload."""
    end = None if follow_calendar else (data_range.live_week + WEEK).isoformat()
    return dg.WeeklyPartitionsDefinition(
        start_date=(start or data_range.first_week).isoformat(),
        end_date=end,
        day_offset=DAGSTER_WEDNESDAY,
        fmt="%Y-%m-%d",
        # The live week has not finished yet when the data ends on the latest Tuesday.
        end_offset=1,
    )


def first_built_week(data_range: DataRange, built_weeks: int, configured: str = "") -> date:
    """The first week the pipeline builds: ``configured`` (a Wednesday) or ``built_weeks`` weeks
    up to the live week, never before the data's second week (a week needs some history)."""
    earliest = data_range.first_week + WEEK
    wanted = parse_week(configured) if configured else data_range.live_week - (built_weeks - 1) * WEEK
    return max(earliest, min(wanted, data_range.live_week))
