"""Popularity model: the cold-start path. Which of last week's bestsellers suits this customer?

A LightGBM model learns, from last week's buyers, which of the week's most popular articles a
customer buys given only their attributes (age, club status, news frequency, postal-area size…).
Customers with identical attribute profiles get identical lists, so the model scores each distinct
profile once and the lists are handed to every customer of that profile, with or without history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd

from hm_assets.retrievers.base import RetrievalContext, Retriever, RetrieverConfig

if TYPE_CHECKING:
    from hm_assets.retrievers.base import RawCandidates

PROFILE_COLUMNS = ["age_band", "club_status_code", "news_frequency_code", "fn", "active", "postal_band"]
ARTICLE_COLUMNS = ["pool_code", "product_group_code", "index_group_no", "buyers_mean_age"]


class PopularityModelConfig(RetrieverConfig):
    max_candidates: int = 100
    pool_size: int = 600
    negatives_per_buyer: int = 20
    boost_rounds: int = 120
    learning_rate: float = 0.08
    num_leaves: int = 63


def customer_profiles(ctx: RetrievalContext) -> pd.DataFrame:
    """customer_key -> profile attributes (banded so that distinct profiles stay few)."""
    return ctx.con.sql(
        """
        SELECT customer_key,
               CAST(floor(age / 2) * 2 AS FLOAT) AS age_band,
               club_status_code, news_frequency_code, fn, active,
               CAST(floor(log2(greatest(postal_code_customers, 1))) AS TINYINT) AS postal_band
        FROM customer_features
        """
    ).df()


def bestseller_pool(ctx: RetrievalContext, size: int) -> pd.DataFrame:
    return ctx.con.execute(
        """
        SELECT t.article_id, count(*) AS sales, any_value(f.product_group_code) AS product_group_code,
               any_value(f.index_group_no) AS index_group_no, any_value(s.buyers_mean_age) AS buyers_mean_age
        FROM transactions t
        JOIN article_features f USING (article_id)
        LEFT JOIN article_transaction_stats s USING (article_id)
        WHERE t.t_dat >= $start
        GROUP BY t.article_id ORDER BY sales DESC, t.article_id LIMIT $size
        """,
        {"start": ctx.lookback_start(1), "size": size},
    ).df().assign(pool_code=lambda d: np.arange(len(d), dtype=np.int32))


def training_rows(ctx: RetrievalContext, pool: pd.DataFrame, profiles: pd.DataFrame, negatives: int) -> pd.DataFrame:
    # Ordered: the seeded negatives below are drawn buyer by buyer, and DISTINCT's own order varies
    # from run to run once a week spans several row groups (DuckDB's threads).
    bought = ctx.con.execute(
        "SELECT DISTINCT customer_key, article_id FROM transactions WHERE t_dat >= $start ORDER BY ALL",
        {"start": ctx.lookback_start(1)},
    ).df()
    positives = bought.merge(pool[["article_id", "pool_code"]], on="article_id")[["customer_key", "pool_code"]]
    buyers = positives["customer_key"].unique()
    rng = np.random.default_rng(ctx.seed)
    sampled = pd.DataFrame(
        {
            "customer_key": np.repeat(buyers, negatives),
            "pool_code": rng.integers(0, len(pool), size=len(buyers) * negatives).astype(np.int32),
        }
    )
    sampled = sampled.merge(positives.assign(positive=1), how="left", on=["customer_key", "pool_code"])
    sampled = sampled[sampled["positive"].isna()].drop(columns="positive").drop_duplicates()
    rows = pd.concat([positives.assign(label=1), sampled.assign(label=0)], ignore_index=True)
    return rows.merge(profiles, on="customer_key").merge(pool[ARTICLE_COLUMNS], on="pool_code")


def fit_model(rows: pd.DataFrame, config: PopularityModelConfig, seed: int) -> lgb.Booster:
    features = PROFILE_COLUMNS + ARTICLE_COLUMNS
    dataset = lgb.Dataset(rows[features], label=rows["label"], categorical_feature=["pool_code"], free_raw_data=True)
    params = {
        "objective": "binary",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "seed": seed,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }
    return lgb.train(params, dataset, num_boost_round=config.boost_rounds)


def score_profiles(model: lgb.Booster, profiles: pd.DataFrame, pool: pd.DataFrame, top: int) -> pd.DataFrame:
    """profile_id -> its ``top`` pool articles with the model's score."""
    distinct = profiles[PROFILE_COLUMNS].drop_duplicates().reset_index(drop=True)
    distinct["profile_id"] = np.arange(len(distinct))
    grid = distinct.merge(pool[["article_id", *ARTICLE_COLUMNS]], how="cross")
    grid["score"] = model.predict(grid[PROFILE_COLUMNS + ARTICLE_COLUMNS], num_threads=2)
    grid = grid.sort_values(["profile_id", "score"], ascending=[True, False], kind="mergesort")
    best = grid.groupby("profile_id", sort=False).head(top)[["profile_id", "article_id", "score"]]
    return distinct, best


def popularity_model_candidates(ctx: RetrievalContext, config: PopularityModelConfig) -> RawCandidates:
    pool = bestseller_pool(ctx, config.pool_size)
    profiles = customer_profiles(ctx)
    empty = pd.DataFrame(columns=["customer_key", "article_id", "score"])
    if pool.empty:
        return empty
    rows = training_rows(ctx, pool, profiles, config.negatives_per_buyer)
    if rows["label"].nunique() < 2:
        # Too little data to learn from: everyone gets the plain bestseller list.
        ranked = pool.assign(score=pool["sales"] / pool["sales"].max())[["article_id", "score"]].head(config.max_candidates)
        return profiles[["customer_key"]].merge(ranked, how="cross")
    model = fit_model(rows, config, ctx.seed)
    distinct, best = score_profiles(model, profiles, pool, config.max_candidates)
    keyed = profiles.merge(distinct, on=PROFILE_COLUMNS, how="left")[["customer_key", "profile_id"]]
    ctx.log.info(f"popularity model: {len(rows)} training rows, {len(distinct)} distinct profiles scored")
    # customers x lists can reach 10^8 rows: expanded lazily by DuckDB, not in pandas
    ctx.con.register("customer_profiles", keyed)
    ctx.con.register("profile_lists", best)
    return ctx.con.sql(
        "SELECT c.customer_key, l.article_id, l.score FROM customer_profiles c JOIN profile_lists l USING (profile_id)"
    )


RETRIEVER = Retriever(
    name="popularity_model",
    description="LightGBM on customer attributes picks the top-100 of last week's 600 bestsellers per "
    "customer profile; covers customers with no history (cold start).",
    generate=popularity_model_candidates,
    config_class=PopularityModelConfig,
    kinds=frozenset({"duckdb", "lightgbm"}),
)
