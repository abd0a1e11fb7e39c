"""Raw assets: the Kaggle files as validated snapshots, transactions per week, the image catalogue."""


import pandas as pd
import dagster as dg

from hm_assets.platform.beta_apis import beta_apis
from hm_assets.pipeline.ingest.ingest import (
    THUMBNAIL_SIZE,
    Thumbnails,
    catalogue_with_thumbnails,
    normalised_articles,
    normalised_customers,
    staged_transactions,
    write_week,
)
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.platform.metadata import preview, stopwatch
from hm_assets.platform.progress import Progress
from hm_assets.platform.weeks import parse_week
from hm_assets.serving.events import event_log_path, read_events_frame

GROUP = "ingest"


@dg.asset(group_name=GROUP, kinds={"duckdb", "parquet"})
def articles(dataset: HMDataset, store: HMStore) -> dg.MaterializeResult:
    """The article catalogue (articles.csv), validated, article_id as an integer."""
    with stopwatch() as watch:
        con = store.connect()
        relation = normalised_articles(con, dataset.root)
        rows = store.write_parquet(relation, store.asset_path("articles"))
        sample = con.sql("SELECT article_id, prod_name, product_type_name, colour_group_name FROM articles_raw LIMIT 5").df()
        groups = con.execute("SELECT count(DISTINCT product_code) FROM articles_raw").fetchall()[0][0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "products": int(groups),
            "path": store.relative(store.asset_path("articles")),
            "seconds": watch.seconds,
            "preview": preview(sample),
        }
    )


@dg.asset(group_name=GROUP, kinds={"duckdb", "parquet"})
def customers(dataset: HMDataset, store: HMStore) -> dg.MaterializeResult:
    """The customers (customers.csv), validated, with an integer ``customer_key``."""
    with stopwatch() as watch:
        con = store.connect()
        relation = normalised_customers(con, dataset.root)
        rows = store.write_parquet(relation, store.asset_path("customers"))
        missing_age = con.execute("SELECT count(*) FROM customers_raw WHERE age IS NULL").fetchall()[0][0]
        sample = con.sql(
            "SELECT customer_key, club_member_status, fashion_news_frequency, age FROM customers_raw LIMIT 5"
        ).df()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "missing_age": int(missing_age),
            "path": store.relative(store.asset_path("customers")),
            "seconds": watch.seconds,
            "preview": preview(sample),
        }
    )


def transactions(context: dg.AssetExecutionContext, dataset: HMDataset, store: HMStore) -> None:
    """Transactions of each target week (Wednesday..Tuesday), one Parquet file per week.

    The whole file is validated once per version; rows with unknown customers or articles are
    dropped and counted. The purchases ``hm-recs serve`` logged (``hm_assets.serving.events``) join
    their week unless the file already has them. A backfill over many weeks runs as one run.
    """
    staging = staged_transactions(store, dataset.root)
    events = read_events_frame(event_log_path(store))
    con = store.connect()
    progress = Progress("transactions", len(context.partition_keys), context.log.info, unit="weeks")
    for key in context.partition_keys:
        with stopwatch() as watch:
            result = write_week(
                con,
                staging,
                store.require("articles"),
                store.require("customers"),
                parse_week(key),
                store.asset_path("transactions", key),
                events,
                store.objects,
            )
        if result.unknown_customer_rows or result.unknown_article_rows:
            context.log.warning(
                f"week {key}: dropped {result.unknown_customer_rows} rows with unknown customers and "
                f"{result.unknown_article_rows} with unknown articles"
            )
        if result.online_events_dropped_unknown:
            context.log.warning(
                f"week {key}: dropped {result.online_events_dropped_unknown} online purchases of unknown "
                "customers or articles"
            )
        context.add_asset_metadata(
            {
                "dagster/row_count": result.rows,
                "customers": result.customers,
                "first_day": str(result.first_day),
                "last_day": str(result.last_day),
                "dropped_unknown_customer_rows": result.unknown_customer_rows,
                "dropped_unknown_article_rows": result.unknown_article_rows,
                "online_events_ingested": result.online_events_ingested,
                "online_events_already_in_csv": result.online_events_already_in_csv,
                "online_events_dropped_unknown": result.online_events_dropped_unknown,
                "seconds": watch.seconds,
            },
            partition_key=key,
        )
        progress.advance()
    progress.finish()
    con.close()


def build_transactions_asset(weeks: WeekPartitions) -> dg.AssetsDefinition:
    """``transactions`` over every week of the data; a backfill of many weeks runs as one run."""
    with beta_apis():
        return dg.asset(
            group_name=GROUP,
            kinds={"duckdb", "parquet"},
            partitions_def=weeks.transactions,
            deps=[articles, customers],
            backfill_policy=dg.BackfillPolicy.single_run(),
        )(transactions)


@dg.asset(group_name=GROUP, kinds={"python", "parquet"}, deps=[articles])
def article_images(dataset: HMDataset, store: HMStore) -> dg.MaterializeResult:
    """Catalogue of article images: path, whether it exists and decodes, size. Beside it,
    ``article_thumbnails.parquet``: each readable image as the image encoder takes it (padded to
    THUMBNAIL_SIZE), decoded by the same pass that checks it, so the image step decodes nothing again."""
    target = store.asset_path("article_images")
    thumbnails_path = store.asset_path("article_thumbnails")
    previous = pd.read_parquet(target) if target.exists() else None
    kept = Thumbnails.read(thumbnails_path) if previous is not None and thumbnails_path.exists() else None
    ids = pd.read_parquet(store.require("articles"), columns=["article_id"])["article_id"].tolist()
    with stopwatch() as watch:
        catalogue, thumbnails = catalogue_with_thumbnails(dataset.root, ids, previous, previous_thumbnails=kept)
        del kept
    # the thumbnails first: the table is the commit point, and a reader checks each thumbnail's file version
    store.write_parquet(thumbnails.to_table(), thumbnails_path)
    rows = store.write_parquet(catalogue, target)
    missing = int((~catalogue["exists"]).sum())
    unreadable = int((catalogue["exists"] & ~catalogue["readable"]).sum())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "with_image": int(catalogue["readable"].sum()),
            "missing_image": missing,
            "unreadable_image": unreadable,
            "thumbnails": len(thumbnails.paths),
            "thumbnail_size": THUMBNAIL_SIZE,
            "seconds": watch.seconds,
        }
    )
