"""The hm-recs code location."""


import dagster as dg

from hm_assets.defs.assets.checks import asset_checks
from hm_assets.defs.assets.evaluation import backtest_summary
from hm_assets.defs.assets.ingest import transactions
from hm_assets.defs.jobs import backtest_job, catalogue_assets, catalogue_job, ingest_job, weekly_assets, weekly_job
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.defs.sensors import live_week_after_ingest, new_transactions

defs = dg.Definitions(
    assets=[*catalogue_assets, transactions, *weekly_assets, backtest_summary],
    asset_checks=asset_checks,
    jobs=[catalogue_job, ingest_job, weekly_job, backtest_job],
    sensors=[new_transactions, live_week_after_ingest],
    resources={"dataset": HMDataset(), "store": HMStore()},
)


def build_definitions() -> dg.Definitions:
    """The code location's Definitions, for tests and tools that build their own."""
    return defs
