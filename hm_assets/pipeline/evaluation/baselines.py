"""Baselines computed in the same run on the same data, to show what the ranker adds."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.evaluation.metrics import K


def last_week_top(con: duckdb.DuckDBPyConnection, cutoff, k: int = K) -> list[int]:
    """The k best-selling articles of the week before the cut-off (widened if that week is thin)."""
    for days in (7, 14, 28, 3650):
        top = con.execute(
            """
            SELECT article_id FROM transactions WHERE t_dat >= $cutoff::DATE - $days
            GROUP BY article_id ORDER BY count(*) DESC, article_id LIMIT $k
            """,
            {"cutoff": cutoff, "days": days, "k": k},
        ).df()["article_id"].tolist()
        if len(top) >= k:
            return top
    return top


def everyone_gets(customer_keys: np.ndarray, articles: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_key": np.repeat(customer_keys, len(articles)),
            "article_id": np.tile(np.asarray(articles, dtype=np.int32), len(customer_keys)),
            "rank": np.tile(np.arange(1, len(articles) + 1), len(customer_keys)),
        }
    )


def trending(con: duckdb.DuckDBPyConnection, cutoff, customer_keys: np.ndarray, k: int = K) -> pd.DataFrame:
    """Time-decayed popularity plus each customer's own recent purchases.

    As the public "trending products weekly" solution: each of a customer's purchases of the last
    3 weeks is worth the article's last-week sales relative to its sales on that day, decayed by the
    purchase's age; the customer's articles are ranked by that value, then filled with last week's
    best sellers.
    """
    own = con.execute(
        """
        WITH daily AS (
            SELECT article_id, t_dat, count(*) AS sold FROM transactions
            WHERE t_dat >= $cutoff::DATE - 21 GROUP BY ALL
        ),
        last_week AS (
            SELECT article_id, count(*) AS sold_last_week FROM transactions
            WHERE t_dat >= $cutoff::DATE - 7 GROUP BY ALL
        ),
        weighted AS (
            SELECT t.customer_key, t.article_id,
                   coalesce(l.sold_last_week, 0) / d.sold AS quotient,
                   greatest($cutoff::DATE - t.t_dat - 1, 1) AS age_days
            FROM transactions t
            JOIN daily d USING (article_id, t_dat)
            LEFT JOIN last_week l USING (article_id)
            WHERE t.t_dat >= $cutoff::DATE - 21
        )
        SELECT customer_key, article_id,
               sum(quotient * greatest(25000.0 / sqrt(age_days) + 150000.0 * exp(-0.2 * age_days) - 1000.0, 0)) AS value
        FROM weighted GROUP BY ALL
        """,
        {"cutoff": cutoff},
    ).df()
    own = own.sort_values(["customer_key", "value", "article_id"], ascending=[True, False, True], kind="mergesort")
    own["rank"] = own.groupby("customer_key").cumcount() + 1
    own = own[own["rank"] <= k][["customer_key", "article_id", "rank"]]
    popular = everyone_gets(customer_keys, last_week_top(con, cutoff, k))
    popular["rank"] += 100
    combined = pd.concat([own, popular], ignore_index=True)
    combined = combined.sort_values(["customer_key", "rank"], kind="mergesort").drop_duplicates(
        ["customer_key", "article_id"]
    )
    combined["rank"] = combined.groupby("customer_key").cumcount() + 1
    return combined[combined["rank"] <= k].reset_index(drop=True)
