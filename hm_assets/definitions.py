"""The hm-recs code location.

The weekly partition sets depend on the data (``hm_assets.defs.partitions``), so the Definitions
are built when the code location loads (``defs``, a lazy ``dg.definitions``), not when a module is
imported; tests and tools call ``build_definitions`` after setting HM_DATA_DIR.
"""

import dagster as dg

from hm_assets.defs.assets.checks import asset_checks
from hm_assets.defs.assets.content import content_assets
from hm_assets.defs.assets.evaluation import backtest_summary, build_evaluation_asset
from hm_assets.defs.assets.features import feature_assets
from hm_assets.defs.assets.gallery import build_gallery_asset
from hm_assets.defs.assets.ingest import article_images, articles, build_transactions_asset, customers
from hm_assets.defs.assets.ranking import ranking_assets
from hm_assets.defs.assets.retrieval import candidate_assets
from hm_assets.defs.jobs import jobs
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.defs.sensors import build_sensors


def build_definitions(weeks: WeekPartitions | None = None) -> dg.Definitions:
    """Every asset, check, job and sensor, over ``weeks`` (default: the partition sets of the data
    in HM_DATA_DIR now)."""
    weeks = weeks or WeekPartitions.from_data()
    return dg.Definitions(
        assets=[
            articles,
            customers,
            article_images,
            *content_assets,
            build_transactions_asset(weeks),
            *feature_assets(weeks),
            *candidate_assets(weeks),
            *ranking_assets(weeks),
            build_evaluation_asset(weeks),
            build_gallery_asset(weeks),
            backtest_summary,
        ],
        asset_checks=asset_checks(weeks),
        jobs=jobs,
        sensors=build_sensors(weeks),
        resources={"dataset": HMDataset(), "store": HMStore()},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
