"""Purchase-history similarity: articles bought by the same people as the customer's recent purchases.

A customer x article matrix of recent purchases (recency-weighted) is factorised with implicit's
ALS; articles are then neighbours when their factor vectors are close (hnswlib, cosine), and each
customer gets the neighbours of their most recent purchases.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import hnswlib
import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, recency_weight, recent_purchase_seeds
from hm_assets.platform.arrays import compensated_sums, group_rows, matching_rows


class PurchaseHistoryConfig(RetrieverConfig):
    max_candidates: int = 40
    lookback_weeks: int = 6
    matrix_weeks: int = 16
    factors: int = 64
    iterations: int = 12
    regularization: float = 1.0
    alpha: float = 10.0
    neighbours: int = 20
    seed_articles: int = 6
    half_life_days: float = 14.0
    threads: int = 2


def purchase_matrix(ctx: RetrievalContext, config: PurchaseHistoryConfig) -> pd.DataFrame:
    return ctx.con.execute(
        """
        SELECT customer_key, article_id, sum(pow(0.5, ($cutoff::DATE - t_dat) / 28.0)) AS weight
        FROM transactions WHERE t_dat >= $start GROUP BY 1, 2
        """,
        {"cutoff": ctx.cutoff, "start": ctx.lookback_start(config.matrix_weeks)},
    ).df()


def article_factors(matrix: pd.DataFrame, config: PurchaseHistoryConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(article ids, their ALS factor vectors) from a customer x article weight table."""
    from implicit.cpu.als import AlternatingLeastSquares

    customer_codes, _ = pd.factorize(matrix["customer_key"], sort=True)
    article_codes, article_ids = pd.factorize(matrix["article_id"], sort=True)
    user_items = sp.csr_matrix(
        (matrix["weight"].to_numpy(np.float32) * config.alpha, (customer_codes, article_codes)),
        shape=(customer_codes.max() + 1, len(article_ids)),
    )
    # implicit runs its own threads; a multithreaded BLAS underneath only oversubscribes the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            iterations=config.iterations,
            regularization=config.regularization,
            random_state=seed,
            num_threads=config.threads,
        )
        model.fit(user_items, show_progress=False)
    return np.asarray(article_ids, dtype=np.int32), np.asarray(model.item_factors, dtype=np.float32)


