"""The code location's jobs: one per kind of work, each over one partition set.

Selections are by group and name, so the jobs exist before the assets are built (the sensors
name them) and resolve against whatever partition sets ``hm_assets.definitions`` built.
"""

from __future__ import annotations

import dagster as dg

CATALOGUE = dg.AssetSelection.groups("ingest", "content") - dg.AssetSelection.assets("transactions")
WEEKLY = dg.AssetSelection.groups("features", "retrieval", "ranking") | dg.AssetSelection.assets("evaluation", "gallery")

catalogue_job = dg.define_asset_job(
    "catalogue_snapshot",
    selection=CATALOGUE,
    description="Snapshot articles, customers and the image catalogue (and what is built from them).",
)

# Its own job: transactions are partitioned over every week of the data and a range of weeks is
# ingested in one run, while the weekly assets run one week per run.
ingest_job = dg.define_asset_job(
    "ingest_transactions",
    selection=dg.AssetSelection.assets("transactions"),
    description="Validate transactions_train.csv and split it into weekly Parquet files (a range of weeks in one run).",
)

weekly_job = dg.define_asset_job(
    "weekly_recommendations",
    selection=WEEKLY,
    description="One target week end to end: features, retrievers, ranker, recommendations, evaluation, gallery.",
)

backtest_job = dg.define_asset_job(
    "backtest_report",
    selection=dg.AssetSelection.assets("backtest_summary"),
    description="MAP@12 of every evaluated week against the baselines, as a table and a plot.",
)

jobs = [catalogue_job, ingest_job, weekly_job, backtest_job]
