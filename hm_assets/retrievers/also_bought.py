"""Also bought: articles that other customers bought together with the customer's recent purchases.

Two articles are "bought together" when the same customer bought both on the same day. For each
article we keep its strongest partners (co-purchase count normalised by the article's buyers),
then every customer gets the partners of their recent purchases, weighted by recency.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.retrievers.base import RetrievalContext, Retriever, RetrieverConfig


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


def also_bought_candidates(ctx: RetrievalContext, config: AlsoBoughtConfig) -> pd.DataFrame:
    pairs = co_purchase_pairs(ctx, config)
    ctx.con.register("co_purchase_pairs", pairs)
    try:
        return ctx.con.execute(
            """
            WITH seeds AS (
                SELECT customer_key, article_id, pow(0.5, ($cutoff::DATE - max(t_dat)) / $half_life) AS weight
                FROM transactions WHERE t_dat >= $start
                GROUP BY customer_key, article_id
                QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY max(t_dat) DESC, article_id) <= $seeds
            )
            SELECT s.customer_key, p.partner_id AS article_id, sum(s.weight * p.strength) AS score
            FROM seeds s JOIN co_purchase_pairs p USING (article_id)
            GROUP BY 1, 2
            """,
            {
                "cutoff": ctx.cutoff,
                "start": ctx.lookback_start(config.lookback_weeks),
                "half_life": config.half_life_days,
                "seeds": config.seed_articles,
            },
        ).df()
    finally:
        ctx.con.unregister("co_purchase_pairs")


RETRIEVER = Retriever(
    name="also_bought",
    description="Other customers also bought: same-day co-purchase partners of the customer's recent purchases.",
    generate=also_bought_candidates,
    config_class=AlsoBoughtConfig,
)
