"""On-demand recommendations: one customer's 12, recomputed right now from a week's artefacts.

``OnDemandRecommender(store, week)`` loads the week once: its history (every transaction before the
cut-off, in memory), the stored feature tables, the trained ranker and the fallback list. A call to
``recommend(customer, bought=[...], age=...)`` then runs the weekly pipeline for that one customer:

1. The customer's history, plus the ``bought`` articles as purchases made the day before the
   cut-off, becomes a one-customer DuckDB view (``transactions``, ``customers``, and
   ``customer_features`` / ``customer_transaction_stats`` recomputed with the project's SQL).
2. Every retriever of the registry runs its own ``generate`` on that view. The parts of a retriever
   that are global (computed over every customer: also_bought's co-purchase pairs, the ALS factors
   and neighbours of purchase_history_similar, the popularity model and its bestseller pool,
   taste_popular's department bestsellers, the content retrievers' on-sale set and indexes) are
   computed once, on the full history, the first time they are needed, and handed to the
   retriever in place of recomputing them (see
   ``GLOBAL_STEPS``). The popularity model's list depends only on the customer's attributes, so a
   known customer whose attributes are not overridden gets the stored list.
3. The union of the candidates, the business rules, ``sql/pair_features.sql`` and the week's
   LightGBM ranker run exactly as in the batch assets (``hm_assets.candidates``, ``hm_assets.filters``,
   ``hm_assets.ranker``), over the full history plus the new purchases.

Without ``bought`` the list is the stored recommendation of the week, give or take float rounding
(see ``hm_assets_tests/test_on_demand.py``). What is *not* updated by ``bought``: the article-level
statistics (``article_features``, ``article_transaction_stats``) and the global models above, which
one purchase would move by a negligible amount. Articles bought just now are left out of the list
by default (``exclude_bought``).

Unknown customers get the cold-start path: attributes from the options (``age`` …), defaults
otherwise, no history; the popularity model (re-fitted once, lazily) scores their profile.

The global steps are handed over by swapping the retriever modules' functions for cached stand-ins
while ``generate`` runs (under a process-wide lock, so retrievals are serialized; everything else
runs on per-call DuckDB cursors). Retriever configs are the defaults, as in ``hm-recs run``.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd

from hm_assets import ranker as ranking
from hm_assets.assets.weekly import FEATURE_TABLES
from hm_assets.baselines import last_week_top
from hm_assets.candidates import apply_rules, build_union, filtered_candidates, previous_week_calibration
from hm_assets.data_contract import format_article_id
from hm_assets.filters import RULE_NAMES, rules_by_name
from hm_assets.history import history_files
from hm_assets.retrievers.base import RetrievalContext, Retriever, finalize_candidates, retriever_inputs
from hm_assets.retrievers.registry import RETRIEVERS
from hm_assets.sql import load_sql
from hm_assets.store import HMStore, write_parquet
from hm_assets.taste import CANDIDATE_CUSTOMERS, read_article_taste, register_taste
from hm_assets.weeks import parse_week


K = ranking.K
FALLBACK_SIZE = 24  # as the recommendations asset
MAX_PER_CUSTOMER = 120  # CandidateFilterConfig's default
ARTICLE_COLUMNS = ["article_id", "prod_name", "product_type_name", "colour_group_name"]
# Retrievers whose list depends only on the customer's attributes, never on purchases.
ATTRIBUTE_ONLY_RETRIEVERS = frozenset({"popularity_model"})
DEFAULT_ATTRIBUTES = {
    "fn": 0,
    "active": 0,
    "club_member_status": "ACTIVE",
    "fashion_news_frequency": "NONE",
    "postal_code": None,  # None: a postal code of its own
}
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
log = logging.getLogger("hm_assets.on_demand")


# --------------------------------------------------------------------------------------------
# Lookups shared by the CLI (`hm-recs recommend`, `hm-recs show`) and the gallery.
# --------------------------------------------------------------------------------------------


def weeks_with(store: HMStore, asset: str) -> list[str]:
    return store.partitions(asset)


def newest_recommendation_week(store: HMStore) -> str:
    weeks = weeks_with(store, "recommendations")
    if not weeks:
        raise FileNotFoundError(
            f"no recommendations under {store.asset_dir('recommendations')}: materialize a week first "
            f"(hm-recs run --data-dir …)"
        )
    return weeks[-1]


def customer_key_from_id(customer_id: str) -> int:
    """``CUSTOMER_KEY_SQL`` in Python: the last 15 hex digits of the 64-hex id as an integer."""
    return int(customer_id[-15:], 16)


def parse_article_id(value: str | int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"not an article id: {value!r} (expected digits, e.g. 0108775015)") from None


@dataclass(frozen=True)
class Customer:
    key: int
    customer_id: str
    known: bool
    attributes: dict = field(default_factory=dict, compare=False)
    overridden: bool = False


def find_customer(customers: pd.DataFrame, customer: str | int) -> Customer:
    """A customer by 64-hex ``customer_id`` or by integer ``customer_key``; unknown ones get a key too."""
    text = str(customer).strip()
    if _HEX64.match(text):
        key = customer_key_from_id(text.lower())
    elif re.fullmatch(r"-?\d+", text):
        key = int(text)
    else:
        # Not an H&M id: a stable key of its own, negative so that it never meets a real one.
        key = -int.from_bytes(sha256(text.encode()).digest()[:7], "big") - 1
    match = customers[customers["customer_key"] == key]
    if len(match):
        row = match.iloc[0].to_dict()
        return Customer(int(key), str(row["customer_id"]), True, row)
    return Customer(int(key), text, False, {})


def recent_purchases(store: HMStore, week: str, customer_key: int, limit: int = 12) -> pd.DataFrame:
    """The customer's newest purchases before the week's cut-off (newest first), with article names."""
    cutoff = parse_week(week)
    files = [store.require("transactions", w) for w in weeks_with(store, "transactions") if parse_week(w) < cutoff]
    if not files:
        return pd.DataFrame(columns=["t_dat", *ARTICLE_COLUMNS, "price"])
    import duckdb

    con = duckdb.connect()
    try:
        listing = "[" + ", ".join(f"'{p}'" for p in files) + "]"
        return con.execute(
            f"""
            SELECT t.t_dat, t.article_id, a.prod_name, a.product_type_name, a.colour_group_name, t.price
            FROM read_parquet({listing}) t
            LEFT JOIN read_parquet('{store.require('articles')}') a USING (article_id)
            WHERE t.customer_key = $key AND t.t_dat < $cutoff
            ORDER BY t.t_dat DESC, t.article_id
            LIMIT $limit
            """,
            {"key": int(customer_key), "cutoff": cutoff, "limit": int(limit)},
        ).df()
    finally:
        con.close()


def retriever_names_of(candidates: pd.DataFrame) -> pd.Series:
    """For each candidate row: the retrievers that proposed it (its non-null ``score_<retriever>``)."""
    columns = [c for c in candidates.columns if c.startswith("score_")]
    if not columns:
        return pd.Series([""] * len(candidates), index=candidates.index, dtype=object)
    present = candidates[columns].notna().to_numpy()
    names = [c.removeprefix("score_") for c in columns]
    return pd.Series(
        [", ".join(n for n, p in zip(names, row) if p) for row in present], index=candidates.index, dtype=object
    )


def stored_recommendations(store: HMStore, week: str, customer_key: int) -> pd.DataFrame:
    """The week's stored 12 for one customer: rank, article, names, score, proposing retrievers."""
    import duckdb

    con = duckdb.connect()
    try:
        recs = con.execute(
            f"SELECT * FROM read_parquet('{store.require('recommendations', week)}') WHERE customer_key = $key ORDER BY rank",
            {"key": int(customer_key)},
        ).df()
        candidates_path = store.optional("candidates", week)
        if candidates_path:
            cands = con.execute(
                f"SELECT * FROM read_parquet('{candidates_path}') WHERE customer_key = $key", {"key": int(customer_key)}
            ).df()
        else:
            cands = pd.DataFrame(columns=["customer_key", "article_id"])
        articles = con.execute(
            f"SELECT {', '.join(ARTICLE_COLUMNS)} FROM read_parquet('{store.require('articles')}')"
        ).df()
    finally:
        con.close()
    cands = cands.assign(retrievers=retriever_names_of(cands))[["article_id", "retrievers"]]
    out = recs.merge(articles, on="article_id", how="left").merge(cands, on="article_id", how="left")
    out["retrievers"] = out["retrievers"].fillna("")
    return out[["rank", *ARTICLE_COLUMNS, "score", "retrievers"]].reset_index(drop=True)


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table with article ids as 10-digit strings (the Kaggle spelling)."""
    shown = frame.copy()
    if "article_id" in shown:
        shown["article_id"] = shown["article_id"].map(format_article_id)
    if "score" in shown:
        shown["score"] = shown["score"].map(lambda s: "fallback" if pd.isna(s) else f"{s:.4f}")
    if "price" in shown:
        shown["price"] = shown["price"].map(lambda p: f"{p:.4f}")
    return shown.to_string(index=False) if len(shown) else "(none)"


# --------------------------------------------------------------------------------------------
# Global steps of the retrievers, computed once on the full history.
# --------------------------------------------------------------------------------------------


def _config_key(config) -> str:
    return json.dumps(config.model_dump(), sort_keys=True, default=str) if hasattr(config, "model_dump") else repr(config)


@dataclass(frozen=True)
class GlobalStep:
    """A function ``name`` of retriever module ``module`` that computes something over all customers.

    ``make(recommender, original)`` returns the stand-in used during on-demand calls; ``original``
    is the module's own function, to be called on the full-history context.
    """

    module: str
    name: str
    make: Callable[["OnDemandRecommender", Callable], Callable]


def _cached_on_full(recommender: "OnDemandRecommender", key: str, compute: Callable[[], object]) -> object:
    cache = recommender._cache
    if key not in cache:
        started = time.perf_counter()
        cache[key] = compute()
        step = key.split(":", 1)[0]
        recommender.load_seconds[step] = round(recommender.load_seconds.get(step, 0.0) + time.perf_counter() - started, 3)
    return cache[key]


def _co_purchase_pairs(rec, original):
    return lambda ctx, config: _cached_on_full(rec, f"co_purchase_pairs:{_config_key(config)}", lambda: original(rec.full_context(), config))


def _purchase_matrix(rec, original):
    return lambda ctx, config: _cached_on_full(rec, f"purchase_matrix:{_config_key(config)}", lambda: original(rec.full_context(), config))


def _article_factors(rec, original):
    # Called with the (stand-in) full matrix: the factors are those of the whole history.
    return lambda matrix, config, seed: _cached_on_full(
        rec, f"article_factors:{_config_key(config)}:{seed}", lambda: original(matrix, config, seed)
    )


def _nearest_articles(rec, original):
    """Neighbours of every article of the factor table once; a call selects its queries' rows, in order."""

    def nearest(ids, vectors, queries, k, seed):
        table = _cached_on_full(
            rec,
            f"nearest_articles:{id(vectors)}:{k}:{seed}",
            lambda: {a: rows for a, rows in original(ids, vectors, ids, k, seed).groupby("article_id", sort=False)},
        )
        parts = [table[a] for a in np.asarray(queries).tolist() if a in table]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["article_id", "neighbour_id", "similarity"])

    return nearest


