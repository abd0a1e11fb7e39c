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


class PairSet:
    """Distinct (customer_key, article_id) pairs (a week's purchases, an oracle's lists) to look other
    pairs up in. A pair is one int64 code: its customer's position among the set's customers and its
    article id; a hash lookup of codes is an order of magnitude cheaper than a two-column merge of
    millions of candidates (RESULTS.md)."""

    def __init__(self, pairs: pd.DataFrame) -> None:
        distinct = true_pairs(pairs)
        self.customers = pd.Index(pd.unique(distinct["customer_key"].to_numpy()))
        self.codes = pd.Index(self._codes(distinct))

    def __len__(self) -> int:
        return len(self.codes)

    def _codes(self, frame: pd.DataFrame) -> np.ndarray:
        """The code of each row (-1 for a customer outside the set)."""
        position = self.customers.get_indexer(frame["customer_key"].to_numpy()).astype(np.int64)
        article = frame["article_id"].to_numpy().astype(np.int64) + 2**31  # an INTEGER id, made non-negative
        return np.where(position >= 0, (position << 32) | article, -1)

    def found(self, candidates: pd.DataFrame) -> np.ndarray:
        """For each pair of the set (in its order), whether ``candidates`` (customer_key, article_id) hold it."""
        at = self.codes.get_indexer(self._codes(candidates))
        hit = np.zeros(len(self.codes), dtype=bool)
        hit[at[at >= 0]] = True
        return hit


def share(found: np.ndarray) -> float:
    """The share of a set's pairs found (``PairSet.found``); NaN for an empty set."""
    return float(found.mean()) if len(found) else float("nan")


def recall(candidates: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Share of the week's distinct (customer, article) purchases found among the candidates."""
    return share(PairSet(truth).found(candidates))
