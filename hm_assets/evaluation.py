"""Scoring a week: the ranker, the baselines and every retriever against the week's purchases."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from hm_assets.baselines import everyone_gets, last_week_top, trending
from hm_assets.metrics import K, map_at_k, recall
from hm_assets.ranker import top_k


def retriever_alone(candidates: pd.DataFrame) -> pd.DataFrame:
    """A retriever's own top 12 by its own score."""
    return top_k(candidates[["customer_key", "article_id", "score"]], K)


def buyers_rows(con: duckdb.DuckDBPyConnection, path: Path, columns: str = "*") -> pd.DataFrame:
    """Rows of a per-customer output for the customers who bought in the target week (view ``truth``)."""
    return con.sql(
        f"SELECT {columns} FROM read_parquet('{path}') SEMI JOIN (SELECT DISTINCT customer_key FROM truth) USING (customer_key)"
    ).df()


def evaluate_week(
    con: duckdb.DuckDBPyConnection,
    cutoff,
    truth: pd.DataFrame,
    recommendations: pd.DataFrame,
    retriever_outputs: dict[str, Path],
    filtered_candidates: Path,
) -> dict:
    """``con`` holds the week's views (``transactions`` before the cut-off, ``truth``)."""
    buyers = truth["customer_key"].unique()
    metrics: dict = {
        "buyers": int(len(buyers)),
        "purchases": int(len(truth[["customer_key", "article_id"]].drop_duplicates())),
        "map12_ranker": map_at_k(recommendations, truth),
        "map12_last_week_top12": map_at_k(everyone_gets(buyers, last_week_top(con, cutoff)), truth),
        "map12_trending": map_at_k(trending(con, cutoff, buyers), truth),
    }
    union_parts = []
    for name, path in retriever_outputs.items():
        frame = buyers_rows(con, path)
        union_parts.append(frame[["customer_key", "article_id"]].assign(retriever=name))
        metrics[f"recall_{name}"] = recall(frame, truth)
        metrics[f"map12_{name}"] = map_at_k(retriever_alone(frame), truth)
    union = pd.concat(union_parts, ignore_index=True)
    metrics["recall_union"] = recall(union, truth)
    kept = buyers_rows(con, filtered_candidates, "customer_key, article_id")
    metrics["recall_after_filters"] = recall(kept, truth)
    found = truth[["customer_key", "article_id"]].drop_duplicates().merge(union.drop_duplicates(), on=["customer_key", "article_id"])
    found_by = found.groupby(["customer_key", "article_id"])["retriever"].agg(list)
    for name in retriever_outputs:
        only = found_by[found_by.map(lambda r: r == [name])]
        metrics[f"unique_recall_{name}"] = len(only) / max(metrics["purchases"], 1)
    metrics["ranker_vs_trending"] = metrics["map12_ranker"] / metrics["map12_trending"] if metrics["map12_trending"] else np.nan
    return {k: (round(float(v), 6) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def quality_table(metrics: dict, retrievers: list[str]) -> pd.DataFrame:
    rows = [
        ("ranker (LightGBM)", metrics["map12_ranker"], metrics["recall_after_filters"], None),
        ("baseline: trending", metrics["map12_trending"], None, None),
        ("baseline: last week's top-12", metrics["map12_last_week_top12"], None, None),
    ]
    for name in retrievers:
        rows.append(
            (f"retriever alone: {name}", metrics[f"map12_{name}"], metrics[f"recall_{name}"], metrics[f"unique_recall_{name}"])
        )
    rows.append(("union of retrievers", None, metrics["recall_union"], None))
    return pd.DataFrame(rows, columns=["method", "MAP@12", "recall", "unique recall"])


def plot_png(summary: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for column, label in [
        ("map12_ranker", "ranker"),
        ("map12_trending", "trending baseline"),
        ("map12_last_week_top12", "last week's top-12"),
    ]:
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
