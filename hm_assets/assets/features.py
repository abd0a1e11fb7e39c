"""Feature tables per target week, computed in DuckDB from the SQL files in ``sql/``."""


import dagster as dg

from hm_assets.assets.ingest import articles, customers
from hm_assets.assets.weekly import FEATURE_TABLES, HISTORY, week_view
from hm_assets.metadata import preview, stopwatch
from hm_assets.partitions import weekly_partitions_def
from hm_assets.resources import HMStore
from hm_assets.sql import load_sql
from hm_assets.store import write_parquet

GROUP = "features"

DESCRIPTIONS = {
    "customer_features": "Customer attributes (age, club status, news frequency, postal code size), channel preference, activity.",
    "customer_transaction_stats": "Per customer over last week / 4 weeks / all: counts, median price, days since last purchase.",
    "article_features": "Article attributes as codes, price level, days since launch.",
    "article_transaction_stats": "Per article: sales last week / 4 weeks / all, trend, recency, buyers' mean age, channel mix.",
}


def build_feature_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=GROUP,
        kinds={"duckdb", "sql", "parquet"},
        partitions_def=weekly_partitions_def,
        deps=[HISTORY, articles, customers],
        description=DESCRIPTIONS[name] + f" SQL: sql/{name}.sql.",
    )
    def _feature_table(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
        with stopwatch() as watch, week_view(context, store, with_features=False) as view:
            relation = view.con.sql(load_sql(name), params={"cutoff": view.cutoff})
            target = store.asset_path(name, context.partition_key)
            rows = write_parquet(relation, target)
            sample = view.con.sql(f"SELECT * FROM read_parquet('{target}') LIMIT 5").df()
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "cutoff": str(view.cutoff), "seconds": watch.seconds, "preview": preview(sample)}
        )

    return _feature_table


feature_assets = [build_feature_asset(name) for name in FEATURE_TABLES]
