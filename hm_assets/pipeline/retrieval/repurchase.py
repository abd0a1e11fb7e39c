"""Repurchase: the customer's own recent purchases, scored by recency and frequency."""

from __future__ import annotations

import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig


class RepurchaseConfig(RetrieverConfig):
    max_candidates: int = 30
    lookback_weeks: int = 12
    half_life_days: float = 14.0


def repurchase_candidates(ctx: RetrievalContext, config: RepurchaseConfig, state: None = None) -> pd.DataFrame:
    return ctx.con.execute(
        """
        SELECT customer_key, article_id,
               sum(pow(0.5, ($cutoff::DATE - t_dat) / $half_life)) AS score
        FROM transactions
        WHERE t_dat >= $start
        GROUP BY customer_key, article_id
        """,
        {"cutoff": ctx.cutoff, "start": ctx.lookback_start(config.lookback_weeks), "half_life": config.half_life_days},
    ).df()


RETRIEVER = Retriever(
    name="repurchase",
    description="The customer's own purchases of the last weeks, scored by recency-decayed frequency.",
    retrieve=repurchase_candidates,
    config_class=RepurchaseConfig,
)
