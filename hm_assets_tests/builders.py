"""Hand-made tiny worlds for unit tests: a week's DuckDB view built from small DataFrames."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.features.taste import CANDIDATE_CUSTOMERS, ArticleTaste, no_article_taste, register_taste
from hm_assets.pipeline.retrieval.base import RetrievalContext
from hm_assets.platform.sql import load_sql

ATTRIBUTE_DEFAULTS = {
    "product_code": 100000,
    "prod_name": "Item",
    "product_type_no": 253,
    "product_type_name": "Vest top",
    "product_group_name": "Garment Upper body",
    "graphical_appearance_no": 1010016,
    "graphical_appearance_name": "Solid",
    "colour_group_code": 9,
    "colour_group_name": "Black",
    "perceived_colour_value_id": 4,
    "perceived_colour_value_name": "Dark",
    "perceived_colour_master_id": 5,
    "perceived_colour_master_name": "Black",
    "department_no": 1676,
    "department_name": "Jersey Basic",
    "index_code": "A",
    "index_name": "Ladieswear",
    "index_group_no": 1,
    "index_group_name": "Ladieswear",
    "section_no": 16,
    "section_name": "Womens Everyday Basics",
    "garment_group_no": 1002,
    "garment_group_name": "Jersey Basic",
    "detail_desc": "Jersey top.",
}


def articles_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([{**ATTRIBUTE_DEFAULTS, **row} for row in rows])
    frame["article_id"] = frame["article_id"].astype("int32")
    return frame


def customers_frame(keys: list[int], ages: list[float] | None = None) -> pd.DataFrame:
    ages = ages or [30.0] * len(keys)
    return pd.DataFrame(
        {
            "customer_key": np.asarray(keys, dtype="int64"),
            "customer_id": [f"{k:064x}" for k in keys],
            "fn": 0,
            "active": 0,
            "club_member_status": "ACTIVE",
            "fashion_news_frequency": "NONE",
            "age": ages,
            "postal_code": "p",
        }
    )


def transactions_frame(rows: list[tuple[str, int, int, float, int]]) -> pd.DataFrame:
    """(t_dat, customer_key, article_id, price, channel) tuples."""
    frame = pd.DataFrame(rows, columns=["t_dat", "customer_key", "article_id", "price", "sales_channel_id"])
    frame["t_dat"] = pd.to_datetime(frame["t_dat"]).dt.date
    return frame.astype({"customer_key": "int64", "article_id": "int32", "price": "float32", "sales_channel_id": "int8"})


def week_connection(
    transactions: pd.DataFrame, articles: pd.DataFrame, customers: pd.DataFrame, cutoff: date, truth: pd.DataFrame | None = None
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    history = transactions[pd.to_datetime(transactions["t_dat"]) < pd.Timestamp(cutoff)]
    for name, frame in [("transactions_df", history), ("articles_df", articles), ("customers_df", customers)]:
        con.register(name, frame)
    con.execute("CREATE TABLE transactions AS SELECT CAST(t_dat AS DATE) AS t_dat, * EXCLUDE (t_dat) FROM transactions_df")
    con.execute("CREATE TABLE articles AS SELECT * FROM articles_df")
    con.execute("CREATE TABLE customers AS SELECT * FROM customers_df")
    for table in FEATURE_TABLES:
        con.execute(f"CREATE TABLE {table} AS " + load_sql(table), {"cutoff": cutoff})
    # No taste vectors unless a test registers some (taste.register_taste): the taste features are null.
    register_taste(con, cutoff, ArticleTaste.of(no_article_taste()), CANDIDATE_CUSTOMERS)
    truth = truth if truth is not None else transactions.iloc[0:0]
    con.register("truth_df", truth)
    con.execute("CREATE TABLE truth AS SELECT CAST(t_dat AS DATE) AS t_dat, * EXCLUDE (t_dat) FROM truth_df")
    return con


def retrieval_context(con: duckdb.DuckDBPyConnection, cutoff: date, customers: pd.DataFrame) -> RetrievalContext:
    return RetrievalContext(
        con=con,
        cutoff=cutoff,
        week_key=cutoff.isoformat(),
        customer_keys=customers["customer_key"].to_numpy(),
    )
