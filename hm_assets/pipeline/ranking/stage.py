"""The ranking stage, one function per step, for every caller: the weekly assets (one customer
shard at a time), the ablation (the week's buyers) and the online path (one customer).

    select_candidates   union of the retrievers' candidates -> business rules -> calibrated cap
                        (lower for lapsed customers, ``CandidateCap``),
                        as the connection's temp table ``candidates``
    load_candidates     a week's stored candidates (some customers', or some pairs) as ``candidates``
    pair_features       ``sql/pair_features.sql`` over ``candidates`` (with the taste views); for
                        scoring as Arrow batches of the pair-level columns with the feature tables'
                        columns looked up by key (``pair_feature_batches``)
    recommend_lists     score the pairs, keep the best k per customer, fill short lists (one frame,
                        or ``recommend_lists_from_batches`` over a shard read in Arrow batches)

Each works on a DuckDB connection whose views are the week's (``hm_assets.platform.history.open_week``
plus the feature tables); the caller decides which customers those views hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from hm_assets.pipeline.ingest.data_contract import format_article_ids
from hm_assets.pipeline.features import taste as taste_code
from hm_assets.pipeline.features.taste import CANDIDATE_CUSTOMERS, ArticleTaste, register_taste
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.candidates import (
    DEFAULT_CAP,
    CandidateCap,
    RetrieverCalibration,
    RuleEffect,
    Sources,
    apply_rules,
    build_union,
    filtered_candidates_sql,
    source_names,
)
from hm_assets.pipeline.ranking.filters import FilterRule, prepare_rule_inputs
from hm_assets.platform.arrays import run_starts
from hm_assets.platform.sql import float_matrix, load_sql

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class Selection:
    union_rows: int
    effects: list[RuleEffect]


def select_candidates(
    con: duckdb.DuckDBPyConnection,
    sources: Sources,
    rules: list[FilterRule],
    cutoff: date,
    cap: CandidateCap = DEFAULT_CAP,
    calibration: RetrieverCalibration | None = None,
    where: str = "true",
    has_truth: bool = False,
    rule_inputs_ready: bool = False,
    materialize: bool = True,
) -> Selection:
    """The filtered, capped union of ``sources`` (retriever -> its candidate file, or a table) for
    the customers matching ``where``, as temp table ``candidates``; the rules' effects counted
    against ``truth`` when ``has_truth``. ``rule_inputs_ready``: the week's ``rule_*`` tables exist
    already (``prepare_rule_inputs``), else they are computed here from ``transactions``.
    ``materialize=False`` makes ``candidates`` a view of the cap's query instead, for a caller that
    reads it once: a shard writing it straight to its part saved 1.7 s of 13.7 at full scale."""
    if not rule_inputs_ready:
        prepare_rule_inputs(con, cutoff)
    union_rows = build_union(con, sources, where)
    effects = apply_rules(con, rules, cutoff, has_truth)
    kept = filtered_candidates_sql(cap, calibration, source_names(sources))
    con.execute(f"CREATE OR REPLACE TEMP {'TABLE' if materialize else 'VIEW'} candidates AS {kept}")
    return Selection(int(union_rows), effects)


def load_candidates(
    con: duckdb.DuckDBPyConnection,
    candidates_file: Path | str,
    where: str = "true",
    only: str | None = None,
    on: Sequence[str] = ("customer_key",),
) -> None:
    """The temp table ``candidates``: the stored candidates (a week's ``candidates`` file) of the
    customers matching ``where``; with ``only``, a relation on ``con``, only the candidates matching
    one of its rows ``on`` its columns (customer_key: those customers; and article_id: those pairs)."""
    semi = f"SEMI JOIN {only} USING ({', '.join(on)})" if only is not None else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE candidates AS SELECT * FROM read_parquet('{candidates_file}') {semi} WHERE {where}")


def pair_features_version() -> str:
    """A short hash of the code that computes the pair features: ``sql/pair_features.sql`` and the
    taste views it joins (``hm_assets/pipeline/features/taste.py``). Kept training samples carry it,
    so that changed features are computed again, not read back."""
    code = load_sql("pair_features") + Path(taste_code.__file__).read_text()
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def pair_features(con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste) -> duckdb.DuckDBPyRelation:
    """Features of every (customer, article) of the temp table ``candidates``."""
    return con.sql(_pair_features_sql(con, cutoff, taste), params={"cutoff": cutoff})


# The feature tables whose own columns ``sql/pair_features.sql`` selects whole (``cf.*``, ``cs.*``,
# ``af.*``, ``ats.*``): table -> (its key, the columns it leaves out). Such a column has one value per
# customer (or article), whatever the candidate.
TABLE_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "customer_features": ("customer_key", ("customer_key",)),
    "customer_transaction_stats": ("customer_key", ("customer_key",)),
    "article_features": ("article_id", ("article_id", "product_code")),
    "article_transaction_stats": ("article_id", ("article_id",)),
}


class KeyedRows:
    """The feature tables' columns of one key (customer_key or article_id) among the scored features:
    one float64 row per key of the candidates (``keys``, sorted; NaN where the statement's LEFT JOIN
    gives NULL)."""

    def __init__(self, key: str, keys: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> None:
        self.key = key
        self.index = pd.Index(keys)  # a hash lookup: a binary search per pair cost 10x more
        self.rows = rows
        self.positions = positions  # where the columns go in the matrix
        first = int(positions[0])
        self.block = slice(first, first + len(positions)) if (positions == np.arange(first, first + len(positions))).all() else None
        # gathered rows land here first: a fresh array a batch would fault in its pages every time
        self.scratch = np.empty((0, rows.shape[1]))

    def fill(self, batch: pa.RecordBatch, matrix: np.ndarray) -> None:
        wanted = batch.column(self.key).to_numpy()
        if not len(wanted):
            return
        # one lookup per run of equal keys: a customer's candidates come together
        starts = np.flatnonzero(run_starts(wanted))
        at = self.index.get_indexer(wanted[starts])
        if (at < 0).any():
            raise ValueError(f"a pair's {self.key} is not among the candidates' (the rows were looked up for other candidates)")
        at = np.repeat(at, np.diff(np.r_[starts, len(wanted)]))
        if len(self.scratch) < len(at):
            self.scratch = np.empty((len(at), self.rows.shape[1]))
        gathered = np.take(self.rows, at, axis=0, out=self.scratch[: len(at)], mode="clip")
        if self.block is not None:  # the usual case: the columns side by side
            matrix[:, self.block] = gathered
        else:
            matrix[:, self.positions] = gathered


@dataclass(frozen=True)
class FeatureMatrix:
    """How an Arrow batch of pairs becomes the scorer's float64 matrix (``features`` in order, NaN
    for missing): the ``computed`` columns are copied from the batch, each of ``tables`` is looked
    up by the batch's customer or article. Joining a feature table's columns to every pair in SQL
    (and sorting them with it) cost more than looking them up (RESULTS.md)."""

    features: list[str]
    computed: list[str]
    tables: tuple[KeyedRows, ...] = ()

    @classmethod
    def of_columns(cls, features: list[str]) -> "FeatureMatrix":
        """Every feature read from the batch's column of that name."""
        return cls(list(features), list(features))

    @cached_property
    def computed_positions(self) -> list[int]:
        """Where each of ``computed`` goes in the matrix."""
        at = {name: i for i, name in enumerate(self.features)}
        return [at[name] for name in self.computed]

    def __call__(self, batch: pa.RecordBatch, out: np.ndarray | None = None) -> np.ndarray:
        """The matrix of ``batch`` (in ``out``'s first rows when given: see ``float_matrix``)."""
        if not self.tables:
            return float_matrix(batch, self.features, out)
        if out is None:
            out = np.empty((batch.num_rows, len(self.features)))
        elif out.shape[1] != len(self.features) or len(out) < batch.num_rows:
            raise ValueError(f"a buffer of shape {out.shape} cannot hold {batch.num_rows} rows x {len(self.features)} features")
        matrix = out[: batch.num_rows]
        for position, name in zip(self.computed_positions, self.computed):
            matrix[:, position] = batch.column(name).to_numpy(zero_copy_only=False)
        for table in self.tables:
            table.fill(batch, matrix)
        return matrix


