"""Scoring a week: the ranker, the baselines and every retriever against the week's purchases."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.evaluation.baselines import everyone_gets, last_week_top, trending
from hm_assets.pipeline.evaluation.metrics import K, PairSet, map_at_k, share
from hm_assets.pipeline.ranking.ranker import top_k


def retriever_alone(candidates: pd.DataFrame) -> pd.DataFrame:
    """A retriever's own top 12 by its own score."""
    return top_k(candidates[["customer_key", "article_id", "score"]], K)


def buyers_rows(con: duckdb.DuckDBPyConnection, path: Path, columns: str = "*") -> pd.DataFrame:
    """Rows of a per-customer output for the customers who bought in the target week (view ``truth``)."""
    return con.sql(
        f"SELECT {columns} FROM read_parquet('{path}') SEMI JOIN (SELECT DISTINCT customer_key FROM truth) USING (customer_key)"
    ).df()


ORACLE_FILE = "oracle.csv"


def load_oracle(con: duckdb.DuckDBPyConnection, path: Path, week: str) -> pd.DataFrame | None:
    """The data set's own oracle for ``week`` (customer_key, article_id, rank), or None where the
    data set has none. ``oracle.csv`` (week, customer_id, prediction) is written by hm-synth: the
    generator's expected top-12 of each buyer of the week under its latent model."""
    if not path.exists():
        return None
    oracle = con.execute(
        f"""
        WITH lists AS (
            SELECT customer_id, string_split(trim(prediction), ' ') AS items
            FROM read_csv('{path}', header = true, columns = {{'week': 'DATE', 'customer_id': 'VARCHAR', 'prediction': 'VARCHAR'}})
            WHERE week = $week::DATE
        ),
        flat AS (SELECT customer_id, unnest(items) AS article, generate_subscripts(items, 1) AS rank FROM lists)
        SELECT c.customer_key, CAST(f.article AS INTEGER) AS article_id, CAST(f.rank AS INTEGER) AS rank
        FROM flat f JOIN customers c ON c.customer_id = f.customer_id
        WHERE f.article <> ''
        ORDER BY c.customer_key, rank
        """,
        {"week": week},
    ).df()
    return oracle if len(oracle) else None


def any_of(hits: Iterable[np.ndarray], n: int) -> np.ndarray:
    """Pairs found by any of several ``PairSet.found`` results (of one set of ``n`` pairs)."""
    union = np.zeros(n, dtype=bool)
    for hit in hits:
        union |= hit
    return union


