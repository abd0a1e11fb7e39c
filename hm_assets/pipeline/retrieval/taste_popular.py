"""Taste popular: this week's bestsellers of the departments the customer buys from.

The customer's taste is their recency-weighted share of purchases per department (their few
strongest departments); each department's bestsellers of the last two weeks (decayed by day) are
scored by taste share x the article's share of its department's sales. Popularity by customer
attributes and by purchase category was among the strongest candidate sources of the best H&M
solutions; this is its personal form, cheap enough for every customer with history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig, customer_purchases, decay_weights
from hm_assets.platform.arrays import group_rows, matching_rows, position_in_runs, run_starts


class TastePopularConfig(RetrieverConfig):
    max_candidates: int = 40
    lookback_weeks: int = 16
    half_life_days: float = 28.0
    departments: int = 4
    per_department: int = 30
    sales_days: int = 14
    sales_half_life_days: float = 4.0


def department_bestsellers(ctx: RetrievalContext, config: TastePopularConfig) -> pd.DataFrame:
    """department_no, article_id, share: each department's bestsellers of the last days and their
    share of its (decayed) sales. Global: computed over every customer's purchases.

    The decayed sales are summed day by day in a fixed order, from the exact per-day counts: a SQL
    ``sum`` over the purchases adds up in parallel in no fixed order, so two articles with equal
    sales swapped places at a department's cut from one run to the next by the last bit."""
    daily = ctx.con.execute(
        """
        SELECT a.department_no, t.article_id, CAST($cutoff::DATE - t.t_dat AS INTEGER) AS days, count(*) AS purchases
        FROM transactions t JOIN articles a USING (article_id)
        WHERE t.t_dat >= $cutoff::DATE - $sales_days
        GROUP BY ALL
        ORDER BY a.department_no, t.article_id, days
        """,
        {"cutoff": ctx.cutoff, "sales_days": config.sales_days},
    ).df()
    department = daily["department_no"].to_numpy()
    article = daily["article_id"].to_numpy()
    weight = daily["purchases"].to_numpy(np.float64) * np.power(0.5, daily["days"].to_numpy(np.float64) / config.sales_half_life_days)
    # the rows come sorted by (department, article, days): each article's days are summed in that order
    starts = run_starts(department, article)
    sales = np.bincount(np.cumsum(starts) - 1, weights=weight)
    department, article = department[starts], article[starts]
    # each department's best: sales descending, then article id
    order = np.lexsort((article, -sales, department))
    order = np.sort(order[position_in_runs(department[order]) < config.per_department])
    department, article, sales = department[order], article[order], sales[order]
    per_department = np.cumsum(run_starts(department)) - 1
    share = sales / np.bincount(per_department, weights=sales)[per_department]
    return pd.DataFrame({"department_no": department, "article_id": article, "share": share})


def taste_popular_candidates(ctx: RetrievalContext, config: TastePopularConfig, bestsellers: pd.DataFrame) -> pd.DataFrame:
    """``bestsellers``: the week's ``department_bestsellers`` (the fitted state)."""
    if ctx.shared is not None and ctx.articles is not None:
        return _scored_in_memory(ctx, config, bestsellers)
    ctx.con.register("taste_popular_bestsellers", bestsellers)
    try:
        return ctx.con.execute(
            """
            WITH taste AS (
                SELECT t.customer_key, a.department_no, sum(pow(0.5, ($cutoff::DATE - t.t_dat) / $half_life)) AS weight
                FROM transactions t JOIN articles a USING (article_id)
                WHERE t.t_dat >= $start
                GROUP BY t.customer_key, a.department_no
                QUALIFY row_number() OVER (PARTITION BY t.customer_key ORDER BY weight DESC, a.department_no) <= $departments
            ),
            taste_share AS (
                SELECT customer_key, department_no, weight / sum(weight) OVER (PARTITION BY customer_key) AS share FROM taste
            )
            SELECT c.customer_key, h.article_id, sum(c.share * h.share) AS score
            FROM taste_share c JOIN taste_popular_bestsellers h USING (department_no)
            GROUP BY ALL
            """,
            {"cutoff": ctx.cutoff, "start": ctx.lookback_start(config.lookback_weeks), "half_life": config.half_life_days,
             "departments": config.departments},
        ).df()
    finally:
        ctx.con.unregister("taste_popular_bestsellers")


def _scored_in_memory(ctx: RetrievalContext, config: TastePopularConfig, bestsellers: pd.DataFrame) -> pd.DataFrame:
    """The SQL above for the few customers of an online call: their purchases read once, the
    departments from the week's articles in memory."""
    bought = customer_purchases(ctx)
    days = bought["days_ago"].to_numpy(np.int64)
    rows = ctx.articles.index.get_indexer(bought["article_id"].to_numpy())
    keep = (days <= (ctx.cutoff - ctx.lookback_start(config.lookback_weeks)).days) & (rows >= 0)
    customer = bought["customer_key"].to_numpy(np.int64)[keep]
    department = ctx.articles["department_no"].to_numpy()[rows[keep]]
    number, first = group_rows(customer, department)
    weight = np.bincount(number, weights=decay_weights(days[keep], config.half_life_days), minlength=len(first))
    customer, department = customer[first], department[first]
    # each customer's strongest departments: weight descending, then department
    order = np.lexsort((department, -weight, customer))
    order = order[position_in_runs(customer[order]) < config.departments]
    customer, department, weight = customer[order], department[order], weight[order]
    per_customer = group_rows(customer)[0]
    share = weight / np.bincount(per_customer, weights=weight)[per_customer]
    hot = bestsellers
    if not hot["department_no"].is_monotonic_increasing:  # the fit orders it so
        hot = hot.sort_values("department_no", kind="stable")
    mine, row = matching_rows(hot["department_no"].to_numpy(), department)
    return pd.DataFrame({
        "customer_key": customer[mine],
        "article_id": hot["article_id"].to_numpy()[row],
        "score": share[mine] * hot["share"].to_numpy()[row],
    })


RETRIEVER = Retriever(
    name="taste_popular",
    description="This week's bestsellers of the departments the customer buys from, by taste share x sales share.",
    fit=department_bestsellers,
    retrieve=taste_popular_candidates,
    config_class=TastePopularConfig,
    unique_pairs=True,
)
