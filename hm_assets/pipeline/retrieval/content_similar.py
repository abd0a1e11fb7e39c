"""Shared logic of the content retrievers (image, text, attribute similarity).

For each customer: the seeds are the most recent ``max_seeds`` distinct articles bought in
the last ``lookback_weeks`` before the cut-off. Every distinct seed is looked up once in the
hnswlib index (one batched ``knn_query``), and each neighbour gets

    score(customer, article) = sum over the customer's seeds s of
                               similarity(s, article) * 0.5 ** (days since s was bought / half_life_days)

Neighbours with similarity <= ``min_similarity`` (default 0) are dropped. Articles the customer
has already bought (whole history before the cut-off) are excluded, and with ``on_sale_only``
so are articles nobody bought in the last ``on_sale_weeks`` (not buyable any more). Because
that filter is applied after the search, each seed asks the index for
``neighbours_per_seed / share of the catalogue on sale`` neighbours (capped at
``max_query_neighbours``) so that enough buyable ones survive. The best
``neighbours_per_seed`` survivors of each seed are kept, and at most ``max_candidates`` per
customer are returned.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from hm_assets.pipeline.features.embeddings.index import ContentIndex, load_index
from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, last_purchases, recent_purchase_seeds
from hm_assets.platform.arrays import matching_rows, pairs_in, position_in_runs, run_starts


class ContentSimilarConfig(RetrieverConfig):
    max_candidates: int = 30
    lookback_weeks: int = 4
    max_seeds: int = 5
    neighbours_per_seed: int = 30
    half_life_days: float = 14.0
    on_sale_only: bool = True
    on_sale_weeks: int = 4
    max_query_neighbours: int = 1000
    min_similarity: float = 0.0
    query_threads: int = -1


def empty_candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_key": pd.Series(dtype="int64"),
            "article_id": pd.Series(dtype="int32"),
            "score": pd.Series(dtype="float64"),
        }
    )


def recent_seeds(ctx: RetrievalContext, config: ContentSimilarConfig) -> pd.DataFrame:
    """customer_key, article_id, days_ago: each customer's most recent distinct purchases."""
    return recent_purchase_seeds(ctx, config.lookback_weeks, config.max_seeds)


def on_sale_articles(ctx: RetrievalContext, weeks: int) -> np.ndarray:
    return ctx.con.execute(
        "SELECT DISTINCT article_id FROM transactions WHERE t_dat >= $start AND t_dat < $cutoff",
        {"start": ctx.lookback_start(weeks), "cutoff": ctx.cutoff},
    ).df()["article_id"].to_numpy(np.int32)