@dataclass
class ArticleNeighbours:
    """The fitted state: the articles' ALS factors and a cosine hnswlib index over them."""

    ids: np.ndarray
    vectors: np.ndarray
    index: hnswlib.Index | None

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, seed: int) -> "ArticleNeighbours":
        if len(ids) < 2:
            return cls(ids, vectors, None)
        index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        index.init_index(max_elements=len(ids), ef_construction=100, M=16, random_seed=seed)
        index.add_items(vectors, np.arange(len(ids)), num_threads=1)
        return cls(ids, vectors, index)

    @cached_property
    def _rows(self) -> pd.Index:
        # built once per loaded state (a per-call hash table over every article cost most of an online call)
        return pd.Index(self.ids)

    def rows(self, article_ids: np.ndarray) -> np.ndarray:
        """Row of each article in ``ids`` (-1 when it has no factors)."""
        return self._rows.get_indexer(np.asarray(article_ids))

    def neighbour_arrays(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each query article (must be in ``ids``; the index must exist): its k nearest other
        articles, as arrays query, neighbour, cosine similarity, by query then nearness."""
        query_rows = self.rows(queries)
        if (query_rows < 0).any():
            raise KeyError("some query articles have no factors")
        k = min(k + 1, len(self.ids))
        labels, distances = self.index.knn_query(self.vectors[query_rows], k=k, num_threads=1)
        query, neighbour, similarity = np.repeat(queries, k), self.ids[labels.ravel()], 1.0 - distances.ravel()
        other = neighbour != query
        return query[other], neighbour[other], similarity[other]

    def nearest(self, queries: np.ndarray, k: int) -> pd.DataFrame:
        """``neighbour_arrays`` as a frame: article_id, neighbour_id, similarity."""
        if self.index is None or not len(queries):
            return pd.DataFrame({"article_id": pd.Series(dtype="int32"), "neighbour_id": pd.Series(dtype="int32"),
                                 "similarity": pd.Series(dtype="float32")})
        query, neighbour, similarity = self.neighbour_arrays(queries, k)
        return pd.DataFrame({"article_id": query, "neighbour_id": neighbour, "similarity": similarity})


def fit_neighbours(ctx: RetrievalContext, config: PurchaseHistoryConfig) -> ArticleNeighbours:
    matrix = purchase_matrix(ctx, config)
    if matrix["article_id"].nunique() < 2:
        return ArticleNeighbours(np.zeros(0, np.int32), np.zeros((0, config.factors), np.float32), None)
    ids, vectors = article_factors(matrix, config, ctx.seed)
    state = ArticleNeighbours.build(ids, vectors, ctx.seed)
    state.index.set_ef(max(50, config.neighbours + 1))  # kept by the pickle; never changed by a query
    return state


def purchase_history_candidates(ctx: RetrievalContext, config: PurchaseHistoryConfig, state: ArticleNeighbours) -> pd.DataFrame:
    if state.index is None:
        return pd.DataFrame(columns=["customer_key", "article_id", "score"])
    seeds = recent_purchase_seeds(ctx, config.lookback_weeks, config.seed_articles)
    seeds["weight"] = recency_weight(seeds["days_ago"], config.half_life_days)
    seeds = seeds[state.rows(seeds["article_id"].to_numpy()) >= 0]
    if ctx.shared is not None:
        return _scored_in_memory(seeds, state, config)
    neighbours = state.nearest(seeds["article_id"].unique(), config.neighbours)
    scored = seeds.merge(neighbours, on="article_id")
    scored["score"] = scored["weight"] * scored["similarity"]
    return (
        scored.groupby(["customer_key", "neighbour_id"], as_index=False)["score"]
        .sum()
        .rename(columns={"neighbour_id": "article_id"})
    )


def _scored_in_memory(seeds: pd.DataFrame, state: ArticleNeighbours, config: PurchaseHistoryConfig) -> pd.DataFrame:
    """The merge and group sum above for the few customers of an online call, over arrays and to the
    bit: the rows in the merge's order, each group summed as pandas sums (compensated, in row order)."""
    queries = seeds["article_id"].unique()
    if not len(queries):
        return pd.DataFrame({"customer_key": seeds["customer_key"].iloc[:0], "article_id": pd.Series(dtype="int32"),
                             "score": pd.Series(dtype="float64")})
    query, neighbour, similarity = state.neighbour_arrays(queries, config.neighbours)
    # seeds.merge(neighbours, on="article_id"): each seed row in order, then its neighbours in order
    by_query = np.argsort(query, kind="stable")
    seed_rows, pair_rows = matching_rows(query[by_query], seeds["article_id"].to_numpy())
    pair_rows = by_query[pair_rows]
    customer = seeds["customer_key"].to_numpy()[seed_rows]
    article = neighbour[pair_rows]
    value = seeds["weight"].to_numpy()[seed_rows] * similarity[pair_rows]
    number, first = group_rows(customer, article)
    return pd.DataFrame({
        "customer_key": customer[first],
        "article_id": article[first],
        "score": compensated_sums(number, value, len(first)),
    })


RETRIEVER = Retriever(
    name="purchase_history_similar",
    description="Articles close to the customer's recent purchases in an implicit-ALS factorisation of the "
    "customer x article matrix, neighbours found with hnswlib.",
    fit=fit_neighbours,
    retrieve=purchase_history_candidates,
    config_class=PurchaseHistoryConfig,
    kinds=frozenset({"duckdb", "implicit", "hnswlib"}),
    unique_pairs=True,
)