def _bestseller_pool(rec, original):
    return lambda ctx, size: _cached_on_full(rec, f"bestseller_pool:{size}", lambda: original(rec.full_context(), size))


def _popularity_training_rows(rec, original):
    # Learned from every buyer of last week (their profiles), not from the one customer's profile.
    def rows(ctx, pool, profiles, negatives):
        full = rec.full_context()
        profiles_of = importlib.import_module("hm_assets.retrievers.popularity_model").customer_profiles
        return _cached_on_full(
            rec, f"popularity_training_rows:{len(pool)}:{negatives}", lambda: original(full, pool, profiles_of(full), negatives)
        )

    return rows


def _popularity_fit(rec, original):
    return lambda rows, config, seed: _cached_on_full(rec, f"popularity_fit:{_config_key(config)}:{seed}", lambda: original(rows, config, seed))


def _department_bestsellers(rec, original):
    return lambda ctx, config: _cached_on_full(
        rec, f"department_bestsellers:{_config_key(config)}", lambda: original(rec.full_context(), config)
    )


def _on_sale_articles(rec, original):
    return lambda ctx, weeks: _cached_on_full(rec, f"on_sale_articles:{weeks}", lambda: original(rec.full_context(), weeks))


def _load_index(rec, original):
    return lambda target: _cached_on_full(rec, f"load_index:{Path(target).resolve()}", lambda: original(target))