def table_feature_matrix(con: duckdb.DuckDBPyConnection, features: list[str]) -> FeatureMatrix:
    """``FeatureMatrix`` of ``features`` for the pairs of the temp table ``candidates``: the feature
    tables' own columns (``TABLE_COLUMNS``) as rows of the candidates' customers and of their
    articles, the rest computed by the statement."""
    owner: dict[str, str] = {}
    by_key: dict[str, list[str]] = {}
    for table, (key, left_out) in TABLE_COLUMNS.items():
        names = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()} - set(left_out)
        for name in features:
            if name in names:
                if name in owner:
                    raise ValueError(f"feature {name!r} is a column of both {owner[name]} and {table}")
                owner[name] = table
        if any(owner.get(name) == table for name in features):
            by_key.setdefault(key, []).append(table)
    tables: list[KeyedRows] = []
    for key, joined in by_key.items():
        mine = [name for name in features if owner.get(name) in joined]
        columns = ", ".join(f'CAST(t{joined.index(owner[name])}."{name}" AS DOUBLE) AS "{name}"' for name in mine)
        joins = " ".join(f"LEFT JOIN {table} t{i} USING ({key})" for i, table in enumerate(joined))
        found = con.sql(
            f"SELECT k.{key}, {columns} FROM (SELECT DISTINCT {key} FROM candidates) k {joins} ORDER BY k.{key}"
        ).to_arrow_table()
        keys = found.column(key).to_numpy()
        if (np.diff(keys) <= 0).any():
            raise ValueError(f"{' or '.join(joined)} has more than one row for some {key}")
        rows = np.empty((len(keys), len(mine)))
        for j, name in enumerate(mine):
            rows[:, j] = found.column(name).to_numpy(zero_copy_only=False)
        tables.append(KeyedRows(key, keys, rows, np.array([features.index(name) for name in mine])))
    return FeatureMatrix(list(features), [name for name in features if name not in owner], tuple(tables))


