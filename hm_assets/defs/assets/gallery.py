"""The ``gallery`` asset: a week's recommendations as pictures, in a self-contained HTML report.

``HM_HOME/assets/gallery/<week>/index.html`` with the thumbnails beside it (``img/<article>.jpg``),
written as one folder, atomically, by ``hm_assets.serving.gallery.build_gallery``; the cold-start
section comes from the on-demand recommender (``hm_assets.serving.on_demand``), the same code path as
``hm-recs recommend``.
"""

# No `from __future__ import annotations`: Dagster reads the asset's config class from its annotation.

import time

import dagster as dg

from hm_assets.defs.assets.weekly import history_and_target_week
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMStore
from hm_assets.serving.gallery import GalleryConfig, build_gallery

GROUP = "evaluation"


def gallery(context: dg.AssetExecutionContext, store: HMStore, config: GalleryConfig) -> dg.MaterializeResult:
    """A self-contained HTML report of the week: a deterministic sample of customers (target-week
    buyers first when known, some with a rich history), each with their recent purchases and their
    12 recommendations as pictures (name, proposing retrievers, ranker score; bought ones
    highlighted), and cold-start lists for new customers of different ages (on-demand recommender)."""
    started = time.perf_counter()
    result = build_gallery(store, context.partition_key, config)
    context.log.info(f"gallery written to {result.index}")
    return dg.MaterializeResult(
        metadata={
            "gallery": dg.MetadataValue.path(store.relative(result.index)),
            "gallery_url": dg.MetadataValue.url(store.url(result.index)),
            "customers_shown": result.customers,
            "recommendation_tiles": result.recommendation_tiles,
            "hits": result.hits,
            "images_copied": result.images_copied,
            "image_placeholders": result.placeholders,
            "cold_start_profiles": result.cold_start_profiles,
            "sample": dg.MetadataValue.md(result.sample.to_markdown(index=False)),
            "seconds": round(time.perf_counter() - started, 2),
        }
    )


def build_gallery_asset(weeks: WeekPartitions) -> dg.AssetsDefinition:
    return dg.asset(
        name="gallery",
        group_name=GROUP,
        kinds={"html"},
        partitions_def=weeks.weekly,
        deps=[history_and_target_week(weeks), "customer_features", "recommendations", "candidates", "article_images"],
    )(gallery)
