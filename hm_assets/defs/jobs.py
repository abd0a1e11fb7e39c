"""The code location's jobs: one per kind of work, each over one partition set."""

from __future__ import annotations

import dagster as dg

from hm_assets.defs.assets.content import content_assets
from hm_assets.defs.assets.evaluation import backtest_summary, evaluation_assets
from hm_assets.defs.assets.features import article_taste, feature_assets
from hm_assets.defs.assets.gallery import gallery_assets
from hm_assets.defs.assets.ingest import article_images, articles, customers, transactions
from hm_assets.defs.assets.ranking import ranking_assets
from hm_assets.defs.assets.retrieval import candidate_assets

catalogue_assets = [articles, customers, article_images, *content_assets]
weekly_assets = [*feature_assets, article_taste, *candidate_assets, *ranking_assets, evaluation_assets[0], *gallery_assets]

catalogue_job = dg.define_asset_job(
    "catalogue_snapshot",
    selection=dg.AssetSelection.assets(*catalogue_assets),
    description="Snapshot articles, customers and the image catalogue (and what is built from them).",
)

# Its own job: transactions are partitioned over every week of the data and a range of weeks is
# ingested in one run, while the weekly assets run one week per run.
ingest_job = dg.define_asset_job(
    "ingest_transactions",
    selection=dg.AssetSelection.assets(transactions),
    description="Validate transactions_train.csv and split it into weekly Parquet files (a range of weeks in one run).",
)

weekly_job = dg.define_asset_job(
    "weekly_recommendations",
    selection=dg.AssetSelection.assets(*weekly_assets),
    description="One target week end to end: features, retrievers, ranker, recommendations, evaluation, gallery.",
)

backtest_job = dg.define_asset_job(
    "backtest_report",
    selection=dg.AssetSelection.assets(backtest_summary),
    description="MAP@12 of every evaluated week against the baselines, as a table and a plot.",
)
