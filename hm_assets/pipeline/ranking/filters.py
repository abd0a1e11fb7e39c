"""Business rules that remove candidates no one should be shown. Each rule is named and switchable.

A rule is a DuckDB query over ``union_candidates`` (customer_key, article_id, …) and the week's
views; it returns the (customer_key, article_id) pairs it removes. Parameter: $cutoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


@dataclass(frozen=True)
class FilterRule:
    name: str
    description: str
    sql: str
    # True: what it removes depends on the article alone (the online path then evaluates it once a week)
    per_article: bool = False


OUT_OF_STOCK = FilterRule(
    "out_of_stock",
    "The article sold nothing in the 3 weeks before the cut-off: treated as out of stock.",
    """
    SELECT u.customer_key, u.article_id FROM union_candidates u
    ANTI JOIN rule_recent_sellers s USING (article_id)
    """,
    per_article=True,
)

WRONG_CHANNEL = FilterRule(
    "wrong_channel",
    "The customer bought only in one channel (5+ purchases) and the article sold well recently but "
    "never in that channel.",
    """
    WITH customer_channel AS (
        SELECT customer_key, min(sales_channel_id) AS channel FROM transactions
        SEMI JOIN (SELECT DISTINCT customer_key FROM union_candidates) USING (customer_key)
        GROUP BY customer_key HAVING count(*) >= 5 AND min(sales_channel_id) = max(sales_channel_id)
    )
    SELECT u.customer_key, u.article_id FROM union_candidates u
    JOIN customer_channel c USING (customer_key) JOIN rule_article_channels a USING (article_id)
    WHERE (c.channel = 1 AND a.store_sales = 0) OR (c.channel = 2 AND a.online_sales = 0)
    """,
)

OUT_OF_SEASON = FilterRule(
    "out_of_season",
    "The article's product type sells under a tenth of its usual rate in the last 4 weeks "
    "(e.g. swimwear in winter); needs 16+ weeks of history of that type.",
    """
    SELECT u.customer_key, u.article_id FROM union_candidates u
    JOIN articles a USING (article_id) JOIN rule_type_sales s USING (product_type_no)
    WHERE s.days_known >= 112 AND s.usual >= 20 AND s.recent < 0.1 * s.usual
    """,
    per_article=True,
)

PRICE_RANGE = FilterRule(
    "price_range",
    "The article costs over twice the most, or under a third of the least, that the customer ever "
    "paid (customers with 5+ purchases).",
    """
    SELECT u.customer_key, u.article_id FROM union_candidates u
    JOIN customer_transaction_stats c USING (customer_key) JOIN article_features a USING (article_id)
    WHERE c.txn_all >= 5 AND (a.price > 2.0 * c.max_price_all OR a.price < c.min_price_all / 3.0)
    """,
)

CUSTOMER_TYPE = FilterRule(
    "customer_type",
    "Children's articles for a customer with 8+ purchases who never bought any.",
    """
    WITH kids_buyers AS (
        SELECT t.customer_key, count(*) FILTER (WHERE a.index_group_name = 'Baby/Children') AS kids, count(*) AS total
        FROM transactions t JOIN articles a USING (article_id)
        SEMI JOIN (SELECT DISTINCT customer_key FROM union_candidates) u ON u.customer_key = t.customer_key
        GROUP BY t.customer_key
    )
    SELECT u.customer_key, u.article_id FROM union_candidates u
    JOIN kids_buyers k USING (customer_key) JOIN articles a USING (article_id)
    WHERE k.total >= 8 AND k.kids = 0 AND a.index_group_name = 'Baby/Children'
    """,
)

RULES: tuple[FilterRule, ...] = (OUT_OF_STOCK, WRONG_CHANNEL, OUT_OF_SEASON, PRICE_RANGE, CUSTOMER_TYPE)
RULE_NAMES = [rule.name for rule in RULES]

# The week's whole-history aggregates the rules read (name -> query over the week's views).
RULE_INPUTS: dict[str, str] = {
    "rule_recent_sellers": "SELECT DISTINCT article_id FROM transactions WHERE t_dat >= $cutoff::DATE - 21",
    "rule_article_channels": """
        SELECT article_id,
               count(*) FILTER (WHERE sales_channel_id = 1) AS store_sales,
               count(*) FILTER (WHERE sales_channel_id = 2) AS online_sales
        FROM transactions WHERE t_dat >= $cutoff::DATE - 56 GROUP BY article_id HAVING count(*) >= 20
    """,
    "rule_type_sales": """
        SELECT a.product_type_no,
               count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 28) AS recent,
               count(*) * 28.0 / greatest($cutoff::DATE - min(t.t_dat), 1) AS usual,
               $cutoff::DATE - min(t.t_dat) AS days_known
        FROM transactions t JOIN articles a USING (article_id) GROUP BY a.product_type_no
    """,
}


def rule_input_tables(con: duckdb.DuckDBPyConnection, cutoff: date) -> dict[str, pa.Table]:
    """The week's ``rule_*`` tables from the connection's ``transactions`` view (the week's whole
    history), as Arrow tables (a few thousand rows each): computed once for a week, they serve every
    customer shard (``prepare_rule_inputs(..., tables=...)``)."""
    return {name: con.sql(sql, params={"cutoff": cutoff}).to_arrow_table() for name, sql in RULE_INPUTS.items()}


def prepare_rule_inputs(
    con: duckdb.DuckDBPyConnection, cutoff: date, temporary: bool = True, tables: Mapping[str, pa.Table] | None = None
) -> None:
    """The ``rule_*`` tables on ``con``: ``tables`` (``rule_input_tables`` of the same week), or computed
    here from the connection's ``transactions`` view. ``temporary=False`` makes them visible to every
    cursor of the database (the online path's)."""
    kind = "TEMP TABLE" if temporary else "TABLE"
    for name, sql in RULE_INPUTS.items():
        if tables is None:
            con.execute(f"CREATE OR REPLACE {kind} {name} AS {sql}", {"cutoff": cutoff})
        else:
            con.register("rule_input", tables[name])
            con.execute(f"CREATE OR REPLACE {kind} {name} AS SELECT * FROM rule_input")
            con.unregister("rule_input")


def rules_by_name(names: list[str]) -> list[FilterRule]:
    unknown = sorted(set(names) - set(RULE_NAMES))
    if unknown:
        raise ValueError(f"unknown filter rule(s) {unknown}; known: {RULE_NAMES}")
    return [rule for rule in RULES if rule.name in names]
