"""Popularity model: the cold-start path. Which of last week's bestsellers suits this customer?

A LightGBM model learns, from last week's buyers, which of the week's most popular articles a
customer buys given only their attributes (age, club status, news frequency, postal-area size…).
Customers with identical attribute profiles get identical lists, so the model scores each distinct
profile once and the lists are handed to every customer of that profile, with or without history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa

from hm_assets.pipeline.retrieval.base import RANKED_SCHEMA, RankedLists, RetrievalContext, Retriever, RetrieverConfig, view_rows
from hm_assets.platform.arrays import matching_rows, position_in_runs

if TYPE_CHECKING:
    from hm_assets.pipeline.retrieval.base import RawCandidates

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
    if ctx.shared is not None:
        return _profiles_in_memory(view_rows(ctx, "customer_features"))
    return ctx.con.sql(
        """
        SELECT customer_key,
               CAST(floor(age / 2) * 2 AS FLOAT) AS age_band,
               club_status_code, news_frequency_code, fn, active,
               CAST(floor(log2(greatest(postal_code_customers, 1))) AS TINYINT) AS postal_band
        FROM customer_features
        """
    ).df()


def _profiles_in_memory(features: pd.DataFrame) -> pd.DataFrame:
    """``customer_profiles``' SQL over the rows of ``customer_features`` of an online call."""
    age = features["age"].to_numpy(np.float64)
    postal = np.maximum(features["postal_code_customers"].to_numpy(np.float64, na_value=np.nan), 1)
    return pd.DataFrame({
        "customer_key": features["customer_key"].to_numpy(np.int64),
        "age_band": (np.floor(age / 2) * 2).astype(np.float32),  # halving is exact: float or double agree
        "club_status_code": features["club_status_code"].to_numpy(),
        "news_frequency_code": features["news_frequency_code"].to_numpy(),
        "fn": features["fn"].to_numpy(),
        "active": features["active"].to_numpy(),
        # log2 is exact at powers of two, where the floor changes
        "postal_band": pd.array(np.floor(np.log2(postal)), dtype="Int8") if np.isnan(postal).any() else np.floor(np.log2(postal)).astype(np.int8),
    })


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


def score_profiles(model: lgb.Booster, distinct: pd.DataFrame, pool: pd.DataFrame, top: int) -> pd.DataFrame:
    """profile_id, article_id, score: each profile's ``top`` pool articles (``distinct``: one row per
    profile, with its ``profile_id``)."""
    grid = distinct.merge(pool[["article_id", *ARTICLE_COLUMNS]], how="cross")
    grid["score"] = model.predict(grid[PROFILE_COLUMNS + ARTICLE_COLUMNS], num_threads=2)
    grid = grid.sort_values(["profile_id", "score"], ascending=[True, False], kind="mergesort")
    return grid.groupby("profile_id", sort=False).head(top)[["profile_id", "article_id", "score"]]


