"""Feature tables per target week, computed in DuckDB from the SQL files in ``sql/``."""


import dagster as dg
import numpy as np

from hm_assets.defs.assets.weekly import history, week_view
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.features import taste
from hm_assets.pipeline.retrieval.base import STATE_SUFFIX, RetrievalContext, load_state
from hm_assets.platform.metadata import preview, stopwatch
from hm_assets.platform.sql import load_sql

GROUP = "features"

DESCRIPTIONS = {
    "customer_features": "Customer attributes (age, club status, news frequency, postal code size), channel preference, activity.",
    "customer_transaction_stats": "Per customer over last week / 4 weeks / all: counts, median price, days since last purchase.",
    "article_features": "Article attributes as codes, price level, days since launch.",
    "article_transaction_stats": "Per article: sales last week / 4 weeks / all, trend, recency, buyers' mean age, channel mix.",
}


def build_feature_asset(name: str, weeks: WeekPartitions) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=GROUP,
        kinds={"duckdb", "sql", "parquet"},
        partitions_def=weeks.weekly,
        deps=[history(weeks), "articles", "customers"],
        description=DESCRIPTIONS[name] + f" SQL: sql/{name}.sql.",
    )
    def _feature_table(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
        with stopwatch() as watch, week_view(context, store, weeks, with_features=False) as view:
            relation = view.con.sql(load_sql(name), params={"cutoff": view.cutoff})
            target = store.asset_path(name, context.partition_key)
            rows = store.write_parquet(relation, target)
            sample = view.con.sql(f"SELECT * FROM read_parquet('{target}') LIMIT 5").df()
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "cutoff": str(view.cutoff), "seconds": watch.seconds, "preview": preview(sample)}
        )

    return _feature_table


def build_article_taste_asset(weeks: WeekPartitions) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"implicit", "parquet"},
        partitions_def=weeks.weekly,
        # the week's ALS factorisation is fitted once, by purchase_history_similar, and read from its state
        deps=[history(weeks), "purchase_history_similar"],
        description=(
            "Unit ALS factor vectors of the articles bought in the 16 weeks before the cut-off: the factorisation "
            "purchase_history_similar fits once per week, read from its fitted state. The pair features' "
            "customer x article taste (hm_assets/pipeline/features/taste.py)."
        ),
    )
    def article_taste(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
        with stopwatch() as watch, week_view(context, store, weeks, with_features=False) as view:
            retrieval = RetrievalContext(
                con=view.con, cutoff=view.cutoff, week_key=context.partition_key, customer_keys=np.zeros(0, np.int64), log=context.log
            )
            factors = load_state(store.require("purchase_history_similar", context.partition_key, STATE_SUFFIX))
            table = taste.taste_of_factors(retrieval, factors.ids, factors.vectors)
            rows = store.write_parquet(table, store.asset_path("article_taste", context.partition_key))
        dimensions = len(table.column("vector")[0]) if rows else 0
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "dimensions": dimensions, "cutoff": str(view.cutoff), "seconds": watch.seconds}
        )

    return article_taste


def feature_assets(weeks: WeekPartitions) -> list[dg.AssetsDefinition]:
    """The week's feature tables and the articles' taste vectors."""
    return [*(build_feature_asset(name, weeks) for name in FEATURE_TABLES), build_article_taste_asset(weeks)]