GLOBAL_STEPS: tuple[GlobalStep, ...] = (
    GlobalStep("hm_assets.retrievers.also_bought", "co_purchase_pairs", _co_purchase_pairs),
    GlobalStep("hm_assets.retrievers.purchase_history_similar", "purchase_matrix", _purchase_matrix),
    GlobalStep("hm_assets.retrievers.purchase_history_similar", "article_factors", _article_factors),
    GlobalStep("hm_assets.retrievers.purchase_history_similar", "nearest_articles", _nearest_articles),
    GlobalStep("hm_assets.retrievers.popularity_model", "bestseller_pool", _bestseller_pool),
    GlobalStep("hm_assets.retrievers.popularity_model", "training_rows", _popularity_training_rows),
    GlobalStep("hm_assets.retrievers.popularity_model", "fit_model", _popularity_fit),
    GlobalStep("hm_assets.retrievers.taste_popular", "department_bestsellers", _department_bestsellers),
    GlobalStep("hm_assets.retrievers.content_similar", "on_sale_articles", _on_sale_articles),
    GlobalStep("hm_assets.retrievers.content_similar", "load_index", _load_index),
)
# Module attributes are swapped for the duration of a retrieval; one retrieval at a time per process.
_SWAP_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------
# The recommender.
# --------------------------------------------------------------------------------------------


