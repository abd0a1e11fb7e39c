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
    from hm_assets.assets.content import content_assets
    from hm_assets.assets.evaluation import backtest_summary, evaluation_assets
    from hm_assets.assets.features import feature_assets
    from hm_assets.assets.gallery import gallery_assets
    from hm_assets.assets.ingest import article_images, articles, customers, transactions
    from hm_assets.assets.ranking import ranking_assets
    from hm_assets.assets.retrieval import candidate_assets
from hm_assets.resources import HMDataset, HMStore

catalogue_assets = [articles, customers, article_images, *content_assets]
weekly_assets = [transactions, *feature_assets, *candidate_assets, *ranking_assets, evaluation_assets[0], *gallery_assets]

catalogue_job = dg.define_asset_job(
    "catalogue_snapshot",
    selection=dg.AssetSelection.assets(*catalogue_assets),
    description="Snapshot articles, customers and the image catalogue (and what is built from them).",
)

weekly_job = dg.define_asset_job(
    "weekly_recommendations",
    selection=dg.AssetSelection.assets(*weekly_assets),
    description="One target week end to end: transactions, features, retrievers, ranker, recommendations, evaluation.",
)

backtest_job = dg.define_asset_job(
    "backtest_report",
    selection=dg.AssetSelection.assets(backtest_summary),
    description="MAP@12 of every evaluated week against the baselines, as a table and a plot.",
)

weekly_schedule = dg.build_schedule_from_partitioned_job(
    weekly_job,
    hour_of_day=6,
    description="Every Wednesday morning: recommendations for the week that starts that day.",
)

defs = dg.Definitions(
    assets=[*catalogue_assets, *weekly_assets, backtest_summary],
    asset_checks=asset_checks,
    jobs=[catalogue_job, weekly_job, backtest_job],
    schedules=[weekly_schedule],
    resources={"dataset": HMDataset(), "store": HMStore()},
)
