"""Calendar of a synthetic data set: days, H&M weeks (Wednesday..Tuesday), the daily volume curve."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from .vocab import load_vocab

TUESDAY = 1
WEDNESDAY = 2
REAL_FIRST = date(2018, 9, 20)
REAL_LAST = date(2020, 9, 22)


def last_tuesday_before(today: date | None = None) -> date:
    """The most recent Tuesday strictly before ``today``."""
    today = today or date.today()
    back = (today.weekday() - TUESDAY) % 7 or 7
    return today - timedelta(days=back)


def parse_end_date(value: str | date | None) -> date | None:
    if value is None:
        return None
    day = value if isinstance(value, date) else date.fromisoformat(str(value))
    if day.weekday() != TUESDAY:
        raise ValueError(f"end date {day.isoformat()} is a {day.strftime('%A')}; it must be a Tuesday "
                         "(H&M weeks run Wednesday..Tuesday)")
    return day


@dataclass(frozen=True)
class Timeline:
    start: date
    end: date

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def week0_offset(self) -> int:
        """Days between the Wednesday starting week 0 and the first day."""
        return (self.start.weekday() - WEDNESDAY) % 7

    @property
    def n_weeks(self) -> int:
        return (self.n_days - 1 + self.week0_offset) // 7 + 1

    def week_of_day(self, d: np.ndarray | int):
        return (np.asarray(d) + self.week0_offset) // 7

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.n_days)]

    def week_day_of_year(self) -> np.ndarray:
        """Day of year of the middle (Saturday) of each week."""
        first_wed = self.start - timedelta(days=self.week0_offset)
        return np.array([(first_wed + timedelta(days=7 * w + 3)).timetuple().tm_yday for w in range(self.n_weeks)],
                        dtype=np.int32)

    def real_curves(self) -> tuple[np.ndarray, np.ndarray]:
        """(daily volume weight, daily mean price) from the real 734-day curve.

        Days inside the real range use their own day; others use the 2019 day with the same
        month/day, moved by up to 3 days so the weekday matches (weekly shape, Black Friday and
        the sales line up with the calendar).
        """
        daily = load_vocab().daily
        by_date = dict(zip(daily["date"], zip(daily["transactions"].astype(float), daily["avg_price"].astype(float))))
        vol = np.empty(self.n_days)
        price = np.empty(self.n_days)
        for i, day in enumerate(self.dates()):
            if REAL_FIRST <= day <= REAL_LAST:
                ref = day
            else:
                try:
                    ref = day.replace(year=2019)
                except ValueError:  # 29 February
                    ref = date(2019, 2, 28)
                delta = (day.weekday() - ref.weekday() + 3) % 7 - 3
                ref = ref + timedelta(days=delta)
            v, p = by_date.get(ref, (np.nan, np.nan))
            vol[i], price[i] = v, p
        if np.isnan(vol).any():  # cannot happen with the shipped curve; keep the generator total
            vol = np.where(np.isnan(vol), np.nanmean(vol), vol)
            price = np.where(np.isnan(price), np.nanmean(price), price)
        return vol / vol.sum(), price


def make_timeline(end: date, n_days: int) -> Timeline:
    return Timeline(start=end - timedelta(days=n_days - 1), end=end)
