"""The weekly partition sets, shaped by the data in HM_DATA_DIR when the code location loads.

``transaction_weeks_def`` holds every week of the data (the history each week reads);
``weekly_partitions_def`` holds the weeks the pipeline builds (``BUILT_WEEKS`` up to the live week,
or from ``HM_FIRST_WEEK``). Both end with the data's live week, or follow the calendar when the
data is current (``weeks.follows_calendar``), so that next week's partition appears on Wednesday
without a reload of the code location.
"""

from __future__ import annotations

from hm_assets.platform.settings import BUILT_WEEKS, hm_data_dir, hm_first_week, hm_partition_end
from hm_assets.platform.weeks import env_data_range, first_built_week, follows_calendar, weekly_partitions

data_range = env_data_range(hm_data_dir())
follow_calendar = {"auto": follows_calendar(data_range), "data": False, "calendar": True}[hm_partition_end()]
transaction_weeks_def = weekly_partitions(data_range, data_range.first_week, follow_calendar)
first_week = first_built_week(data_range, BUILT_WEEKS, hm_first_week())
weekly_partitions_def = weekly_partitions(data_range, first_week, follow_calendar)


def history_week_keys() -> list[str]:
    """Every week of transactions (now, when the set follows the calendar)."""
    return transaction_weeks_def.get_partition_keys()
