"""The filtered union of all retrievers' candidates.

One row per (customer, article) with every retriever's score and rank as columns (NULL when that
retriever did not propose it), then the business rules, then an optional cap per customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from hm_assets.filters import FilterRule


def union_sql(sources: dict[str, Path], where: str = "true") -> str:
    parts = " UNION ALL ".join(
        f"SELECT '{name}' AS retriever, customer_key, article_id, score, rank FROM read_parquet('{path}') WHERE {where}"
        for name, path in sources.items()
    )
    columns = ",\n".join(
        f"max(score) FILTER (WHERE retriever = '{name}') AS score_{name},\n"
        f"min(rank) FILTER (WHERE retriever = '{name}') AS rank_{name}"
        for name in sources
    )
    return f"""
        SELECT customer_key, article_id,
               {columns},
               CAST(count(DISTINCT retriever) AS TINYINT) AS n_retrievers,
               CAST(min(rank) AS SMALLINT) AS best_rank
        FROM ({parts})
        GROUP BY customer_key, article_id
    """


@dataclass
class RuleEffect:
    rule: str
    removed: int
    removed_true: int | None


def build_union(con: duckdb.DuckDBPyConnection, sources: dict[str, Path], where: str = "true") -> int:
    """The union of the retrievers' candidates (of the customers matching ``where``) as ``union_candidates``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE union_candidates AS {union_sql(sources, where)}")
    return con.execute("SELECT count(*) FROM union_candidates").fetchall()[0][0]


def apply_rules(
    con: duckdb.DuckDBPyConnection, rules: list[FilterRule], cutoff, has_truth: bool
) -> list[RuleEffect]:
    """Mark removals of every enabled rule in ``removed_pairs``; counts per rule (overlaps counted in each)."""
    con.execute("CREATE OR REPLACE TEMP TABLE removed_pairs (customer_key BIGINT, article_id INTEGER, rule VARCHAR)")
    effects = []
    for rule in rules:
        con.execute(
            f"INSERT INTO removed_pairs SELECT DISTINCT customer_key, article_id, '{rule.name}' FROM ({rule.sql})",
            {"cutoff": cutoff} if "$cutoff" in rule.sql else {},
        )
        removed = con.execute("SELECT count(*) FROM removed_pairs WHERE rule = ?", [rule.name]).fetchall()[0][0]
        removed_true = None
        if has_truth:
            removed_true = con.execute(
                "SELECT count(*) FROM removed_pairs r SEMI JOIN (SELECT DISTINCT customer_key, article_id FROM truth) t "
                "USING (customer_key, article_id) WHERE r.rule = ?",
                [rule.name],
            ).fetchall()[0][0]
        effects.append(RuleEffect(rule.name, int(removed), None if removed_true is None else int(removed_true)))
    return effects


def filtered_candidates(con: duckdb.DuckDBPyConnection, max_per_customer: int) -> duckdb.DuckDBPyRelation:
    """Survivors of the rules; at most ``max_per_customer`` each, preferring the best retriever rank."""
    return con.sql(
        f"""
        SELECT * FROM (
            SELECT u.* FROM union_candidates u
            ANTI JOIN removed_pairs r USING (customer_key, article_id)
        )
        QUALIFY row_number() OVER (
            PARTITION BY customer_key ORDER BY best_rank, n_retrievers DESC, article_id
        ) <= {int(max_per_customer)}
        ORDER BY customer_key, best_rank, article_id
        """
    )


def found_true_pairs(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many distinct (customer, article) purchases of the target week ``table`` contains."""
    return con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT customer_key, article_id FROM truth) t "
        f"SEMI JOIN {table} c USING (customer_key, article_id)"
    ).fetchall()[0][0]


def add_effects(total: list[RuleEffect], shard: list[RuleEffect]) -> list[RuleEffect]:
    if not total:
        return shard
    return [
        RuleEffect(
            a.rule,
            a.removed + b.removed,
            None if a.removed_true is None else a.removed_true + (b.removed_true or 0),
        )
        for a, b in zip(total, shard)
    ]


def effects_table(effects: list[RuleEffect]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"rule": e.rule, "removed_candidates": e.removed, "removed_true_purchases": e.removed_true} for e in effects]
    )