@dataclass
class PopularityState:
    """The fitted state: the pool, the model (None: too little data, everyone gets the plain
    bestseller list) and the lists of every profile seen at fit time."""

    pool: pd.DataFrame
    model: lgb.Booster | None
    profiles: pd.DataFrame  # PROFILE_COLUMNS + profile_id
    lists: pd.DataFrame  # profile_id, article_id, score

    def __getstate__(self) -> dict:
        return {name: getattr(self, name) for name in ("pool", "model", "profiles", "lists")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @cached_property
    def profile_ids(self) -> dict[tuple, int]:
        """Each fitted profile's id by its attributes (a missing value as None), for online lookups."""
        return dict(zip(_profile_keys(self.profiles), self.profiles["profile_id"].tolist()))

    @cached_property
    def list_rows(self) -> dict[int, tuple[int, int]]:
        """Each profile's rows of ``lists``, start and stop (contiguous: the fit writes them profile
        by profile)."""
        ids = self.lists["profile_id"].to_numpy()
        if len(ids) and (np.diff(ids) < 0).any():
            raise ValueError("the popularity lists are not ordered by profile")
        distinct, start = np.unique(ids, return_index=True)
        stop = np.append(start[1:], len(ids))
        return {int(p): (int(a), int(b)) for p, a, b in zip(distinct, start, stop)}

    def lists_of(self, customers: np.ndarray, profile_ids: list[int]) -> pd.DataFrame:
        """customer_key, article_id, score: the lists of the customers' (fitted) profiles, in list order."""
        spans = [self.list_rows.get(p, (0, 0)) for p in profile_ids]
        rows = np.concatenate([np.arange(a, b) for a, b in spans] + [np.zeros(0, np.int64)])
        return pd.DataFrame({
            "customer_key": np.repeat(customers, [b - a for a, b in spans]),
            "article_id": self.lists["article_id"].to_numpy()[rows],
            "score": self.lists["score"].to_numpy()[rows],
        })


def _profile_keys(profiles: pd.DataFrame) -> list[tuple]:
    """Each row's PROFILE_COLUMNS as a hashable key; a missing value (NaN, NA) as None, so that
    missing values match as the fit's merge matches them."""
    columns = [[None if pd.isna(v) else v for v in profiles[c].tolist()] for c in PROFILE_COLUMNS]
    return list(zip(*columns))


def fit_popularity(ctx: RetrievalContext, config: PopularityModelConfig) -> PopularityState:
    pool = bestseller_pool(ctx, config.pool_size)
    profiles = customer_profiles(ctx)
    no_lists = pd.DataFrame({"profile_id": pd.Series(dtype="int64"), "article_id": pd.Series(dtype="int32"),
                             "score": pd.Series(dtype="float64")})
    distinct = profiles[PROFILE_COLUMNS].drop_duplicates().reset_index(drop=True)
    distinct["profile_id"] = np.arange(len(distinct))
    if pool.empty:
        return PopularityState(pool, None, distinct, no_lists)
    rows = training_rows(ctx, pool, profiles, config.negatives_per_buyer)
    if rows["label"].nunique() < 2:
        return PopularityState(pool, None, distinct, no_lists)
    model = fit_model(rows, config, ctx.seed)
    lists = score_profiles(model, distinct, pool, config.max_candidates)
    ctx.log.info(f"popularity model: {len(rows)} training rows, {len(distinct)} distinct profiles scored")
    return PopularityState(pool, model, distinct, lists)


def popularity_model_candidates(ctx: RetrievalContext, config: PopularityModelConfig, state: PopularityState) -> RawCandidates:
    pool = state.pool
    profiles = customer_profiles(ctx)
    if pool.empty:
        return pd.DataFrame(columns=["customer_key", "article_id", "score"])
    if state.model is None:
        # Too little data to learn from: everyone gets the plain bestseller list.
        ranked = pool.assign(score=pool["sales"] / pool["sales"].max())[["article_id", "score"]].head(config.max_candidates)
        return profiles[["customer_key"]].merge(ranked, how="cross")
    if ctx.shared is not None:
        found = [state.profile_ids.get(key) for key in _profile_keys(profiles)]
        if None not in found:
            # online, a few customers: their profiles' lists picked here (a join over every profile's
            # list, ~10^5 rows, cost more than the rest of the retriever)
            return state.lists_of(profiles["customer_key"].to_numpy(np.int64), found)
    keyed = profiles.merge(state.profiles, on=PROFILE_COLUMNS, how="left")
    lists = state.lists
    unseen = keyed[keyed["profile_id"].isna()]
    if len(unseen):
        # Profiles that did not exist at fit time (new customers online): scored now, as the fit would.
        fresh = unseen[PROFILE_COLUMNS].drop_duplicates().reset_index(drop=True)
        fresh["profile_id"] = -1 - np.arange(len(fresh))
        keyed = pd.concat([keyed[keyed["profile_id"].notna()], unseen.drop(columns="profile_id").merge(fresh, on=PROFILE_COLUMNS)])
        lists = pd.concat([lists, score_profiles(state.model, fresh, pool, config.max_candidates)], ignore_index=True)
    keyed = keyed[["customer_key", "profile_id"]].astype({"profile_id": "int64"})
    if ctx.shared is not None:  # new profiles (new customers online), scored above
        return keyed.merge(lists[lists["profile_id"].isin(keyed["profile_id"])], on="profile_id")[["customer_key", "article_id", "score"]]
    # customers x lists reach 10^8 rows: handed over ranked, in customer order, a chunk at a time
    return RankedLists(
        customers_lists(keyed["customer_key"].to_numpy(np.int64), keyed["profile_id"].to_numpy(np.int64), lists, config.max_candidates)
    )


def customers_lists(
    customers: np.ndarray, profile_ids: np.ndarray, lists: pd.DataFrame, max_candidates: int, chunk: int = 100_000
) -> Iterator[pa.RecordBatch]:
    """Each customer's profile's list (``lists``: profile_id, article_id, score), ranked as
    ``ranked_candidates`` ranks (score descending, then article id; at most ``max_candidates``), as
    record batches of ``RANKED_SCHEMA`` in customer then rank order, ``chunk`` customers a batch."""
    ranked = lists.iloc[np.lexsort((lists["article_id"].to_numpy(), -lists["score"].to_numpy(np.float64), lists["profile_id"].to_numpy()))]
    ranked_profiles = ranked["profile_id"].to_numpy(np.int64)
    rank = position_in_runs(ranked_profiles) + 1
    ranked = ranked[rank <= max_candidates]
    ranked_profiles, rank = ranked_profiles[rank <= max_candidates], rank[rank <= max_candidates]
    articles = ranked["article_id"].to_numpy(np.int32)
    scores = ranked["score"].to_numpy(np.float64).astype(np.float32)
    ranks = rank.astype(np.int16)
    order = np.argsort(customers, kind="stable")
    customers, profile_ids = customers[order], profile_ids[order]
    for start in range(0, len(customers), chunk):
        who, rows = matching_rows(ranked_profiles, profile_ids[start : start + chunk])
        yield pa.RecordBatch.from_arrays(
            [pa.array(customers[start : start + chunk][who]), pa.array(articles[rows]), pa.array(scores[rows]), pa.array(ranks[rows])],
            schema=RANKED_SCHEMA,
        )


RETRIEVER = Retriever(
    name="popularity_model",
    description="LightGBM on customer attributes picks the top-100 of last week's 600 bestsellers per "
    "customer profile; covers customers with no history (cold start).",
    fit=fit_popularity,
    retrieve=popularity_model_candidates,
    config_class=PopularityModelConfig,
    kinds=frozenset({"duckdb", "lightgbm"}),
)
