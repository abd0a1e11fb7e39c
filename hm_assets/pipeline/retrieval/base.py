"""The retriever contract: ``fit`` once per week, ``retrieve`` for any set of customers.

A retriever proposes candidate articles for customers as of a cut-off, in two steps:

- ``fit(ctx, config) -> state``: the global part, computed once per week over every customer
  (co-purchase pairs, ALS factors and their neighbour index, the popularity model and its pool,
  department bestsellers, the on-sale set). The weekly asset stores the state beside the week's
  candidates (``<retriever>/<week>.state.pkl``), so the online path loads it instead of fitting.
- ``retrieve(ctx, config, state) -> candidates``: the per-customer part, reading only the
  customers' own rows of the week's views plus the state — the same function for 1.37M customers
  (the weekly asset) and for one (the on-demand recommender), so both give the same candidates.

Candidates are rows of (customer_key, article_id, score) — higher score is better — as a DataFrame
or a DuckDB relation (for outputs too large for pandas); the framework ranks them in DuckDB, keeps
the best ``max_candidates`` per customer, and stores (customer_key, article_id, score, rank). A
retriever whose lists come ranked already hands them over as ``RankedLists``; one whose rows are one
per customer and article declares ``unique_pairs``, and the ranking skips its dedupe.

Retrievers read the week's DuckDB views (``transactions`` strictly before the cut-off,
``articles``, ``customers`` and the feature tables ``customer_features``,
``customer_transaction_stats``, ``article_features``, ``article_transaction_stats``), and any
extra upstream assets they declare through ``RetrievalContext.inputs``: unpartitioned ones in
``deps``, the same week of weekly ones in ``weekly_deps``.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from hm_assets.pipeline.features.embeddings.index import companion_files
from hm_assets.platform.arrays import position_in_runs, run_starts
from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.store import HMStore, atomic_path

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
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hm_assets.pipeline.retrieval"))
    # Online one context serves every retriever of a call: frames several of them ask for with the
    # same arguments are kept here and computed once. None (the batch, where each retriever is a step
    # of its own over every customer): nothing is kept, which would only hold memory.
    shared: dict[tuple, pd.DataFrame] | None = field(default=None, repr=False, compare=False)
    # Online: the week's ``articles`` table in memory, indexed by article_id (the views' rows, read once
    # per week), for retrievers that look up attributes of a few articles. None in the batch.
    articles: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def lookback_start(self, weeks: int) -> date:
        return self.cutoff - pd.Timedelta(days=7 * weeks).to_pytimedelta()


FitFn = Callable[[RetrievalContext, Any], Any]
RetrieveFn = Callable[[RetrievalContext, Any, Any], "RawCandidates"]
STATE_SUFFIX = ".state.pkl"


def recent_purchase_seeds(ctx: RetrievalContext, lookback_weeks: int, per_customer: int) -> pd.DataFrame:
    """customer_key, article_id, days_ago: each customer's most recent distinct purchases in the
    lookback window (at most ``per_customer``) — the seeds of the similarity retrievers. With
    ``ctx.shared`` (online, a few customers) every retriever's seeds come from one read of the
    customers' purchases; callers get their own copy."""
    if ctx.shared is None:
        return _recent_purchase_seeds(ctx, lookback_weeks, per_customer)
    last = last_purchases(ctx)
    # the SQL below, over every purchase's last day: a window's last purchase of an article is its last
    # purchase when that falls in the window
    last = last[last["days_ago"].to_numpy() <= 7 * lookback_weeks]
    customer, article, days = last["customer_key"].to_numpy(), last["article_id"].to_numpy(), last["days_ago"].to_numpy()
    order = np.lexsort((article, days, customer))
    chosen = order[position_in_runs(customer[order]) < per_customer]
    chosen = chosen[np.lexsort((article[chosen], customer[chosen]))]
    return last.iloc[chosen].reset_index(drop=True)


def online_shared(purchases: pd.DataFrame | None = None, views: dict[str, pd.DataFrame] | None = None) -> dict[tuple, pd.DataFrame]:
    """A ``RetrievalContext.shared`` for one online call, holding what the caller has in memory already:
    ``purchases`` as ``customer_purchases`` gives them, ``views`` the rows of views by name (as
    ``view_rows`` gives them). What is not given is read by the first retriever that asks."""
    shared: dict[tuple, pd.DataFrame] = {}
    if purchases is not None:
        shared[("purchases",)] = purchases
    for name, frame in (views or {}).items():
        shared[("view", name)] = frame
    return shared