class OnDemandRecommender:
    """A week's recommender for one customer at a time (see the module docstring)."""

    def __init__(
        self,
        store: HMStore | None = None,
        week: str | None = None,
        retrievers: Iterable[Retriever] = RETRIEVERS,
        threads: int = 2,
    ):
        started = time.perf_counter()
        self.store = store or HMStore()
        self.week = week or newest_recommendation_week(self.store)
        self.cutoff = parse_week(self.week)
        self.retrievers = tuple(retrievers)
        self.load_seconds: dict[str, float] = {}
        self._cache: dict[str, object] = {}
        self._full_ctx: RetrievalContext | None = None
        self._con = self.store.connect()
        self._con.execute(f"SET threads = {int(threads)}")
        self._load_tables()
        # Each global step's stand-in, bound to this recommender's cache (retriever modules that do
        # not exist, e.g. content_similar before it is added, are skipped).
        self._swaps: list[tuple[object, str, Callable]] = []
        for step in GLOBAL_STEPS:
            try:
                module = importlib.import_module(step.module)
            except ImportError:
                continue
            original = getattr(module, step.name)  # AttributeError: the retriever changed, update GLOBAL_STEPS
            self._swaps.append((module, step.name, step.make(self, original)))
        self.load_seconds["tables"] = round(time.perf_counter() - started, 3)

    # ---- loading ------------------------------------------------------------------------

    def _load_tables(self) -> None:
        store, con = self.store, self._con
        files = history_files(store, weeks_with(store, "transactions"), self.cutoff)
        if files:
            listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
            con.execute(
                f"CREATE TABLE h_history AS SELECT t_dat, customer_key, article_id, price, sales_channel_id "
                f"FROM read_parquet({listing}) WHERE t_dat < DATE '{self.cutoff}' ORDER BY customer_key, t_dat"
            )
        else:
            con.execute(
                "CREATE TABLE h_history (t_dat DATE, customer_key BIGINT, article_id INTEGER, price FLOAT, sales_channel_id TINYINT)"
            )
        con.execute(f"CREATE TABLE h_articles AS SELECT * FROM read_parquet('{store.require('articles')}')")
        con.execute(f"CREATE TABLE h_customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
        for table in FEATURE_TABLES:
            con.execute(f"CREATE TABLE h_{table} AS SELECT * FROM read_parquet('{store.require(table, self.week)}')")
        self.articles = con.sql("SELECT * FROM h_articles").df()
        self.customers = con.sql("SELECT * FROM h_customers").df()
        self._article_ids = set(self.articles["article_id"].tolist())
        info = json.loads(store.require("ranker", self.week, ".json").read_text())
        self.booster = ranking.load(store.require("ranker", self.week, ".txt")) if info.get("trained") else None
        self.scorer = ranking.PairScorer(self.booster, store.scratch_dir() / "compiled") if self.booster else None
        self.calibration = previous_week_calibration(store, self.week, [r.name for r in self.retrievers])
        self.article_taste = read_article_taste(store.require("article_taste", self.week))
        full = self._full_cursor()
        self.fallback = last_week_top(full, self.cutoff, FALLBACK_SIZE)
        self.median_age = float(self.customers["age"].median()) if self.customers["age"].notna().any() else 30.0
        self.default_price = float(con.execute("SELECT coalesce(median(price), 0) FROM h_history").fetchall()[0][0])

    def _full_cursor(self):
        """A cursor whose views are the whole week, as the batch assets see it."""
        cur = self._con.cursor()
        cur.execute("CREATE TEMP VIEW transactions AS SELECT * FROM h_history")
        cur.execute("CREATE TEMP VIEW articles AS SELECT * FROM h_articles")
        cur.execute("CREATE TEMP VIEW customers AS SELECT * FROM h_customers")
        for table in FEATURE_TABLES:
            cur.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM h_{table}")
        return cur

    def full_context(self) -> RetrievalContext:
        if self._full_ctx is None:
            self._full_ctx = RetrievalContext(
                con=self._full_cursor(),
                cutoff=self.cutoff,
                week_key=self.week,
                customer_keys=self.customers["customer_key"].to_numpy(),
                inputs=self._inputs(),
                log=log,
            )
        return self._full_ctx

    def _inputs(self) -> dict[str, Path]:
        return retriever_inputs(self.store, self.retrievers)

    def warm(self) -> "OnDemandRecommender":
        """Compute every global step now (the first calls are slow otherwise): a known customer with
        history and an unknown one."""
        with_history = self._con.execute(
            "SELECT customer_key FROM h_history GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchall()
        if with_history:
            self.recommend(with_history[0][0])
        self.recommend("warm-up cold start", age=self.median_age)
        return self

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "OnDemandRecommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _swapped(self):
        with _SWAP_LOCK:
            saved = [(module, name, getattr(module, name)) for module, name, _ in self._swaps]
            try:
                for module, name, stand_in in self._swaps:
                    setattr(module, name, stand_in)
                yield
            finally:
                for module, name, original in saved:
                    setattr(module, name, original)

    # ---- one customer -------------------------------------------------------------------

    def customer(self, customer: str | int, age: float | None = None, attributes: dict | None = None) -> Customer:
        found = find_customer(self.customers, customer)
        overrides = dict(attributes or {})
        if age is not None:
            overrides["age"] = float(age)
        unknown = set(overrides) - set(DEFAULT_ATTRIBUTES) - {"age"}
        if unknown:
            raise ValueError(f"unknown customer attribute(s) {sorted(unknown)}; known: age, {', '.join(DEFAULT_ATTRIBUTES)}")
        if found.known:
            row = {**found.attributes, **overrides}
            changed = any(found.attributes.get(k) != v for k, v in overrides.items())
            return Customer(found.key, found.customer_id, True, row, overridden=changed)
        row = {"age": self.median_age, **DEFAULT_ATTRIBUTES, **overrides}
        row["postal_code"] = row["postal_code"] or f"new-{found.key}"
        row.update({"customer_key": found.key, "customer_id": found.customer_id})
        return Customer(found.key, found.customer_id, False, row, overridden=True)

    def _prepare(self, cur, who: Customer, bought: list[int]) -> None:
        key = int(who.key)
        cur.execute("CREATE TEMP TABLE one_customer AS SELECT * FROM h_customers LIMIT 0")
        row = pd.DataFrame([{c: who.attributes.get(c) for c in self.customers.columns}])
        cur.register("one_customer_df", row)
        cur.execute("INSERT INTO one_customer BY NAME SELECT * FROM one_customer_df")
        cur.unregister("one_customer_df")
        channel = cur.execute(
            f"SELECT sales_channel_id FROM h_history WHERE customer_key = {key} GROUP BY 1 ORDER BY count(*) DESC, 1 DESC LIMIT 1"
        ).fetchall()
        channel = int(channel[0][0]) if channel else 2
        cur.register("bought_df", pd.DataFrame({"article_id": np.asarray(bought, dtype=np.int32), "position": np.arange(len(bought))}))
        cur.execute(
            f"""
            CREATE TEMP TABLE bought_rows AS
            SELECT DATE '{self.cutoff - timedelta(days=1)}' AS t_dat, CAST({key} AS BIGINT) AS customer_key,
                   CAST(b.article_id AS INTEGER) AS article_id,
                   CAST(coalesce(f.price, {self.default_price}) AS FLOAT) AS price,
                   CAST({channel} AS TINYINT) AS sales_channel_id
            FROM bought_df b LEFT JOIN h_article_features f USING (article_id)
            ORDER BY b.position
            """
        )
        cur.unregister("bought_df")
        cur.execute(
            f"CREATE TEMP TABLE own_history AS SELECT * FROM h_history WHERE customer_key = {key} "
            f"UNION ALL SELECT * FROM bought_rows"
        )
        # Customer features need every customer (postal-code sizes) but only this one's purchases.
        cur.execute("CREATE TEMP VIEW transactions AS SELECT * FROM own_history")
        cur.execute("CREATE TEMP VIEW articles AS SELECT * FROM h_articles")
        cur.execute(
            f"CREATE TEMP VIEW customers AS SELECT * FROM h_customers WHERE customer_key <> {key} "
            f"UNION ALL SELECT * FROM one_customer"
        )
        params = {"cutoff": self.cutoff}
        cur.execute(
            f"CREATE TEMP TABLE customer_features AS SELECT * FROM (\n{load_sql('customer_features')}\n) WHERE customer_key = {key}",
            params,
        )
        cur.execute(
            f"CREATE TEMP TABLE customer_transaction_stats AS SELECT * FROM (\n{load_sql('customer_transaction_stats')}\n)",
            params,
        )
        cur.execute("CREATE OR REPLACE TEMP VIEW customers AS SELECT * FROM one_customer")
        cur.execute("CREATE TEMP VIEW article_features AS SELECT * FROM h_article_features")
        cur.execute("CREATE TEMP VIEW article_transaction_stats AS SELECT * FROM h_article_transaction_stats")

    def _stored_candidates(self, cur, name: str, key: int) -> pd.DataFrame | None:
        path = self.store.optional(name, self.week)
        if path is None:
            return None
        return cur.execute(
            f"SELECT customer_key, article_id, score FROM read_parquet('{path}') WHERE customer_key = $key", {"key": key}
        ).df()

    def _retrieve(self, retriever: Retriever, ctx: RetrievalContext, who: Customer) -> pd.DataFrame:
        """The retriever's ranked candidates for the one customer (the batch's ranking SQL)."""
        config = retriever.config_class()
        raw = None
        if retriever.name in ATTRIBUTE_ONLY_RETRIEVERS and who.known and not who.overridden:
            raw = self._stored_candidates(ctx.con, retriever.name, who.key)
        if raw is None:
            with self._swapped():
                raw = retriever.generate(ctx, config)
                # A relation (retrievers may return one) is evaluated here, while the stand-ins are in place.
                ranked = finalize_candidates(raw, config.max_candidates, con=ctx.con)
        else:
            ranked = finalize_candidates(raw, config.max_candidates, con=ctx.con)
        return ranked[ranked["customer_key"] == who.key].reset_index(drop=True)

    def recommend(
        self,
        customer: str | int,
        bought: Iterable[int | str] = (),
        age: float | None = None,
        attributes: dict | None = None,
        exclude_bought: bool = True,
        k: int = K,
    ) -> pd.DataFrame:
        """The customer's ``k`` best articles now: rank, article_id, prod_name, product_type_name,
        colour_group_name, score (NaN: fallback fill), retrievers (who proposed it).

        ``bought``: articles purchased just now (the day before the cut-off), in order. ``age`` and
        ``attributes`` (fn, active, club_member_status, fashion_news_frequency, postal_code) set or
        override the customer's attributes (the defaults for unknown customers)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        who = self.customer(customer, age, attributes)
        bought_ids = [parse_article_id(a) for a in bought]
        missing = [a for a in bought_ids if a not in self._article_ids]
        if missing:
            raise ValueError(f"unknown article(s): {', '.join(format_article_id(a) for a in missing)}")
        cur = self._con.cursor()
        scratch = tempfile.TemporaryDirectory(prefix="on-demand-", dir=self.store.scratch_dir())
        try:
            self._prepare(cur, who, bought_ids)
            timings["prepare"] = time.perf_counter() - started
            ctx = RetrievalContext(
                con=cur,
                cutoff=self.cutoff,
                week_key=self.week,
                customer_keys=np.asarray([who.key], dtype=np.int64),
                inputs=self._inputs(),
                log=log,
            )
            sources = {}
            for retriever in self.retrievers:
                mark = time.perf_counter()
                frame = self._retrieve(retriever, ctx, who)
                path = Path(scratch.name) / f"{retriever.name}.parquet"
                write_parquet(frame, path)
                sources[retriever.name] = path
                timings[f"retriever:{retriever.name}"] = time.perf_counter() - mark
            mark = time.perf_counter()
            # From here on the week's views are the batch's: every customer's history (+ the new purchases).
            cur.execute("CREATE OR REPLACE TEMP VIEW transactions AS SELECT * FROM h_history UNION ALL SELECT * FROM bought_rows")
            build_union(cur, sources)
            apply_rules(cur, rules_by_name(list(RULE_NAMES)), self.cutoff, False)
            candidates = filtered_candidates(cur, MAX_PER_CUSTOMER, self.calibration, list(sources)).df()
            timings["candidates"] = time.perf_counter() - mark
            mark = time.perf_counter()
            cur.register("candidates", candidates)
            register_taste(cur, self.cutoff, self.article_taste, CANDIDATE_CUSTOMERS)
            pairs = cur.execute(load_sql("pair_features"), {"cutoff": self.cutoff}).df()
            timings["pair_features"] = time.perf_counter() - mark
        finally:
            cur.close()
            scratch.cleanup()
        mark = time.perf_counter()
        if len(pairs):
            scores = self.scorer(pairs) if self.scorer is not None else ranking.heuristic_score(pairs)
        else:
            scores = np.zeros(0)
        scored = pd.DataFrame({"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": scores})
        fallback = list(self.fallback)
        if exclude_bought and bought_ids:
            scored = scored[~scored["article_id"].isin(bought_ids)]
            fallback = [a for a in fallback if a not in set(bought_ids)]
        best = ranking.top_k(scored, k)
        filled = ranking.fill_to_k(best, np.asarray([who.key], dtype=np.int64), fallback, k)
        timings["rank"] = time.perf_counter() - mark
        out = self._describe(filled, candidates)
        timings["total"] = time.perf_counter() - started
        out.attrs.update(
            {
                "customer_key": who.key,
                "customer_id": who.customer_id,
                "known": who.known,
                "week": self.week,
                "bought": bought_ids,
                "candidates": len(candidates),
                "seconds": round(timings["total"], 4),
                "timings": {name: round(s, 4) for name, s in timings.items()},
            }
        )
        return out

    def _describe(self, recs: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
        proposed = candidates.assign(retrievers=retriever_names_of(candidates))[["article_id", "retrievers"]]
        out = recs.merge(self.articles[ARTICLE_COLUMNS], on="article_id", how="left")
        out = out.merge(proposed, on="article_id", how="left")
        out["retrievers"] = out["retrievers"].fillna("")
        out = out.sort_values("rank", kind="mergesort")
        return out[["rank", *ARTICLE_COLUMNS, "score", "retrievers"]].reset_index(drop=True)


__all__ = [
    "Customer",
    "GLOBAL_STEPS",
    "OnDemandRecommender",
    "find_customer",
    "format_table",
    "newest_recommendation_week",
    "recent_purchases",
    "retriever_names_of",
    "stored_recommendations",
]
