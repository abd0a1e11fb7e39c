"""Taste vectors: where each article sits in the ALS factorisation of recent purchases, and where
each customer's purchases put them.

The article vectors are fitted once per week over every customer (the global part, the same ALS as
``purchase_history_similar``'s); a customer's vector is the recency-weighted mean of the vectors of
the articles they bought, so it depends only on the article vectors and that customer's own history
and is computed the same way for one customer online as for every customer in the week's batch.
The pair features then hold, for every candidate, the cosine of the article's vector with the
customer's long-term and recent taste: a dense taste signal where a retriever's score exists only
for its own candidates.

The vectors are also grouped into taste clusters (spherical k-means at two granularities) with each
article's share of its cluster's sales in the last week: the pair features then say how much of a
customer's history falls in the candidate's cluster and how much of that cluster's demand the
candidate takes, the two factors of a purchase that is "something in my style, among what is
selling in it now".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from hm_assets.pipeline.retrieval.base import RetrievalContext
from hm_assets.pipeline.retrieval.purchase_history_similar import PurchaseHistoryConfig, article_factors, purchase_matrix

# A customer's long-term taste weighs a purchase 8 weeks old half as much as one made yesterday; the
# recent taste, one a week old. Both read the ALS matrix's window (PurchaseHistoryConfig.matrix_weeks).
LONG_HALF_LIFE_DAYS = 56.0
RECENT_HALF_LIFE_DAYS = 7.0
VECTOR_TYPE = pa.list_(pa.float32())
# Taste clusters per article at two granularities (k of the spherical k-means).
CLUSTER_SIZES = (16, 64)
KMEANS_ITERATIONS = 30
# The customers whose taste the pair features need: those of the `candidates` view.
CANDIDATE_CUSTOMERS = "SELECT DISTINCT customer_key FROM candidates"


def unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to length 1 as float32 (rows of length 0 stay 0), and which rows had a length to scale."""
    norms = np.linalg.norm(vectors, axis=1)
    usable = norms > 0
    return (vectors / np.where(usable, norms, 1.0)[:, None]).astype(np.float32), usable


def vector_column(vectors: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, flat, type=VECTOR_TYPE)


def no_article_taste() -> pa.Table:
    return taste_table(np.zeros(0, np.int32), np.zeros((0, 1), np.float32), np.zeros(0), seed=0)