@dataclass
class ContentState:
    """The fitted state: the articles on sale and how many neighbours a seed asks the index for.

    The index itself is its own (unpartitioned) asset: it is opened on first use and kept with the
    state in memory, never pickled with it."""

    on_sale: np.ndarray | None  # None: on_sale_only is off
    query_neighbours: int
    index: ContentIndex | None = field(default=None, compare=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _on_sale_labels: tuple[ContentIndex, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict:
        return {"on_sale": self.on_sale, "query_neighbours": self.query_neighbours}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_sale_labels(self, index: ContentIndex) -> np.ndarray:
        """Whether each label of ``index`` is an article on sale (computed once per opened index)."""
        cached = self._on_sale_labels
        if cached is None or cached[0] is not index:
            cached = self._on_sale_labels = (index, np.isin(index.article_ids, self.on_sale))
        return cached[1]

    def opened(self, target: Path) -> ContentIndex:
        with self._opening:  # concurrent online requests open it once
            if self.index is None:
                self.index = load_index(target)
        return self.index


def fit_content(ctx: RetrievalContext, config: ContentSimilarConfig, index_asset: str) -> ContentState:
    index = load_index(ctx.inputs[index_asset])
    if not config.on_sale_only:
        return ContentState(None, config.neighbours_per_seed, index)
    on_sale = on_sale_articles(ctx, config.on_sale_weeks)
    share = np.isin(index.article_ids, on_sale).mean() if len(index) else 0.0
    k = min(config.max_query_neighbours, math.ceil(config.neighbours_per_seed / share)) if share > 0 else 0
    return ContentState(on_sale, k, index)


def content_similar_candidates(
    ctx: RetrievalContext, config: ContentSimilarConfig, state: ContentState, index_asset: str
) -> pd.DataFrame:
    """Candidates from the index stored by asset ``index_asset`` (path in ``ctx.inputs``)."""
    seeds = recent_seeds(ctx, config)
    if seeds.empty:
        return empty_candidates()
    index = state.opened(ctx.inputs[index_asset])
    if not len(index):
        ctx.log.warning(f"{index_asset} is empty: no candidates")
        return empty_candidates()
    if state.query_neighbours == 0:  # nothing of the index is on sale
        return empty_candidates()
    if ctx.shared is not None:
        return _scored_in_memory(ctx, config, seeds, *_neighbour_arrays(index, state, seeds, config))
    neighbours = index.neighbours(seeds["article_id"].to_numpy(), state.query_neighbours, threads=config.query_threads)
    if state.on_sale is not None:
        neighbours = neighbours[neighbours["article_id"].isin(state.on_sale)]
    neighbours = neighbours[neighbours["similarity"] > config.min_similarity]  # dissimilar "neighbours" add nothing
    # the best neighbours_per_seed survivors of each seed (rows come ordered by similarity)
    neighbours = neighbours.groupby("seed_article_id", sort=False).head(config.neighbours_per_seed)
    if neighbours.empty:
        return empty_candidates()
    con = ctx.con
    con.register("content_seeds", seeds)
    con.register("content_neighbours", neighbours)
    try:
        return con.execute(
            """
            WITH scored AS (
                SELECT s.customer_key, n.article_id,
                       -- summed as exact decimals: a float sum's last bits follow DuckDB's threads, and
                       -- tied candidates (frequent with attribute vectors) then swapped ranks run to run
                       CAST(sum(CAST(n.similarity * pow(0.5, s.days_ago / $half_life) AS DECIMAL(18, 12))) AS DOUBLE) AS score
                FROM content_seeds s JOIN content_neighbours n ON n.seed_article_id = s.article_id
                GROUP BY s.customer_key, n.article_id
            ),
            bought AS (
                SELECT DISTINCT customer_key, article_id FROM transactions
                WHERE t_dat < $cutoff AND customer_key IN (SELECT customer_key FROM content_seeds)
            )
            SELECT customer_key, CAST(article_id AS INTEGER) AS article_id, score
            FROM scored
            WHERE NOT EXISTS (
                SELECT 1 FROM bought b WHERE b.customer_key = scored.customer_key AND b.article_id = scored.article_id
            )
            QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY score DESC, article_id) <= $max_candidates
            """,
            {"half_life": config.half_life_days, "cutoff": ctx.cutoff, "max_candidates": config.max_candidates},
        ).df()
    finally:
        con.unregister("content_seeds")
        con.unregister("content_neighbours")


# DECIMAL(18, 12): the SQL's exact sums of terms rounded to 12 decimals
DECIMAL_SCALE = 1e12


def _neighbour_arrays(
    index: ContentIndex, state: ContentState, seeds: pd.DataFrame, config: ContentSimilarConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The neighbours the batch path keeps (on sale, similar enough, the best ``neighbours_per_seed``
    of each seed), as arrays: seed_article_id, article_id, similarity. One thread: a call's few
    queries cost less than starting more, and a service runs calls side by side."""
    seed, label, article, similarity = index.neighbour_arrays(seeds["article_id"].to_numpy(), state.query_neighbours, threads=1)
    keep = similarity > config.min_similarity
    if state.on_sale is not None:
        keep &= state.on_sale_labels(index)[label]
    seed, article, similarity = seed[keep], article[keep], similarity[keep]
    best = position_in_runs(seed) < config.neighbours_per_seed  # rows come by seed, by similarity
    return seed[best], article[best], similarity[best]


def _scored_in_memory(
    ctx: RetrievalContext, config: ContentSimilarConfig, seeds: pd.DataFrame,
    seed_ids: np.ndarray, neighbour_ids: np.ndarray, similarity: np.ndarray,
) -> pd.DataFrame:
    """The SQL of ``content_similar_candidates`` for the few customers of an online call, in memory
    and to the bit: each term rounded to 12 decimals and summed exactly as the SQL's DECIMAL, the
    customer's earlier purchases left out, the best ``max_candidates`` by score then article id."""
    if not len(seed_ids):
        return empty_candidates()
    by_seed = np.argsort(seed_ids, kind="stable")
    seed_rows, pair_rows = matching_rows(seed_ids[by_seed], seeds["article_id"].to_numpy())
    pair_rows = by_seed[pair_rows]
    customer = seeds["customer_key"].to_numpy(np.int64)[seed_rows]
    article = neighbour_ids.astype(np.int64)[pair_rows]
    decay = np.power(0.5, seeds["days_ago"].to_numpy(np.float64)[seed_rows] / config.half_life_days)
    terms = np.rint(similarity.astype(np.float64)[pair_rows] * decay * DECIMAL_SCALE).astype(np.int64)
    bought = last_purchases(ctx)
    fresh = ~pairs_in(customer, article, bought["customer_key"].to_numpy(np.int64), bought["article_id"].to_numpy(np.int64))
    customer, article, terms = customer[fresh], article[fresh], terms[fresh]
    if not len(terms):
        return empty_candidates()
    order = np.lexsort((article, customer))
    customer, article, terms = customer[order], article[order], terms[order]
    starts = np.flatnonzero(run_starts(customer, article))
    customer, article = customer[starts], article[starts]
    score = np.add.reduceat(terms, starts).astype(np.float64) / DECIMAL_SCALE
    best = np.lexsort((article, -score, customer))
    best = best[position_in_runs(customer[best]) < config.max_candidates]
    return pd.DataFrame({"customer_key": customer[best], "article_id": article[best].astype(np.int32), "score": score[best]})


def content_retriever(
    name: str, index_asset: str, config_class: type[ContentSimilarConfig], description: str
) -> Retriever:
    """A content retriever over the index stored by asset ``index_asset``."""
    return Retriever(
        name=name,
        description=description,
        fit=partial(fit_content, index_asset=index_asset),
        retrieve=partial(content_similar_candidates, index_asset=index_asset),
        config_class=config_class,
        deps=(index_asset,),
        kinds=frozenset({"duckdb", "hnswlib"}),
        unique_pairs=True,
    )
