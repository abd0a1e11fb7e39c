"""The ranking stage, one function per step, for every caller: the weekly assets (one customer
shard at a time), the ablation (the week's buyers) and the online path (one customer).

    select_candidates   union of the retrievers' candidates -> business rules -> calibrated cap
                        (lower for lapsed customers, ``CandidateCap``),
                        as the connection's temp table ``candidates``
    load_candidates     a week's stored candidates (some customers', or some pairs) as ``candidates``
    pair_features       ``sql/pair_features.sql`` over ``candidates`` (with the taste views); as
                        Arrow batches of the scored columns (``pair_feature_batches``) for scoring
    recommend_lists     score the pairs, keep the best k per customer, fill short lists (one frame,
                        or ``recommend_lists_from_batches`` over a shard read in Arrow batches)

Each works on a DuckDB connection whose views are the week's (``hm_assets.platform.history.open_week``
plus the feature tables); the caller decides which customers those views hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
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
) -> Selection:
    """The filtered, capped union of ``sources`` (retriever -> its candidate file, or a table) for
    the customers matching ``where``, as temp table ``candidates``; the rules' effects counted
    against ``truth`` when ``has_truth``. ``rule_inputs_ready``: the week's ``rule_*`` tables exist
    already (``prepare_rule_inputs``), else they are computed here from ``transactions``."""
    if not rule_inputs_ready:
        prepare_rule_inputs(con, cutoff)
    union_rows = build_union(con, sources, where)
    effects = apply_rules(con, rules, cutoff, has_truth)
    kept = filtered_candidates_sql(cap, calibration, source_names(sources))
    con.execute(f"CREATE OR REPLACE TEMP TABLE candidates AS {kept}")
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


def pair_feature_batches(
    con: duckdb.DuckDBPyConnection, cutoff: date, taste: ArticleTaste, features: list[str], rows: int = 200_000
) -> pa.RecordBatchReader:
    """customer_key, article_id and ``features`` as DOUBLE (``float_matrix`` then copies them) of
    ``pair_features``, in its order (customer, best rank, article), as Arrow batches of at most
    ``rows`` rows: what the recommendations score, computed in memory, never stored."""
    columns = ", ".join(f'CAST("{name}" AS DOUBLE) AS "{name}"' for name in features)
    sql = f"SELECT customer_key, article_id, {columns} FROM ({_pair_features_sql(con, cutoff, taste)})"
    return con.sql(sql, params={"cutoff": cutoff}).to_arrow_reader(rows)


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
    batches: Iterable[pa.RecordBatch], features: list[str]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(customer_key, article_id, float matrix of ``features``) of record batches in customer order,
    cut where a customer's rows end: every customer's whole list in one chunk. The rows a batch
    ends with wait for the next batch (copies: a view into one column would keep the whole imported
    batch alive). Raises if the customers are not in order (``pair_feature_batches`` gives them so).
    The matrices share one buffer: a chunk's matrix holds until the next chunk is asked for."""
    pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    buffer = np.empty((0, len(features)))
    for batch in batches:
        if not batch.num_rows:
            continue
        customer = batch.column("customer_key").to_numpy().copy()
        article = batch.column("article_id").to_numpy().copy()
        if len(buffer) < batch.num_rows:
            buffer = np.empty((batch.num_rows, len(features)))
        matrix = float_matrix(batch, features, out=buffer)
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
    batches: Iterable[pa.RecordBatch], scorer: ranker.PairScorer | ranker.HeuristicScorer, customer_keys: np.ndarray,
    fallback: list[int], k: int = ranker.K,
) -> pd.DataFrame:
    """``recommend_lists`` over pairs computed batch by batch in customer order (``pair_feature_batches``;
    a shard's pairs × features do not fit at once): each customer's list is scored whole, and only
    the scored pairs' keys and scores are kept."""
    keys, articles, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0)]
    scratch = np.empty((0, len(scorer.features)))
    for customer, article, matrix in customer_chunks(batches, scorer.features):
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
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(keys)].astype(np.int64)
    lists = pd.Series([" ".join(text[a:b]) for a, b in zip(starts, ends)], index=keys[starts], dtype=object)
    out = customers[["customer_key", "customer_id"]].copy()
    out["prediction"] = out["customer_key"].map(lists).fillna("")
    return out[["customer_id", "prediction"]]
