"""Taste similar: the week's selling articles nearest the customer's taste.

A customer's taste is the recency-weighted mean of the ALS vectors of what they bought (the same
vector as the pair features' ``taste_long``, ``hm_assets/pipeline/features/taste.py``). The pool is
the articles that sold in the last days, the best sellers first; each is scored by its cosine with
the customer's taste plus a small weight on the log of its recent sales, so that among articles of
one style the ones selling now come first. Where ``purchase_history_similar`` finds the neighbours of
a few recent purchases, this weighs every purchase of the window at once: the style a customer keeps
buying in, across articles near none of their latest purchases. The pair features' taste cosines
rank a candidate well only once some retriever has proposed it; this one proposes by them.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from hm_assets.pipeline.features.taste import LONG_HALF_LIFE_DAYS, read_article_taste, taste_vectors
from hm_assets.pipeline.retrieval.base import (
    RANKED_SCHEMA,
    RankedLists,
    RetrievalContext,
    Retriever,
    RetrieverConfig,
    customer_purchases,
    decay_weights,
)
from hm_assets.pipeline.retrieval.purchase_history_similar import PurchaseHistoryConfig
from hm_assets.platform.arrays import matching_rows, run_starts


class TasteSimilarConfig(RetrieverConfig):
    max_candidates: int = 40
    # the taste reads the purchases of the ALS window (PurchaseHistoryConfig.matrix_weeks)
    lookback_weeks: int = PurchaseHistoryConfig().matrix_weeks
    # the pool: the best sellers of the last days (by sales decayed by day)
    pool_size: int = 3000
    sales_days: int = 14
    sales_half_life_days: float = 5.0
    # score = cosine with the taste + popularity_weight x log(decayed sales)
    popularity_weight: float = 0.1
    # customers scored at once (a chunk x pool matrix of float64), chunks scored side by side
    chunk: int = 2_000
    threads: int = 2


@dataclass(frozen=True)
class TastePool:
    """The fitted state: every article's unit ALS vector (``ids`` sorted), and the pool's rows of
    them with their log sales."""

    ids: np.ndarray
    vectors: np.ndarray
    pool: np.ndarray  # rows of ``ids`` in the pool
    log_sales: np.ndarray

    @classmethod
    def empty(cls, dimensions: int = 1) -> "TastePool":
        return cls(np.zeros(0, np.int32), np.zeros((0, dimensions), np.float32), np.zeros(0, np.int64), np.zeros(0))


def fit_pool(ctx: RetrievalContext, config: TasteSimilarConfig) -> TastePool:
    """The week's article vectors (``article_taste``: the ALS factorisation purchase_history_similar
    fits once per week) and the pool of the last days' best sellers among them."""
    taste = read_article_taste(ctx.inputs["article_taste"])
    ids, vectors = taste.ids, taste.vectors
    if len(ids) < 2:
        return TastePool.empty()
    daily = ctx.con.execute(
        """
        SELECT article_id, CAST($cutoff::DATE - t_dat AS INTEGER) AS days, count(*) AS purchases
        FROM transactions
        WHERE t_dat >= $cutoff::DATE - $sales_days AND t_dat < $cutoff
        GROUP BY ALL
        ORDER BY article_id, days
        """,
        {"cutoff": ctx.cutoff, "sales_days": config.sales_days},
    ).fetchnumpy()
    article = daily["article_id"].astype(np.int64)
    weight = daily["purchases"].astype(np.float64) * decay_weights(daily["days"].astype(np.int64), config.sales_half_life_days)
    # each article's days summed in one fixed order (the rows come sorted): the same pool in every run
    starts = run_starts(article)
    sales = np.bincount(np.cumsum(starts) - 1, weights=weight)
    known, rows = matching_rows(ids, article[starts])
    sales = sales[known]
    best = np.lexsort((ids[rows], -sales))[: config.pool_size]
    best = best[np.argsort(rows[best], kind="stable")]
    return TastePool(ids, vectors, rows[best], np.log(sales[best]))