def customer_purchases(ctx: RetrievalContext) -> pd.DataFrame:
    """customer_key, article_id, days_ago: every purchase of the call's customers before the cut-off,
    in the order of ``transactions`` — read once per online call (``ctx.shared``, which it requires)."""
    key = ("purchases",)
    if key not in ctx.shared:
        ctx.shared[key] = ctx.con.execute(
            "SELECT customer_key, article_id, ($cutoff::DATE - t_dat) AS days_ago FROM transactions WHERE t_dat < $cutoff",
            {"cutoff": ctx.cutoff},
        ).df()
    return ctx.shared[key]


def view_rows(ctx: RetrievalContext, name: str) -> pd.DataFrame:
    """Every row of the view ``name`` (online: the call's customers' rows), read once per online call
    (``ctx.shared``, which it requires)."""
    key = ("view", name)
    if key not in ctx.shared:
        ctx.shared[key] = ctx.con.sql(f"SELECT * FROM {name}").df()
    return ctx.shared[key]


def last_purchases(ctx: RetrievalContext) -> pd.DataFrame:
    """customer_key, article_id, days_ago: every article each customer bought before the cut-off, with
    the days since the last time, ordered by customer and article — from ``customer_purchases``,
    once per online call (``ctx.shared``, which it requires)."""
    key = ("last_purchases",)
    if key not in ctx.shared:
        bought = customer_purchases(ctx)
        customer = bought["customer_key"].to_numpy(np.int64)
        article = bought["article_id"].to_numpy()
        days = bought["days_ago"].to_numpy()
        order = np.lexsort((days, article, customer))
        last = order[run_starts(customer[order], article[order])]
        ctx.shared[key] = pd.DataFrame(
            {"customer_key": customer[last], "article_id": article[last], "days_ago": days[last]}
        )
    return ctx.shared[key]


def _recent_purchase_seeds(ctx: RetrievalContext, lookback_weeks: int, per_customer: int) -> pd.DataFrame:
    return ctx.con.execute(
        """
        SELECT customer_key, article_id, ($cutoff::DATE - last_day) AS days_ago
        FROM (
            SELECT customer_key, article_id, max(t_dat) AS last_day
            FROM transactions
            WHERE t_dat >= $start AND t_dat < $cutoff
            GROUP BY customer_key, article_id
        )
        QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY last_day DESC, article_id) <= $per_customer
        ORDER BY customer_key, article_id
        """,
        {"cutoff": ctx.cutoff, "start": ctx.lookback_start(lookback_weeks), "per_customer": per_customer},
    ).df()


def recency_weight(days_ago: pd.Series, half_life_days: float) -> pd.Series:
    return 0.5 ** (days_ago.astype("float64") / half_life_days)


def decay_weights(days: np.ndarray, half_life_days: float) -> np.ndarray:
    """The SQL's ``pow(0.5, days / half_life)`` per row: C's pow, as DuckDB calls it (numpy's own
    power may differ in the last bit)."""
    weights = {d: math.pow(0.5, d / half_life_days) for d in np.unique(days).tolist()}
    return np.array([weights[d] for d in days.tolist()], dtype=np.float64)


def no_state(ctx: RetrievalContext, config: RetrieverConfig) -> None:
    """``fit`` of a retriever that is personal only (nothing global to learn)."""
    return None


@dataclass(frozen=True)
class Retriever:
    name: str
    description: str
    retrieve: RetrieveFn
    fit: FitFn = no_state
    config_class: type[RetrieverConfig] = RetrieverConfig
    deps: tuple[str, ...] = ()
    # weekly assets read from the same week (``RetrievalContext.inputs``, by asset name)
    weekly_deps: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset({"duckdb"})
    # ``retrieve`` gives at most one row per (customer, article) (its own GROUP BY or group sum): the
    # framework's ranking then skips its dedupe, a hash aggregate over every row (RESULTS.md).
    unique_pairs: bool = False

    def generate(self, ctx: RetrievalContext, config: RetrieverConfig) -> RawCandidates:
        """Fit and retrieve in one go, for ``ctx``'s customers."""
        return self.retrieve(ctx, config, self.fit(ctx, config))


def state_path(store: HMStore, retriever: str, week: str) -> Path:
    return store.asset_path(retriever, week, STATE_SUFFIX)


def save_state(state: Any, target: Path, objects: ObjectStore | None = None) -> None:
    """A fitted state as a pickle (the store's own artefact, read back by ``load_state``), uploaded
    to ``objects`` (the store's object store) when that shares it."""
    with atomic_path(target, objects) as tmp:
        tmp.write_bytes(pickle.dumps(state, protocol=5))


