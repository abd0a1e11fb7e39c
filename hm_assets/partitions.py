"""The weekly partition set, shaped by the data in HM_DATA_DIR when the code location loads."""

from __future__ import annotations

from hm_assets.settings import hm_data_dir
from hm_assets.weeks import env_data_range, weekly_partitions

data_range = env_data_range(hm_data_dir())
weekly_partitions_def = weekly_partitions(data_range)
