"""The retriever contract.

A retriever proposes candidate articles for customers as of a cut-off. It returns rows of
(customer_key, article_id, score) — higher score is better; the framework ranks them, keeps the
best ``max_candidates`` per customer, and stores (customer_key, article_id, score, rank).

Retrievers read the week's DuckDB views (``transactions`` strictly before the cut-off,
``articles``, ``customers`` and the feature tables ``customer_features``,
``customer_transaction_stats``, ``article_features``, ``article_transaction_stats``), and any
extra upstream assets they declare in ``deps`` through ``RetrievalContext.inputs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

CANDIDATE_COLUMNS = ["customer_key", "article_id", "score", "rank"]


class RetrieverConfig(dg.Config):
    """Settings every retriever has; a retriever may extend it with its own fields."""

    max_candidates: int = 50
    lookback_weeks: int = 8


@dataclass
class RetrievalContext:
    con: duckdb.DuckDBPyConnection
    cutoff: date
    week_key: str
    customer_keys: np.ndarray
    inputs: dict[str, Path] = field(default_factory=dict)
    seed: int = 0
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hm_assets.retrievers"))

    def lookback_start(self, weeks: int) -> date:
        return self.cutoff - pd.Timedelta(days=7 * weeks).to_pytimedelta()


GenerateFn = Callable[[RetrievalContext, RetrieverConfig], pd.DataFrame]


@dataclass(frozen=True)
class Retriever:
    name: str
    description: str
    generate: GenerateFn
    config_class: type[RetrieverConfig] = RetrieverConfig
    deps: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset({"duckdb"})


def finalize_candidates(raw: pd.DataFrame, max_candidates: int) -> pd.DataFrame:
    """Dedupe (keep the best score), rank per customer (1 = best) and keep the top ``max_candidates``."""
    if raw.empty:
        return pd.DataFrame(
            {
                "customer_key": pd.Series(dtype="int64"),
                "article_id": pd.Series(dtype="int32"),
                "score": pd.Series(dtype="float32"),
                "rank": pd.Series(dtype="int16"),
            }
        )
    frame = raw[["customer_key", "article_id", "score"]].copy()
    frame = frame.sort_values(["customer_key", "score", "article_id"], ascending=[True, False, True], kind="mergesort")
    frame = frame.drop_duplicates(["customer_key", "article_id"], keep="first")
    frame["rank"] = frame.groupby("customer_key", sort=False).cumcount() + 1
    frame = frame[frame["rank"] <= max_candidates]
    return frame.astype({"customer_key": "int64", "article_id": "int32", "score": "float32", "rank": "int16"}).reset_index(
        drop=True
    )
