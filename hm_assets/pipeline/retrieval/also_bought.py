"""Also bought: articles that other customers bought together with the customer's recent purchases.

Two articles are "bought together" when the same customer bought both on the same day. For each
article we keep its strongest partners (co-purchase count normalised by the article's buyers),
then every customer gets the partners of their recent purchases, weighted by recency.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, recency_weight, recent_purchase_seeds


class AlsoBoughtConfig(RetrieverConfig):
    max_candidates: int = 40
    lookback_weeks: int = 8
    pair_weeks: int = 12
    partners_per_article: int = 20
    seed_articles: int = 10
    half_life_days: float = 14.0


def co_purchase_pairs(ctx: RetrievalContext, config: AlsoBoughtConfig) -> pd.DataFrame:
    """article_id -> partner_id with a normalised co-purchase strength, top partners only."""
    return ctx.con.execute(
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
    ).df()


def also_bought_candidates(ctx: RetrievalContext, config: AlsoBoughtConfig, pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs``: the week's ``co_purchase_pairs`` (the fitted state)."""
    pairs = pairs.rename(columns={"article_id": "seed_id", "partner_id": "article_id"})
    seeds = recent_purchase_seeds(ctx, config.lookback_weeks, config.seed_articles)
    seeds = seeds.assign(weight=recency_weight(seeds["days_ago"], config.half_life_days)).rename(
        columns={"article_id": "seed_id"}
    )
    scored = seeds.merge(pairs, on="seed_id")
    scored["score"] = scored["weight"] * scored["strength"]
    return scored.groupby(["customer_key", "article_id"], as_index=False)["score"].sum()


RETRIEVER = Retriever(
    name="also_bought",
    description="Other customers also bought: same-day co-purchase partners of the customer's recent purchases.",
    fit=co_purchase_pairs,
    retrieve=also_bought_candidates,
    config_class=AlsoBoughtConfig,
)
