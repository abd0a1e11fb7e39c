"""Repurchase: the customer's own recent purchases, scored by recency and frequency."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, customer_purchases, decay_weights
from hm_assets.platform.arrays import group_rows


class RepurchaseConfig(RetrieverConfig):
    max_candidates: int = 30
    lookback_weeks: int = 12
    half_life_days: float = 14.0


def repurchase_candidates(ctx: RetrievalContext, config: RepurchaseConfig, state: None = None) -> pd.DataFrame:
    if ctx.shared is not None:
        return _scored_in_memory(ctx, config)
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


def _scored_in_memory(ctx: RetrievalContext, config: RepurchaseConfig) -> pd.DataFrame:
    """The SQL above for the few customers of an online call, from their purchases read once: each
    (customer, article)'s weights summed in row order."""
    bought = customer_purchases(ctx)
    days = bought["days_ago"].to_numpy(np.int64)
    recent = days <= (ctx.cutoff - ctx.lookback_start(config.lookback_weeks)).days
    customer = bought["customer_key"].to_numpy(np.int64)[recent]
    article = bought["article_id"].to_numpy()[recent]
    number, first = group_rows(customer, article)
    score = np.bincount(number, weights=decay_weights(days[recent], config.half_life_days), minlength=len(first))
    return pd.DataFrame({"customer_key": customer[first], "article_id": article[first], "score": score})


RETRIEVER = Retriever(
    name="repurchase",
    description="The customer's own purchases of the last weeks, scored by recency-decayed frequency.",
    retrieve=repurchase_candidates,
    config_class=RepurchaseConfig,
    unique_pairs=True,
)
