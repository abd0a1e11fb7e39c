"""Pure checks on a week's outputs; each returns a list of problems (empty when all is well)."""

from __future__ import annotations

import duckdb
from pathlib import Path

from hm_assets.pipeline.evaluation.metrics import K


def recommendation_problems(con: duckdb.DuckDBPyConnection, recs: Path, customers: Path, articles: Path) -> list[str]:
    problems = []
    wrong_count = con.execute(
        f"""
        SELECT count(*) FROM (
            SELECT customer_key, count(*) AS n, count(DISTINCT article_id) AS d
            FROM read_parquet('{recs}') GROUP BY customer_key
        ) WHERE n <> {K} OR d <> {K}
        """
    ).fetchall()[0][0]
    if wrong_count:
        problems.append(f"{wrong_count} customers do not have exactly {K} distinct recommendations")
    uncovered = con.execute(
        f"SELECT count(*) FROM read_parquet('{customers}') c ANTI JOIN read_parquet('{recs}') r USING (customer_key)"
    ).fetchall()[0][0]
    if uncovered:
        problems.append(f"{uncovered} customers have no recommendations")
    unknown = con.execute(
        f"SELECT count(*) FROM read_parquet('{recs}') r ANTI JOIN read_parquet('{articles}') a USING (article_id)"
    ).fetchall()[0][0]
    if unknown:
        problems.append(f"{unknown} recommended articles are not in the catalogue")
    return problems


def duplicate_pairs(con: duckdb.DuckDBPyConnection, table: Path) -> int:
    return con.execute(
        f"SELECT count(*) - count(DISTINCT (customer_key, article_id)) FROM read_parquet('{table}')"
    ).fetchall()[0][0]


def leakage_problems(con: duckdb.DuckDBPyConnection, customer_stats: Path, article_stats: Path, customer_features: Path) -> list[str]:
    """A feature table computed from a transaction on or after the cut-off shows a recency of 0 days or less."""
    problems = []
    for path, column in [
        (customer_stats, "days_since_last_purchase"),
        (article_stats, "days_since_last_sale"),
        (customer_features, "days_since_first_purchase"),
    ]:
        leaked = con.execute(
            f"SELECT count(*) FROM read_parquet('{path}') WHERE {column} IS NOT NULL AND {column} < 1 AND {column} <> -1"
        ).fetchall()[0][0]
        if leaked:
            problems.append(f"{leaked} rows of {Path(path).parent.name} have {column} < 1: computed from the target week or later")
    return problems
