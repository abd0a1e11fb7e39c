"""Also bought: articles that other customers bought together with the customer's recent purchases.

Two articles are "bought together" when the same customer bought both on the same day. For each
article we keep its strongest partners (co-purchase count normalised by the article's buyers),
then every customer gets the partners of their recent purchases, weighted by recency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, recency_weight, recent_purchase_seeds
from hm_assets.platform.arrays import matching_rows


class AlsoBoughtConfig(RetrieverConfig):
    max_candidates: int = 40
    lookback_weeks: int = 8
    pair_weeks: int = 12
    partners_per_article: int = 20
    seed_articles: int = 10
    half_life_days: float = 14.0


@dataclass
class CoPurchasePairs:
    """The fitted state: every article's strongest partners (article_id, partner_id, strength), the
    rows of one article together, so that a customer's seeds find theirs without a scan of the whole
    table (2M rows at full scale, where a merge per online call cost more than the rest of it)."""

    pairs: pd.DataFrame

    @classmethod
    def of(cls, pairs: pd.DataFrame) -> "CoPurchasePairs":
        order = np.argsort(pairs["article_id"].to_numpy(), kind="stable")
        return cls(pairs.iloc[order].reset_index(drop=True))

    def partners(self, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every partner of every seed: (the seed's position in ``seeds``, the partner's row), in
        seed order, then in the table's order (the order of an inner merge of seeds with the pairs)."""
        return matching_rows(self.pairs["article_id"].to_numpy(), seeds)


def co_purchase_pairs(ctx: RetrievalContext, config: AlsoBoughtConfig) -> CoPurchasePairs:
    """article_id -> partner_id with a normalised co-purchase strength, top partners only."""
    return CoPurchasePairs.of(ctx.con.execute(
        """
        WITH baskets AS (
            SELECT DISTINCT customer_key, t_dat, article_id FROM transactions WHERE t_dat >= $start
        ),
        pairs AS (
            SELECT a.article_id, b.article_id AS partner_id, count(*) AS together
            FROM baskets a JOIN baskets b
              ON a.customer_key = b.customer_key AND a.t_dat = b.t_dat AND a.article_id <> b.article_id
            GROUP BY 1, 2
        ),
        buyers AS (SELECT article_id, count(*) AS baskets FROM baskets GROUP BY 1)
        SELECT article_id, partner_id, together / sqrt(buyers.baskets) AS strength
        FROM pairs JOIN buyers USING (article_id)
        QUALIFY row_number() OVER (PARTITION BY article_id ORDER BY together DESC, partner_id) <= $partners
        """,
        {"start": ctx.lookback_start(config.pair_weeks), "partners": config.partners_per_article},
    ).df())


def also_bought_candidates(ctx: RetrievalContext, config: AlsoBoughtConfig, state: CoPurchasePairs | pd.DataFrame) -> pd.DataFrame:
    """``state``: the week's ``co_purchase_pairs`` (a plain frame in weeks stored before it was indexed)."""
    pairs = state if isinstance(state, CoPurchasePairs) else CoPurchasePairs.of(state)
    seeds = recent_purchase_seeds(ctx, config.lookback_weeks, config.seed_articles)
    weight = recency_weight(seeds["days_ago"], config.half_life_days).to_numpy()
    seed_rows, pair_rows = pairs.partners(seeds["article_id"].to_numpy())
    scored = pd.DataFrame({
        "customer_key": seeds["customer_key"].to_numpy()[seed_rows],
        "article_id": pairs.pairs["partner_id"].to_numpy()[pair_rows],
        "score": weight[seed_rows] * pairs.pairs["strength"].to_numpy()[pair_rows],
    })
    return scored.groupby(["customer_key", "article_id"], as_index=False)["score"].sum()


RETRIEVER = Retriever(
    name="also_bought",
    description="Other customers also bought: same-day co-purchase partners of the customer's recent purchases.",
    fit=co_purchase_pairs,
    retrieve=also_bought_candidates,
    config_class=AlsoBoughtConfig,
    unique_pairs=True,
)