def load_state(path: Path) -> Any:
    return pickle.loads(Path(path).read_bytes())


def retriever_inputs(store: HMStore, retrievers: Iterable[Retriever], week: str | None = None) -> dict[str, Path]:
    """The upstream files the retrievers declare, present locally: the unpartitioned ``deps`` (e.g.
    a content index and the graph file it names) and the ``weekly_deps`` of ``week``."""
    inputs = {}
    for retriever in retrievers:
        if retriever.weekly_deps and week is None:
            raise ValueError(f"{retriever.name} reads weekly assets ({', '.join(retriever.weekly_deps)}): which week's?")
        for dep in retriever.weekly_deps:
            inputs[dep] = store.require(dep, week)
        for dep in retriever.deps:
            path = inputs[dep] = store.require(dep)
            for companion in companion_files(path) if path.suffix == ".parquet" else []:
                store.fetch(companion)
    return inputs


# The stored candidates' columns and types (``RANKING_SQL``'s casts)
RANKED_SCHEMA = pa.schema(
    [("customer_key", pa.int64()), ("article_id", pa.int32()), ("score", pa.float32()), ("rank", pa.int16())]
)


@dataclass(frozen=True)
class RankedLists:
    """Candidates already ranked: record batches of ``RANKED_SCHEMA`` (one row per customer and
    article, rank 1, 2, … per customer) in customer then rank order. A retriever that hands whole
    lists to groups of customers (the popularity model's profiles) returns these: regrouping and
    sorting its 10^8 rows in SQL cost most of its step (RESULTS.md)."""

    batches: Iterable[pa.RecordBatch]


if TYPE_CHECKING:
    # In annotations only: a union object holding a DuckDB type at run time kept DuckDB's module
    # alive to interpreter exit with torch loaded (nanobind's "leaked instances"; see store.py).
    RawCandidates = pd.DataFrame | duckdb.DuckDBPyRelation | RankedLists


RANKING_SQL = """
    SELECT CAST(customer_key AS BIGINT) AS customer_key, CAST(article_id AS INTEGER) AS article_id,
           CAST(score AS FLOAT) AS score, CAST(rank AS SMALLINT) AS rank
    FROM (
        SELECT customer_key, article_id, score,
               row_number() OVER (PARTITION BY customer_key ORDER BY score DESC, article_id) AS rank
        FROM {pairs}
    )
    WHERE rank <= {max_candidates}
    ORDER BY customer_key, rank
"""
DEDUPED = "(SELECT customer_key, article_id, max(score) AS score FROM {source} GROUP BY ALL)"


def ranking_sql(source: str, max_candidates: int, unique: bool = False) -> str:
    """``RANKING_SQL`` over the relation ``source``; ``unique``: its rows are one per (customer,
    article) already (``Retriever.unique_pairs``), so the best score of each is its only one."""
    pairs = source if unique else DEDUPED.format(source=source)
    return RANKING_SQL.format(pairs=pairs, max_candidates=int(max_candidates))


def ranked_candidates(
    con: duckdb.DuckDBPyConnection, raw: RawCandidates, max_candidates: int, unique: bool = False
) -> duckdb.DuckDBPyRelation:
    """Dedupe (keep the best score; not when ``unique``: see ``ranking_sql``), rank per customer
    (1 = best), keep the top ``max_candidates``, ordered by customer_key then rank."""
    if isinstance(raw, RankedLists):  # kept in their order: DuckDB preserves a stream's order
        ranked = con.from_arrow(pa.RecordBatchReader.from_batches(RANKED_SCHEMA, raw.batches))
        return ranked.filter(f"rank <= {int(max_candidates)}")
    sql = ranking_sql("raw_candidates", max_candidates, unique)
    if isinstance(raw, duckdb.DuckDBPyRelation):
        return raw.query("raw_candidates", sql)
    con.register("raw_candidates", raw_frame(raw))
    return con.sql(sql)


RAW_TYPES = {"customer_key": "int64", "article_id": "int32", "score": "float64"}


def raw_frame(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.reindex(columns=list(RAW_TYPES)).astype(RAW_TYPES)


def finalize_candidates(raw: RawCandidates, max_candidates: int, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """``ranked_candidates`` as a DataFrame."""
    con = con or duckdb.connect()
    return ranked_candidates(con, raw, max_candidates).df()