@dataclass(frozen=True)
class PairBatches:
    """A shard's pairs as Arrow batches in customer order (``reader``: customer_key, article_id and
    the computed features) and how each becomes the scorer's matrix (``matrix``)."""

    reader: pa.RecordBatchReader
    matrix: FeatureMatrix


def pair_feature_columns(
    con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste, columns: list[str], rows: int = 200_000
) -> pa.RecordBatchReader:
    """customer_key, article_id and ``columns`` as DOUBLE (``float_matrix`` then copies them) of
    ``pair_features``, in its order (customer, best rank, article), as Arrow batches of at most
    ``rows`` rows (only the columns asked for are computed)."""
    selected = "".join(f', CAST("{name}" AS DOUBLE) AS "{name}"' for name in columns)
    sql = f"SELECT customer_key, article_id{selected} FROM ({_pair_features_sql(con, cutoff, taste)})"
    return con.sql(sql, params={"cutoff": cutoff}).to_arrow_reader(rows)


def pair_feature_batches(
    con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste, features: list[str], rows: int = 200_000
) -> PairBatches:
    """The pairs of ``candidates`` with the ``features`` a scorer reads, in customer order: what the
    recommendations score, computed in memory, never stored. The statement computes the pair-level
    columns (``pair_feature_columns``); the feature tables' own columns are looked up
    (``table_feature_matrix``)."""
    matrix = table_feature_matrix(con, features)
    return PairBatches(pair_feature_columns(con, cutoff, taste, matrix.computed, rows), matrix)


def pair_features_frame(con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste) -> pd.DataFrame:
    """``pair_features`` computed at once into a DataFrame (a relation would bind the statement
    twice: once to describe it, once to run it; for one customer that is a third of its time)."""
    return con.execute(_pair_features_sql(con, cutoff, taste), {"cutoff": cutoff}).df()


def _pair_features_sql(con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste) -> str:
    """``sql/pair_features.sql``, with the taste views it joins registered on ``con``."""
    register_taste(con, cutoff, taste, CANDIDATE_CUSTOMERS)
    return load_sql("pair_features")


Scorer = Callable[[pd.DataFrame], np.ndarray]


def recommend_lists(
    pairs: pd.DataFrame, score: Scorer, customer_keys: np.ndarray, fallback: list[int], k: int = ranker.K,
    exclude: Collection[int] = (),
) -> pd.DataFrame:
    """customer_key, article_id, score, rank: the best ``k`` scored pairs of every customer of
    ``customer_keys``, filled from ``fallback`` (score NaN) where fewer survive. ``exclude``: articles
    left out of every list (online: what the one customer just bought). ``score`` gets whole
    candidate lists and may leave pairs unscored (NaN: a ``ranker.Prescreen``); those are dropped."""
    if len(exclude):
        dropped = set(exclude)
        pairs = pairs[~pairs["article_id"].isin(dropped)]
        fallback = [a for a in fallback if a not in dropped]
    scores = score(pairs) if len(pairs) else np.zeros(0)
    scored = pd.DataFrame({"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": scores})
    return ranker.fill_to_k(ranker.top_k(scored[~np.isnan(scores)], k), customer_keys, fallback, k)