def taste_clusters(vectors: np.ndarray, k: int, seed: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Spherical k-means of unit vectors: each row's cluster (0..k-1). Seeded, so a week's clusters
    are the same in every run."""
    n = len(vectors)
    k = min(k, n)
    if k <= 1:
        return np.zeros(n, dtype=np.int16)
    rng = np.random.default_rng(seed)
    centres = vectors[rng.choice(n, k, replace=False)].astype(np.float64)
    labels = np.zeros(n, dtype=np.int64)
    for iteration in range(iterations):
        new_labels = np.argmax(vectors @ centres.T, axis=1)
        if iteration and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        sums = np.asarray(sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n)) @ vectors, dtype=np.float64)
        counts = np.bincount(labels, minlength=k)
        # an emptied cluster restarts at the row its centre explains worst
        for empty in np.flatnonzero(counts == 0):
            worst = int(np.argmin((vectors * centres[labels]).sum(axis=1)))
            sums[empty] = vectors[worst]
            labels[worst] = empty
        centres = unit_rows(sums)[0].astype(np.float64)
    return labels.astype(np.int16)


def taste_table(ids: np.ndarray, vectors: np.ndarray, sales_1w: np.ndarray, seed: int) -> pa.Table:
    """``article_taste``: article_id, vector, and per granularity k the article's taste cluster
    (``taste_cluster_<k>``) and its share of that cluster's sales in the last week
    (``taste_cluster_<k>_share_1w``, null when the cluster sold nothing)."""
    columns: dict[str, pa.Array] = {"article_id": pa.array(ids, pa.int32()), "vector": vector_column(vectors)}
    for k in CLUSTER_SIZES:
        labels = taste_clusters(vectors, k, seed)
        total = np.bincount(labels, weights=sales_1w, minlength=k)[labels]
        share = np.divide(sales_1w, total, out=np.zeros(len(labels)), where=total > 0)
        columns[f"taste_cluster_{k}"] = pa.array(labels, pa.int16())
        columns[f"taste_cluster_{k}_share_1w"] = pa.array(share.astype(np.float32), pa.float32(), mask=total <= 0)
    return pa.table(columns)


def article_taste(ctx: RetrievalContext, config: PurchaseHistoryConfig | None = None) -> pa.Table:
    """``taste_table`` of the articles bought in the matrix window before the cut-off: unit ALS
    factor vectors, taste clusters and last week's share of them. Empty when fewer than two
    articles were bought."""
    config = config or PurchaseHistoryConfig()
    matrix = purchase_matrix(ctx, config)
    if matrix["article_id"].nunique() < 2:
        return no_article_taste()
    return taste_of_factors(ctx, *article_factors(matrix, config, ctx.seed))


def taste_of_factors(ctx: RetrievalContext, ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """``article_taste`` of ALS factors fitted already (``purchase_history_similar``'s fitted state
    holds the week's: the weekly asset reads them there instead of fitting the same ALS twice)."""
    if len(ids) < 2:
        return no_article_taste()
    vectors, usable = unit_rows(vectors)
    ids = ids[usable]
    sold = ctx.con.execute(
        "SELECT article_id, count(*) AS n FROM transactions WHERE t_dat >= $start AND t_dat < $cutoff GROUP BY 1",
        {"start": ctx.lookback_start(1), "cutoff": ctx.cutoff},
    ).df()
    sales_1w = pd.Series(sold["n"].to_numpy(np.float64), index=sold["article_id"].to_numpy()).reindex(ids).fillna(0.0)
    return taste_table(ids, vectors[usable], sales_1w.to_numpy(), ctx.seed)


def vectors_of(articles: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(sorted article ids, their vectors) of an ``article_taste`` table."""
    ids = articles.column("article_id").to_numpy().astype(np.int32)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), dtype=np.float32)
    values = articles.column("vector").combine_chunks().flatten().to_numpy()
    vectors = values.reshape(len(ids), -1).astype(np.float32)
    order = np.argsort(ids, kind="stable")
    return ids[order], vectors[order]


@dataclass(frozen=True)
class ArticleTaste:
    """A week's article vectors, as stored and as arrays (converted once per reader)."""

    table: pa.Table
    ids: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> "ArticleTaste":
        return cls(table, *vectors_of(table))


def read_article_taste(path: Path) -> ArticleTaste:
    return ArticleTaste.of(pq.read_table(path))


def customer_taste(
    con: duckdb.DuckDBPyConnection,
    cutoff: date,
    article_ids: np.ndarray,
    article_vectors: np.ndarray,
    customers_sql: str,
    matrix_weeks: int | None = None,
) -> pa.Table:
    """(customer_key, taste_long, taste_recent) for the customers ``customers_sql`` selects (a query
    with a ``customer_key`` column) who bought an article with a vector in the window: unit
    recency-weighted means of those articles' vectors, read from the ``transactions`` view."""
    if len(article_ids) == 0:
        return _taste_table(np.zeros(0, np.int64), np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32))
    start = taste_window_start(cutoff, matrix_weeks)
    rows = con.execute(
        f"""
        SELECT customer_key, article_id, CAST($cutoff::DATE - t_dat AS DOUBLE) AS days
        FROM transactions SEMI JOIN ({customers_sql}) USING (customer_key)
        WHERE t_dat >= $start AND t_dat < $cutoff
        """,
        {"cutoff": cutoff, "start": start},
    ).fetchnumpy()
    return _taste_table(*taste_vectors(rows["customer_key"], rows["article_id"], rows["days"], article_ids, article_vectors))


def _taste_table(keys: np.ndarray, long: np.ndarray, recent: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "customer_key": pa.array(keys, pa.int64()),
            "taste_long": vector_column(long) if len(keys) else pa.array([], VECTOR_TYPE),
            "taste_recent": vector_column(recent) if len(keys) else pa.array([], VECTOR_TYPE),
        }
    )


def taste_window_start(cutoff: date, matrix_weeks: int | None = None) -> date:
    """The first day of the purchases a customer's taste reads (the ALS matrix's window)."""
    weeks = matrix_weeks or PurchaseHistoryConfig().matrix_weeks
    return (pd.Timestamp(cutoff) - pd.Timedelta(days=7 * weeks)).date()


def taste_vectors(
    customer_key: np.ndarray, article_id: np.ndarray, days: np.ndarray, article_ids: np.ndarray, article_vectors: np.ndarray,
    half_lives: tuple[float, ...] = (LONG_HALF_LIFE_DAYS, RECENT_HALF_LIFE_DAYS),
) -> tuple[np.ndarray, ...]:
    """The customers' taste from their purchases in the window (one row per purchase: customer,
    article, days before the cut-off; ``article_ids`` sorted), one profile per half-life (long-term and
    recent unless asked otherwise): sorted customer keys and one unit-row matrix per half-life.
    Customers none of whose articles has a vector are left out."""
    dim = article_vectors.shape[1] if article_vectors.ndim == 2 else 0
    none = (np.zeros(0, np.int64), *(np.zeros((0, dim), np.float32) for _ in half_lives))
    if len(article_ids) == 0 or len(customer_key) == 0:
        return none
    article = np.asarray(article_id, dtype=np.int64)
    position = np.searchsorted(article_ids, article)
    known = (position < len(article_ids)) & (article_ids[np.minimum(position, len(article_ids) - 1)] == article)
    if not known.any():
        return none
    keys, codes = np.unique(np.asarray(customer_key, dtype=np.int64)[known], return_inverse=True)
    days = np.asarray(days, dtype=np.float64)[known]
    shape = (len(keys), len(article_ids))
    profiles = []
    usable_all = np.ones(len(keys), dtype=bool)
    for half_life in half_lives:
        weights = sp.csr_matrix((0.5 ** (days / half_life), (codes, position[known])), shape=shape)
        profile, usable = unit_rows(np.asarray(weights @ article_vectors, dtype=np.float64))
        usable_all &= usable
        profiles.append(profile)
    if usable_all.all():
        return keys, *profiles
    return keys[usable_all], *(profile[usable_all] for profile in profiles)


def register_taste(con: duckdb.DuckDBPyConnection, cutoff: date, articles: ArticleTaste, customers_sql: str) -> None:
    """The views ``article_taste`` and ``customer_taste`` that ``sql/pair_features.sql`` joins:
    the week's article vectors (``read_article_taste``), and the taste of the customers
    ``customers_sql`` selects computed from the connection's ``transactions`` view (the batch's
    history, or online the history plus the purchases just made)."""
    con.register("article_taste", articles.table)
    con.register("customer_taste", customer_taste(con, cutoff, articles.ids, articles.vectors, customers_sql))
