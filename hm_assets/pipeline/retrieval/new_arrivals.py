"""New arrivals: articles about to launch, matched to what the customer buys.

A new collection sells most in its first weeks, and no history-based retriever can propose an
article before its first sale: in hm-synth's worlds 3-11% of a week's purchases are of articles
that never sold before it. Product codes ascend with launch, so the articles that have not sold yet
but whose code lies among those of the last weeks' launches (``sql/new_arrivals.sql``) are the
likely launches of the coming week. Each customer is offered those of their strongest departments,
scored by how much of their recency-weighted purchases share the arrival's department, product type,
colour and graphical appearance.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, RetrieverConfig
from hm_assets.platform.sql import load_sql


class NewArrivalsConfig(RetrieverConfig):
    max_candidates: int = 20
    lookback_weeks: int = 16
    half_life_days: float = 28.0
    departments: int = 12


def arrivals(ctx: RetrievalContext, config: NewArrivalsConfig) -> pd.DataFrame:
    """article_id and the attributes matched: the week's likely launches. Global: read from every
    customer's history."""
    return ctx.con.execute(load_sql("new_arrivals"), {"cutoff": ctx.cutoff}).df()


def new_arrival_candidates(ctx: RetrievalContext, config: NewArrivalsConfig, launches: pd.DataFrame) -> pd.DataFrame:
    """``launches``: the week's ``arrivals`` (the fitted state)."""
    ctx.con.register("new_arrivals_launches", launches)
    try:
        return ctx.con.execute(
            """
            WITH bought AS (
                SELECT t.customer_key, a.department_no, a.product_type_no, a.colour_group_code, a.graphical_appearance_no,
                       pow(0.5, ($cutoff::DATE - t.t_dat) / $half_life) AS w
                FROM transactions t JOIN articles a USING (article_id)
                WHERE t.t_dat >= $start
            ),
            total AS (SELECT customer_key, sum(w) AS weight FROM bought GROUP BY customer_key),
            department AS (
                SELECT customer_key, department_no, sum(w) AS weight FROM bought GROUP BY customer_key, department_no
                QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY weight DESC, department_no) <= $departments
            ),
            product_type AS (SELECT customer_key, product_type_no, sum(w) AS weight FROM bought GROUP BY ALL),
            colour AS (SELECT customer_key, colour_group_code, sum(w) AS weight FROM bought GROUP BY ALL),
            appearance AS (SELECT customer_key, graphical_appearance_no, sum(w) AS weight FROM bought GROUP BY ALL)
            SELECT d.customer_key, n.article_id,
                   (d.weight + coalesce(p.weight, 0) + 0.5 * coalesce(c.weight, 0) + 0.5 * coalesce(g.weight, 0)) / t.weight AS score
            FROM department d
            JOIN new_arrivals_launches n USING (department_no)
            JOIN total t ON t.customer_key = d.customer_key
            LEFT JOIN product_type p ON p.customer_key = d.customer_key AND p.product_type_no = n.product_type_no
            LEFT JOIN colour c ON c.customer_key = d.customer_key AND c.colour_group_code = n.colour_group_code
            LEFT JOIN appearance g
                   ON g.customer_key = d.customer_key AND g.graphical_appearance_no = n.graphical_appearance_no
            """,
            {"cutoff": ctx.cutoff, "start": ctx.lookback_start(config.lookback_weeks), "half_life": config.half_life_days,
             "departments": config.departments},
        ).df()
    finally:
        ctx.con.unregister("new_arrivals_launches")


RETRIEVER = Retriever(
    name="new_arrivals",
    description="Articles about to launch (unsold, codes among the last weeks' launches) in the customer's departments.",
    fit=arrivals,
    retrieve=new_arrival_candidates,
    config_class=NewArrivalsConfig,
)