def customer_chunks(
    batches: Iterable[pa.RecordBatch], features: list[str] | FeatureMatrix
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(customer_key, article_id, float matrix of ``features``: names of the batches' columns, or a
    ``FeatureMatrix``) of record batches in customer order,
    cut where a customer's rows end: every customer's whole list in one chunk. The rows a batch
    ends with wait for the next batch (copies: a view into one column would keep the whole imported
    batch alive). Raises if the customers are not in order (``pair_feature_batches`` gives them so).
    The matrices share one buffer: a chunk's matrix holds until the next chunk is asked for."""
    to_matrix = features if isinstance(features, FeatureMatrix) else FeatureMatrix.of_columns(features)
    pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    buffer = np.empty((0, len(to_matrix.features)))
    for batch in batches:
        if not batch.num_rows:
            continue
        customer = batch.column("customer_key").to_numpy().copy()
        article = batch.column("article_id").to_numpy().copy()
        if len(buffer) < batch.num_rows:
            buffer = np.empty((batch.num_rows, len(to_matrix.features)))
        matrix = to_matrix(batch, out=buffer)
        if (np.diff(customer) < 0).any() or (pending is not None and customer[0] < pending[0][-1]):
            raise ValueError("the pairs are not in customer order: a customer's list would be scored in parts")
        start = 0
        if pending is not None:  # the held customer's rows this batch starts with
            start = int(np.searchsorted(customer, pending[0][-1], side="right"))
            pending = tuple(np.concatenate([held, new[:start]]) for held, new in zip(pending, (customer, article, matrix)))
            if start == len(customer):
                continue
            yield pending
        last = int(np.searchsorted(customer, customer[-1], side="left"))
        if last > start:
            yield customer[start:last], article[start:last], matrix[start:last]
        pending = (customer[last:].copy(), article[last:].copy(), matrix[last:].copy())
    if pending is not None:
        yield pending


def recommend_lists_from_batches(
    batches: PairBatches | Iterable[pa.RecordBatch], scorer: ranker.PairScorer | ranker.HeuristicScorer,
    customer_keys: np.ndarray, fallback: list[int], k: int = ranker.K,
) -> pd.DataFrame:
    """``recommend_lists`` over pairs computed batch by batch in customer order (``pair_feature_batches``,
    or Arrow batches with a column per feature; a shard's pairs × features do not fit at once): each
    customer's list is scored whole, and only the scored pairs' keys and scores are kept."""
    if isinstance(batches, PairBatches):
        if batches.matrix.features != list(scorer.features):
            raise ValueError("the pair batches were computed for other features than the scorer reads")
        source, to_matrix = batches.reader, batches.matrix
    else:
        source, to_matrix = batches, FeatureMatrix.of_columns(scorer.features)
    keys, articles, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0)]
    scratch = np.empty((0, len(scorer.features)))
    for customer, article, matrix in customer_chunks(source, to_matrix):
        if len(scratch) < len(matrix):
            scratch = np.empty_like(matrix)
        score = scorer.score_lists(matrix, customer, article, scratch)
        scored = ~np.isnan(score)
        keys.append(customer[scored])
        articles.append(article[scored])
        scores.append(score[scored])
    scored = pd.DataFrame({"customer_key": np.concatenate(keys), "article_id": np.concatenate(articles), "score": np.concatenate(scores)})
    return ranker.fill_to_k(ranker.top_k(scored, k), customer_keys, fallback, k)


def kaggle_submission(recs: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """The Kaggle submission rows (customer_id, prediction: the list's article ids, best first) of
    ``customers`` (customer_key, customer_id), an empty prediction for a customer without a list."""
    ordered = recs.sort_values(["customer_key", "rank"], kind="mergesort")
    keys = ordered["customer_key"].to_numpy()
    text = format_article_ids(ordered["article_id"])
    starts = np.flatnonzero(run_starts(keys))
    ends = np.r_[starts[1:], len(keys)].astype(np.int64)
    lists = pd.Series([" ".join(text[a:b]) for a, b in zip(starts, ends)], index=keys[starts], dtype=object)
    out = customers[["customer_key", "customer_id"]].copy()
    out["prediction"] = out["customer_key"].map(lists).fillna("")
    return out[["customer_id", "prediction"]]
