"""Ranking quality: MAP@12 as Kaggle defines it, and recall of candidate sets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hm_assets.pipeline.ingest.data_contract import K


def true_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """Distinct (customer_key, article_id) pairs bought in the target week."""
    return truth[["customer_key", "article_id"]].drop_duplicates()


def average_precision(predicted: list[int], actual: set[int], k: int = K) -> float:
    """AP@k of one customer: predictions deduplicated, denominator min(|actual|, k)."""
    if not actual:
        return 0.0
    seen: set[int] = set()
    hits = 0
    score = 0.0
    rank = 0
    for item in predicted:
        if item in seen:
            continue
        seen.add(item)
        rank += 1
        if rank > k:
            break
        if item in actual:
            hits += 1
            score += hits / rank
    return score / min(len(actual), k)


def map_at_k(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = K) -> float:
    """Mean AP@k over customers who bought in the target week (others are excluded).

    ``recommendations``: customer_key, article_id, rank (1 = best; duplicates are dropped).
    ``truth``: customer_key, article_id of the target week's transactions.
    """
    actual = true_pairs(truth)
    if actual.empty:
        return float("nan")
    n_true = actual.groupby("customer_key").size().rename("n_true")
    recs = recommendations[["customer_key", "article_id", "rank"]]
    recs = recs[recs["customer_key"].isin(n_true.index)]
    recs = recs.sort_values(["customer_key", "rank"], kind="mergesort").drop_duplicates(["customer_key", "article_id"])
    recs = recs.assign(position=recs.groupby("customer_key").cumcount() + 1)
    recs = recs[recs["position"] <= k]
    hits = recs.merge(actual.assign(hit=1), on=["customer_key", "article_id"], how="left")
    hits["hit"] = hits["hit"].fillna(0).astype(np.int32)
    hits["cum_hits"] = hits.groupby("customer_key")["hit"].cumsum()
    hits["precision"] = np.where(hits["hit"] == 1, hits["cum_hits"] / hits["position"], 0.0)
    ap = hits.groupby("customer_key")["precision"].sum()
    ap = ap.reindex(n_true.index, fill_value=0.0) / np.minimum(n_true, k)
    return float(ap.mean())


def recall(candidates: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Share of the week's distinct (customer, article) purchases found among the candidates."""
    actual = true_pairs(truth)
    if actual.empty:
        return float("nan")
    found = actual.merge(candidates[["customer_key", "article_id"]].drop_duplicates(), on=["customer_key", "article_id"])
    return len(found) / len(actual)