def evaluate_week(
    con: duckdb.DuckDBPyConnection,
    cutoff,
    truth: pd.DataFrame,
    recommendations: pd.DataFrame,
    retriever_outputs: dict[str, Path],
    filtered_candidates: Path,
    oracle: pd.DataFrame | None = None,
) -> dict:
    """``con`` holds the week's views (``transactions`` before the cut-off, ``truth``).

    With the data set's ``oracle`` (its own expected top-12 per buyer), also: the oracle's MAP@12,
    ``ranker / oracle``, and the share of the oracle's top-12 that each retriever, their union and
    the capped candidates hold, and that the ranker's 12 share: which stage loses."""
    buyers = truth["customer_key"].unique()
    bought = PairSet(truth)
    metrics: dict = {
        "buyers": int(len(buyers)),
        "purchases": len(bought),
        "map12_ranker": map_at_k(recommendations, truth),
        "map12_last_week_top12": map_at_k(everyone_gets(buyers, last_week_top(con, cutoff)), truth),
        "map12_trending": map_at_k(trending(con, cutoff, buyers), truth),
    }
    oracle_pairs = None
    if oracle is not None:
        oracle = oracle[oracle["customer_key"].isin(buyers)]
        oracle_pairs = PairSet(oracle)
    # for each retriever: which of the week's purchases (and of the oracle's lists) it proposed
    found: dict[str, np.ndarray] = {}
    found_oracle: dict[str, np.ndarray] = {}
    for name, path in retriever_outputs.items():
        frame = buyers_rows(con, path)
        found[name] = bought.found(frame)
        metrics[f"recall_{name}"] = share(found[name])
        metrics[f"map12_{name}"] = map_at_k(retriever_alone(frame), truth)
        if oracle_pairs is not None:
            found_oracle[name] = oracle_pairs.found(frame)
    metrics["recall_union"] = share(any_of(found.values(), len(bought)))
    kept = buyers_rows(con, filtered_candidates, "customer_key, article_id")
    metrics["recall_after_filters"] = share(bought.found(kept))
    proposers = np.sum([hit.astype(np.int64) for hit in found.values()], axis=0) if found else np.zeros(len(bought), np.int64)
    for name in retriever_outputs:
        metrics[f"unique_recall_{name}"] = int((found[name] & (proposers == 1)).sum()) / max(metrics["purchases"], 1)
    metrics["ranker_vs_trending"] = metrics["map12_ranker"] / metrics["map12_trending"] if metrics["map12_trending"] else np.nan
    if oracle is not None and oracle_pairs is not None:
        metrics["map12_oracle"] = map_at_k(oracle, truth)
        metrics["ranker_vs_oracle"] = metrics["map12_ranker"] / metrics["map12_oracle"] if metrics["map12_oracle"] else np.nan
        metrics["oracle_vs_trending"] = metrics["map12_oracle"] / metrics["map12_trending"] if metrics["map12_trending"] else np.nan
        for name, hit in found_oracle.items():
            metrics[f"oracle_recall_{name}"] = share(hit)
        metrics["oracle_recall_union"] = share(any_of(found_oracle.values(), len(oracle_pairs)))
        metrics["oracle_recall_after_filters"] = share(oracle_pairs.found(kept))
        metrics["oracle_recall_ranker"] = share(oracle_pairs.found(recommendations))
    return {k: (round(float(v), 6) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def quality_table(metrics: dict, retrievers: list[str]) -> pd.DataFrame:
    """One row per method: MAP@12, recall of the truth, unique recall and (where the data set has
    an oracle) the share of the oracle's top-12 it holds."""
    oracle = "map12_oracle" in metrics
    rows = [
        ("ranker (LightGBM)", metrics["map12_ranker"], metrics["recall_after_filters"], None,
         metrics.get("oracle_recall_ranker")),
        ("baseline: trending", metrics["map12_trending"], None, None, None),
        ("baseline: last week's top-12", metrics["map12_last_week_top12"], None, None, None),
    ]
    if oracle:
        rows.insert(1, ("oracle: the data's own model", metrics["map12_oracle"], None, None, 1.0))
    for name in retrievers:
        rows.append(
            (f"retriever alone: {name}", metrics[f"map12_{name}"], metrics[f"recall_{name}"], metrics[f"unique_recall_{name}"],
             metrics.get(f"oracle_recall_{name}"))
        )
    rows.append(("union of retrievers", None, metrics["recall_union"], None, metrics.get("oracle_recall_union")))
    rows.append(("after rules and cap", None, metrics["recall_after_filters"], None, metrics.get("oracle_recall_after_filters")))
    table = pd.DataFrame(rows, columns=["method", "MAP@12", "recall", "unique recall", "share of oracle's 12"])
    return table if oracle else table.drop(columns="share of oracle's 12")


def plot_png(summary: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for column, label in [
        ("map12_ranker", "ranker"),
        ("map12_trending", "trending baseline"),
        ("map12_last_week_top12", "last week's top-12"),
        ("map12_oracle", "oracle (the data's own model)"),
    ]:
        if column in summary and summary[column].notna().any():
            ax.plot(summary["week"], summary[column], marker="o", label=label)
    ax.set_ylabel("MAP@12")
    ax.set_xlabel("target week")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