def taste_similar_candidates(ctx: RetrievalContext, config: TasteSimilarConfig, pool: TastePool) -> RankedLists | pd.DataFrame:
    """Each customer's ``max_candidates`` best of the pool: in the batch handed over ranked (score
    descending, then article); online, for the call's few customers, as rows the caller ranks like any
    retriever's (by the same float64 scores, so in the same order)."""
    keys, taste = _customer_taste(ctx, config, pool)
    best = _best_of_pool(keys, taste, config, pool)
    if ctx.shared is not None:
        found = list(best)
        return pd.DataFrame({
            "customer_key": np.concatenate([np.zeros(0, np.int64), *(c for c, _, _, _ in found)]),
            "article_id": np.concatenate([np.zeros(0, np.int32), *(a for _, a, _, _ in found)]),
            "score": np.concatenate([np.zeros(0), *(s for _, _, s, _ in found)]),
        })
    return RankedLists(
        pa.RecordBatch.from_arrays(
            [pa.array(customer), pa.array(article), pa.array(score.astype(np.float32)), pa.array(rank)], schema=RANKED_SCHEMA
        )
        for customer, article, score, rank in best
    )


def _customer_taste(ctx: RetrievalContext, config: TasteSimilarConfig, pool: TastePool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted customer keys and their long-term taste (``taste_long`` of the pair features), from their
    purchases in the window: in the batch every customer's, online the call's (read once)."""
    if not len(pool.pool):
        return np.zeros(0, np.int64), np.zeros((0, pool.vectors.shape[1]), np.float32)
    window = 7 * config.lookback_weeks
    if ctx.shared is not None:
        bought = customer_purchases(ctx)
        days = bought["days_ago"].to_numpy(np.int64)
        keep = days <= window
        customer, article, days = bought["customer_key"].to_numpy(np.int64)[keep], bought["article_id"].to_numpy(np.int64)[keep], days[keep]
    else:
        rows = ctx.con.execute(
            "SELECT customer_key, article_id, CAST($cutoff::DATE - t_dat AS INTEGER) AS days FROM transactions "
            "WHERE t_dat >= $cutoff::DATE - $window AND t_dat < $cutoff",
            {"cutoff": ctx.cutoff, "window": window},
        ).fetchnumpy()
        customer, article, days = rows["customer_key"].astype(np.int64), rows["article_id"].astype(np.int64), rows["days"].astype(np.int64)
    # one order of each customer's purchases, whoever reads them: the taste's sums then round alike
    order = np.lexsort((days, article, customer))
    return taste_vectors(
        customer[order], article[order], days[order].astype(np.float64), pool.ids, pool.vectors, half_lives=(LONG_HALF_LIFE_DAYS,)
    )


def _best_of_pool(
    keys: np.ndarray, taste: np.ndarray, config: TasteSimilarConfig, pool: TastePool
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(customer, article, float64 score, rank) of each customer's best ``max_candidates`` of the pool
    in rank order (score descending, then article id, as the framework ranks), ``chunk`` customers at
    a time."""
    if not len(keys):
        return
    # minus the scores in one product: (taste, 1) . -(vector, weight x log sales), the smallest first
    negated = -np.hstack([pool.vectors[pool.pool].astype(np.float64), config.popularity_weight * pool.log_sales[:, None]]).T
    articles = pool.ids[pool.pool].astype(np.int32)
    n = min(config.max_candidates, len(articles))
    ranks = np.tile(np.arange(1, n + 1, dtype=np.int16), config.chunk)

    def best(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        chunk = taste[start : start + config.chunk]
        scores = np.hstack([chunk.astype(np.float64), np.ones((len(chunk), 1))]) @ negated
        top = np.argpartition(scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else np.broadcast_to(np.arange(n), scores.shape)
        lowest = np.take_along_axis(scores, top, axis=1)
        chosen = articles[top]
        order = np.lexsort((chosen, lowest), axis=1)
        return (
            np.repeat(keys[start : start + config.chunk], n),
            np.take_along_axis(chosen, order, axis=1).ravel(),
            -np.take_along_axis(lowest, order, axis=1).ravel(),
            ranks[: chosen.size],
        )

    starts = range(0, len(keys), config.chunk)
    if len(starts) == 1 or config.threads <= 1:
        yield from map(best, starts)
        return
    # the product and the selection release the GIL: a few chunks at a time, in order
    with ThreadPoolExecutor(config.threads) as workers:
        for first in range(0, len(starts), config.threads):
            yield from workers.map(best, starts[first : first + config.threads])


RETRIEVER = Retriever(
    name="taste_similar",
    description="The week's best-selling articles nearest the customer's ALS taste (their purchases' vectors), by cosine.",
    fit=fit_pool,
    retrieve=taste_similar_candidates,
    config_class=TasteSimilarConfig,
    weekly_deps=("article_taste",),
    kinds=frozenset({"numpy"}),
)
