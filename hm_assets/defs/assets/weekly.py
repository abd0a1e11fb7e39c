"""What every weekly asset shares: the dependency on past weeks and the week's DuckDB view."""


import dagster as dg

from hm_assets.platform.beta_apis import week_window
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.platform.history import WeekView, open_week, register_parquet
from hm_assets.platform.store import HMStore


def _all_earlier(weeks: WeekPartitions) -> int:
    # Reaches back past the data's first week (the set may grow along the calendar; weeks that do
    # not exist are allowed).
    return -len(weeks.history_keys()) - 53


def history(weeks: WeekPartitions) -> dg.AssetDep:
    """Partition W reads every week strictly before W (its history) ..."""
    return dg.AssetDep("transactions", partition_mapping=week_window(_all_earlier(weeks), -1))


def history_and_target_week(weeks: WeekPartitions) -> dg.AssetDep:
    """... and evaluation also reads the target week itself, once it has been observed."""
    return dg.AssetDep("transactions", partition_mapping=week_window(_all_earlier(weeks), 0))


def previous_weeks(count: int) -> dg.TimeWindowPartitionMapping:
    return week_window(-count, -1)


def this_and_previous_week() -> dg.TimeWindowPartitionMapping:
    return week_window(-1, 0)


def week_view(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    store: HMStore,
    weeks: WeekPartitions,
    with_truth: bool = False,
    with_features: bool = True,
) -> WeekView:
    key = context.partition_key
    view = open_week(store, key, weeks.history_keys(), with_truth=with_truth)
    if with_features:
        for table in FEATURE_TABLES:
            register_parquet(view.con, table, store.require(table, key))
    return view
