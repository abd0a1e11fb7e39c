"""The hm-recs code location."""


import warnings

import dagster as dg

# Three Dagster APIs this code location relies on on purpose are marked beta or preview in 1.13:
# the transactions asset's single-run backfill policy, partition mappings that allow weeks before
# the data starts, and partitioned asset checks. Their notices would be printed by every process
# that loads the code location (each run and step); they are silenced here, for these APIs only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=dg.BetaWarning, message=r"Parameter `backfill_policy` of function `asset`")
    warnings.filterwarnings(
        "ignore", category=dg.BetaWarning, message=r"Parameter `allow_nonexistent_upstream_partitions` of initializer"
    )
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=r"Specifying a partitions_def on an AssetCheckSpec")
    from hm_assets.assets.checks import asset_checks
    from hm_assets.jobs import backtest_job, catalogue_assets, catalogue_job, ingest_job, weekly_assets, weekly_job
    from hm_assets.assets.evaluation import backtest_summary
    from hm_assets.assets.ingest import transactions
from hm_assets.resources import HMDataset, HMStore
from hm_assets.sensors import live_week_after_ingest, new_transactions

defs = dg.Definitions(
    assets=[*catalogue_assets, transactions, *weekly_assets, backtest_summary],
    asset_checks=asset_checks,
    jobs=[catalogue_job, ingest_job, weekly_job, backtest_job],
    sensors=[new_transactions, live_week_after_ingest],
    resources={"dataset": HMDataset(), "store": HMStore()},
)
