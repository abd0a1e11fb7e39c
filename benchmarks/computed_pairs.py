"""A week's pair features for the benchmarks, computed from its stored candidates as the
recommendations compute them (``recommendations_shard``): pair features are not stored.

``samples.week_pairs`` gives them as one DataFrame; ``computed_pairs`` streams them in Arrow
batches, for the benchmarks that score every pair of a week or of its buyers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd
import pyarrow as pa

from hm_assets.pipeline.features.taste import ArticleTaste
from hm_assets.pipeline.ranking.samples import week_candidates
from hm_assets.pipeline.ranking.stage import PairBatches, pair_feature_batches, pair_feature_columns, pair_features
from hm_assets.platform.history import stored_history_weeks
from hm_assets.platform.store import HMStore


@dataclass(frozen=True)
class WeekPairs:
    """A week's view with its feature tables and the temp table ``candidates`` loaded on ``con``."""

    con: duckdb.DuckDBPyConnection
    cutoff: date
    taste: ArticleTaste

    def columns(self) -> list[str]:
        """The pair features' columns (``sql/pair_features.sql``), without computing them."""
        return list(pair_features(self.con, self.cutoff, self.taste).columns)

    def batches(self, features: list[str], rows: int = 200_000) -> pa.RecordBatchReader:
        """customer_key, article_id and ``features`` as DOUBLE of every loaded candidate, in
        customer order (``stage.pair_feature_columns``)."""
        return pair_feature_columns(self.con, self.cutoff, self.taste, features, rows)

    def scored_batches(self, features: list[str], rows: int = 200_000) -> PairBatches:
        """Every loaded candidate's pairs as the recommendations score them (``stage.pair_feature_batches``)."""
        return pair_feature_batches(self.con, self.cutoff, self.taste, features, rows)


@contextmanager
def computed_pairs(store: HMStore, week: str, customers: pd.DataFrame | None = None) -> Iterator[WeekPairs]:
    """The week's stored candidates, of every customer or of those in ``customers``' customer_key,
    ready for their pair features to be computed (``WeekPairs``)."""
    only = None if customers is None else customers[["customer_key"]]
    with week_candidates(store, week, stored_history_weeks(store), only) as (view, taste):
        yield WeekPairs(view.con, view.cutoff, taste)
