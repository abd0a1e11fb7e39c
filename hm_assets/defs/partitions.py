"""The weekly partition sets, shaped by the data in HM_DATA_DIR when the Definitions are built.

``WeekPartitions.transactions`` holds every week of the data (the history each week reads);
``WeekPartitions.weekly`` holds the weeks the pipeline builds (``BUILT_WEEKS`` up to the live week,
or from ``HM_FIRST_WEEK``). Both end with the data's live week, or follow the calendar when the
data is current (``weeks.follows_calendar``), so that next week's partition appears on Wednesday
without a reload of the code location. Nothing here runs at import: ``hm_assets.definitions``
builds the sets and hands them to the asset factories in ``defs/assets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from hm_assets.platform.settings import BUILT_WEEKS, hm_data_dir, hm_first_week, hm_partition_end
from hm_assets.platform.weeks import first_built_week, follows_calendar, weekly_partitions
from hm_assets.pipeline.ingest.data_range import env_data_range


@dataclass(frozen=True)
class WeekPartitions:
    transactions: dg.TimeWindowPartitionsDefinition
    weekly: dg.TimeWindowPartitionsDefinition

    @classmethod
    def from_data(cls, data_dir: Path | None = None) -> WeekPartitions:
        """The sets for the data in ``data_dir`` (default HM_DATA_DIR), with HM_FIRST_WEEK and
        HM_PARTITION_END read now."""
        data_range = env_data_range(data_dir if data_dir is not None else hm_data_dir())
        follow_calendar = {"auto": follows_calendar(data_range), "data": False, "calendar": True}[hm_partition_end()]
        first = first_built_week(data_range, BUILT_WEEKS, hm_first_week())
        return cls(
            transactions=weekly_partitions(data_range, data_range.first_week, follow_calendar),
            weekly=weekly_partitions(data_range, first, follow_calendar),
        )

    def history_keys(self) -> list[str]:
        """Every week of transactions (now, when the set follows the calendar)."""
        return self.transactions.get_partition_keys()
