"""On-demand recommendations: one customer's 12, recomputed right now from a week's artefacts.

``OnDemandRecommender(store, week)`` loads the week once: its history (every transaction before the
cut-off, in memory), the stored feature tables, the trained ranker and the fallback list. A call to
``recommend(customer, bought=[...], age=...)`` then runs the weekly pipeline for that one customer:

1. The customer's history, plus the ``bought`` articles as purchases made the day before the
   cut-off, is read into memory with its ``customer_features`` / ``customer_transaction_stats``
   rows (the rows the project's SQL gives, computed by ``one_customer.CustomerRows``). The same rows
   as one-customer DuckDB views (``transactions``, ``customers``, the feature tables) are made only
   when a statement of the call reads them (``CustomerViews``): the registry's retrievers and rules
   have in-memory forms for one customer and need none.
2. Every retriever of the registry runs its ``retrieve`` on that view with the week's fitted state
   (``fit``'s output, stored by the weekly asset beside its candidates: co-purchase pairs, ALS
   factors and their index, the popularity model and its profile lists, department bestsellers,
   the on-sale set) — the same per-customer function the batch runs for every customer.
3. The union of the candidates, the business rules, the cap, the pair features and the week's
   LightGBM ranker give the same results as the batch stage (``hm_assets.pipeline.ranking.stage``)
   would over the full history plus the new purchases: for one customer they are computed over
   arrays (``hm_assets.pipeline.ranking.one_customer``, equal to the batch's SQL to the bit), where
   the SQL's plans would cost more than its rows.

Without ``bought`` the list is the stored recommendation of the week, give or take float rounding
(see ``hm_assets_tests/integration/test_on_demand.py``). What is *not* updated by ``bought``: the article-level
statistics (``article_features``, ``article_transaction_stats``) and the global models above, which
one purchase would move by a negligible amount. Articles bought just now are left out of the list
by default (``exclude_bought``).

Unknown customers get the cold-start path: attributes from the options (``age`` …), defaults
otherwise, no history; the popularity model's state scores their profile (a profile seen at fit
time gets its stored list).

Calls are independent: each runs on its own DuckDB cursor over the loaded week, and the fitted
states are only read, so a service may call ``recommend`` from many threads at once. Retriever
configs are the defaults, as in ``hm-recs run``.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from hashlib import sha256

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.evaluation.baselines import last_week_top
from hm_assets.pipeline.features.taste import read_article_taste
from hm_assets.pipeline.ingest.data_contract import K, format_article_id
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.candidates import DEFAULT_CAP, CandidateCap, week_calibration
from hm_assets.pipeline.ranking.filters import RULES, prepare_rule_inputs
from hm_assets.pipeline.ranking.one_customer import CustomerRows, WeekArticles, WeekRules, customer_candidates, customer_pair_features, schema_of
from hm_assets.pipeline.ranking.stage import recommend_lists
from hm_assets.pipeline.retrieval.base import STATE_SUFFIX, RetrievalContext, Retriever, load_state, online_shared, retriever_inputs
from hm_assets.pipeline.retrieval.registry import RETRIEVERS
from hm_assets.platform.history import history_files, stored_history_weeks
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import parse_week


# The longest list one may ask for; the bestsellers that fill a short list are as many (a list of
# 12 takes the first 24, as the recommendations asset does).
MAX_K = 100
FALLBACK_SIZE = MAX_K
ARTICLE_COLUMNS = ["article_id", "prod_name", "product_type_name", "colour_group_name"]
DEFAULT_ATTRIBUTES = {
    "fn": 0,
    "active": 0,
    "club_member_status": "ACTIVE",
    "fashion_news_frequency": "NONE",
    "postal_code": None,  # None: a postal code of its own
}
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^-?\d+$")
log = logging.getLogger("hm_assets.serving.on_demand")


# --------------------------------------------------------------------------------------------
# Lookups shared by the CLI (`hm-recs recommend`, `hm-recs show`) and the gallery.
# --------------------------------------------------------------------------------------------


def newest_recommendation_week(store: HMStore) -> str:
    weeks = store.partitions("recommendations")
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


def parse_customer_key(text: str) -> int | None:
    """The customer_key a 64-hex ``customer_id`` or a ``customer_key`` in digits names; None for any
    other id (a new customer's own)."""
    if _HEX64.match(text):
        return customer_key_from_id(text.lower())
    if _KEY.match(text):
        return int(text)
    return None


def customer_key_of(text: str) -> int:
    """``parse_customer_key``, and for any other id a stable key of its own, negative so that it
    never meets a real one."""
    key = parse_customer_key(text)
    return key if key is not None else -int.from_bytes(sha256(text.encode()).digest()[:7], "big") - 1


def find_customer(customers: pd.DataFrame, customer: str | int) -> Customer:
    """A customer by 64-hex ``customer_id`` or by integer ``customer_key``; unknown ones get a key too."""
    text = str(customer).strip()
    key = customer_key_of(text)
    match = customers[customers["customer_key"] == key]
    if len(match):
        row = match.iloc[0].to_dict()
        return Customer(int(key), str(row["customer_id"]), True, row)
    return Customer(int(key), text, False, {})


def purchases_before(con, history: str, articles: str, customer_key: int, cutoff, limit: int) -> pd.DataFrame:
    """The customer's newest ``limit`` purchases in ``history`` before ``cutoff`` (newest first), with
    the names from ``articles`` (table names or ``read_parquet(...)``)."""
    return con.execute(
        f"""
        SELECT t.t_dat, t.article_id, a.prod_name, a.product_type_name, a.colour_group_name, t.price
        FROM {history} t LEFT JOIN {articles} a USING (article_id)
        WHERE t.customer_key = $key AND t.t_dat < $cutoff
        ORDER BY t.t_dat DESC, t.article_id
        LIMIT $limit
        """,
        {"key": int(customer_key), "cutoff": cutoff, "limit": int(limit)},
    ).df()


def newest_purchases(store: HMStore, week: str, customer_key: int, limit: int = 12) -> pd.DataFrame:
    """The customer's newest purchases before the week's cut-off (newest first), with article names,
    read from the store's files."""
    cutoff = parse_week(week)
    files = [store.require("transactions", w) for w in stored_history_weeks(store) if parse_week(w) < cutoff]
    if not files:
        return pd.DataFrame(columns=["t_dat", *ARTICLE_COLUMNS, "price"])
    import duckdb

    con = duckdb.connect()
    try:
        listing = "[" + ", ".join(f"'{p}'" for p in files) + "]"
        return purchases_before(
            con, f"read_parquet({listing})", f"read_parquet('{store.require('articles')}')", customer_key, cutoff, limit
        )
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
# The recommender.
# --------------------------------------------------------------------------------------------


@dataclass
class Ranked:
    """One customer's pass through the ranking stage: who, the candidates that survived the rules
    and the cap, their pair features, and the list."""

    who: Customer
    bought: list[int]
    candidates: pd.DataFrame
    pairs: pd.DataFrame
    recs: pd.DataFrame  # customer_key, article_id, score, rank
    timings: dict[str, float]
    views: bool = False  # whether a statement needed the customer's views (``CustomerViews``)


class CustomerViews:
    """A call's DuckDB cursor whose views of the customer (``create``) are made at its first use: the
    in-memory steps run no statement for most calls, and making the views costs some ten."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, create: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        self._cursor = cursor
        self._create = create
        self.created = False

    def __getattr__(self, name: str):
        if not self.created:
            self.created = True
            self._create(self._cursor)
        return getattr(self._cursor, name)


class OnDemandRecommender:
    """A week's recommender for one customer at a time (see the module docstring). Thread-safe:
    every call works on its own DuckDB cursor; the loaded tables and fitted states are read-only."""

    def __init__(
        self,
        store: HMStore | None = None,
        week: str | None = None,
        retrievers: Iterable[Retriever] = RETRIEVERS,
        threads: int = 1,
        cap: CandidateCap = DEFAULT_CAP,
        history_in_memory: bool = True,
    ):
        """``history_in_memory=False`` leaves the history in its Parquet files (a view): loading skips
        the sorted in-memory copy of every transaction (some 10 s at full scale) and each call for a
        customer with history scans the files for its rows. For a caller that asks for a few lists,
        such as the gallery's cold-start profiles; the lists are the same either way."""
        started = time.perf_counter()
        self.history_in_memory = history_in_memory
        self.store = store or HMStore()
        self.week = week or newest_recommendation_week(self.store)
        self.cutoff = parse_week(self.week)
        self.retrievers = tuple(retrievers)
        self.configs = {r.name: r.config_class() for r in self.retrievers}
        self.max_candidates = {name: config.max_candidates for name, config in self.configs.items()}
        self.cap = cap
        self.load_seconds: dict[str, float] = {}
        self._con = self.store.connect()
        self._load_tables()
        self.load_seconds["tables"] = round(time.perf_counter() - started, 3)
        self.inputs = retriever_inputs(self.store, self.retrievers, self.week)
        self.states = {r.name: self._state(r) for r in self.retrievers}
        # Loading uses every core; a call's statements touch a few hundred rows, where more threads
        # only add hand-over work (measured: 2 threads cost a purchase ~20% more CPU and wall time).
        self._con.execute(f"SET threads = {int(threads)}")

    # ---- loading ------------------------------------------------------------------------

    def _state(self, retriever: Retriever) -> object:
        """The retriever's fitted state of the week, as the weekly asset stored it (fitted here
        on the whole history when the week was materialized without one, or with one this code cannot
        unpickle)."""
        started = time.perf_counter()
        path = self.store.optional(retriever.name, self.week, STATE_SUFFIX)
        stored = False
        if path is not None:
            try:
                state, stored = load_state(path), True
            except (ModuleNotFoundError, AttributeError, pickle.UnpicklingError) as error:
                # A state pickled before its classes moved (e.g. a week materialized before the package
                # layout changed) names module paths that no longer exist.
                log.warning(f"{retriever.name} of {self.week} has an unreadable stored state ({error!r}): fitting it on the week's history")
        else:
            log.warning(f"{retriever.name} of {self.week} has no stored state: fitting it on the week's history")
        if not stored:
            cur = self._full_cursor()
            try:
                ctx = RetrievalContext(
                    con=cur, cutoff=self.cutoff, week_key=self.week,
                    customer_keys=self.customers["customer_key"].to_numpy(), inputs=self.inputs, log=log,
                )
                state = retriever.fit(ctx, self.configs[retriever.name])
            finally:
                cur.close()
        self.load_seconds[f"state:{retriever.name}"] = round(time.perf_counter() - started, 3)
        return state

    def _load_tables(self) -> None:
        store, con = self.store, self._con
        files = history_files(store, stored_history_weeks(store), self.cutoff)
        if files:
            listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
            history = (
                f"SELECT t_dat, customer_key, article_id, price, sales_channel_id "
                f"FROM read_parquet({listing}) WHERE t_dat < DATE '{self.cutoff}'"
            )
            if self.history_in_memory:
                con.execute(f"CREATE TABLE h_history AS {history} ORDER BY customer_key, t_dat")
            else:
                con.execute(f"CREATE VIEW h_history AS {history}")
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
        self._customer_rows = pd.Index(self.customers["customer_key"])
        self._article_ids = set(self.articles["article_id"].tolist())
        # the names a list shows, by article id (a merge with the whole catalogue per call cost ~10 ms at full scale)
        self._article_names = self.articles[ARTICLE_COLUMNS].set_index("article_id", drop=False)
        scorer = ranker.stored_scorer(store, self.week)
        self.scorer = scorer if isinstance(scorer, ranker.PairScorer) else None
        self.calibration = week_calibration(store, self.week, [r.name for r in self.retrievers])
        self.article_taste = read_article_taste(store.require("article_taste", self.week))
        full = self._full_cursor()
        try:
            self.fallback = last_week_top(full, self.cutoff, FALLBACK_SIZE)
            self.week_articles = WeekArticles.read(full, self.article_taste)
            # The rules' whole-history aggregates, once: a call then reads only its customer's history.
            prepare_rule_inputs(full, self.cutoff, temporary=False)
            self.week_rules = WeekRules.read(full, list(RULES), self.cutoff)
        finally:
            full.close()
        self.median_age = float(self.customers["age"].median()) if self.customers["age"].notna().any() else 30.0
        postal = con.execute(
            "SELECT postal_code, count(*) AS customers FROM h_customers WHERE postal_code IS NOT NULL GROUP BY postal_code"
        ).fetchnumpy()
        self._postal_counts: dict[str, int] = dict(zip(postal["postal_code"].tolist(), postal["customers"].tolist()))
        # the articles table by article_id, for retrievers' online lookups (``RetrievalContext.articles``)
        self._articles_by_id = self.articles.set_index("article_id", drop=False)
        self._schemas = {table: schema_of(con, f"h_{table}") for table in ("customer_features", "customer_transaction_stats")}
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

    def warm(self) -> "OnDemandRecommender":
        """One call of each kind (a known customer with history, an unknown one), so that the first
        real request does not pay for lazily opened indexes and compiled queries."""
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

    # ---- one customer -------------------------------------------------------------------

    def customer(self, customer: str | int, age: float | None = None, attributes: dict | None = None) -> Customer:
        text = str(customer).strip()
        key = customer_key_of(text)
        position = self._customer_rows.get_indexer([key])[0]  # no scan of the customers table per call
        if position >= 0:
            row = self.customers.iloc[position].to_dict()
            found = Customer(int(key), str(row["customer_id"]), True, row)
        else:
            found = Customer(int(key), text, False, {})
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

    def _prepare(self, cur, who: Customer, bought: list[int]) -> tuple[CustomerRows, dict]:
        """The customer's rows, in memory: its ``customers`` row, its history with the purchases just
        made (dated the day before the cut-off, in the customer's usual channel) and the
        ``customer_features`` / ``customer_transaction_stats`` rows (``CustomerRows``); and what the
        retrievers share of them (``online_shared``). The same rows as views for SQL are created only
        if a statement of the call needs them (``CustomerViews``)."""
        key = int(who.key)
        if who.known and not who.overridden:
            found = cur.execute("SELECT * FROM h_customers WHERE customer_key = $key", {"key": key})
        else:  # the attributes given, typed as the table's columns (the views reuse the table)
            self._one_customer_table(cur, who)
            found = cur.execute("SELECT * FROM one_customer")
        attributes = dict(zip([d[0] for d in found.description], found.fetchall()[0]))
        stored = cur.execute(
            "SELECT article_id, CAST($cutoff::DATE - t_dat AS INTEGER) AS days, sales_channel_id, price "
            "FROM h_history WHERE customer_key = $key",
            {"cutoff": self.cutoff, "key": key},
        ).fetchnumpy()
        history = self._with_purchases(stored, bought)
        rows = CustomerRows.build(attributes, history, self._postal_code_customers(who, attributes.get("postal_code")), self._schemas)
        purchases = pd.DataFrame({
            "customer_key": np.full(len(rows.article), key, np.int64),
            "article_id": rows.article.astype(np.int32),
            "days_ago": rows.days,
        })
        return rows, online_shared(purchases, {"customer_features": rows.frame("customer_features")})

    def _one_customer_table(self, cur, who: Customer) -> None:
        key = int(who.key)
        if who.known and not who.overridden:
            cur.execute(f"CREATE TEMP TABLE one_customer AS SELECT * FROM h_customers WHERE customer_key = {key}")
            return
        cur.execute("CREATE TEMP TABLE one_customer AS SELECT * FROM h_customers LIMIT 0")
        row = pd.DataFrame([{c: who.attributes.get(c) for c in self.customers.columns}])
        cur.register("one_customer_df", row)
        cur.execute("INSERT INTO one_customer BY NAME SELECT * FROM one_customer_df")
        cur.unregister("one_customer_df")

    def _with_purchases(self, stored: dict[str, np.ndarray], bought: list[int]) -> dict[str, np.ndarray]:
        """The customer's history (article_id, days, sales_channel_id, price) and after it the purchases
        just made: a day before the cut-off, at the article's price, in the channel the customer used
        most (ties: the higher; 2 without history)."""
        if not bought:
            return stored
        channels = np.ma.asarray(stored["sales_channel_id"])
        counts = {int(c): int(n) for c, n in zip(*np.unique(channels.compressed(), return_counts=True))}
        missing = int(np.ma.count_masked(channels))
        usual = max(counts, key=lambda c: (counts[c], c)) if counts else None
        channel = 2 if usual is None or missing > counts[usual] else usual
        prices = self.week_articles.features.columns["price"]
        rows, found = self.week_articles.features.rows(np.asarray(bought, np.int64))
        price = np.where(found & prices.valid[rows], prices.values[rows], np.float32(self.default_price)).astype(np.float32)
        n = len(bought)
        return {
            "article_id": np.concatenate([np.ma.getdata(stored["article_id"]).astype(np.int32), np.asarray(bought, np.int32)]),
            "days": np.concatenate([np.ma.getdata(stored["days"]).astype(np.int32), np.ones(n, np.int32)]),
            "sales_channel_id": np.concatenate([np.ma.getdata(channels).astype(np.int8), np.full(n, channel, np.int8)]),
            "price": np.ma.concatenate([np.ma.asarray(stored["price"], dtype=np.float32), np.ma.asarray(price)]),
        }

    def _create_views(self, cur, who: Customer, bought: list[int], rows: CustomerRows) -> None:
        """The customer's rows as the views the batch's SQL reads (``transactions``, ``customers``, the
        feature tables), for a statement of the call that needs them."""
        key = int(who.key)
        if who.known and not who.overridden:  # else _prepare made it
            self._one_customer_table(cur, who)
        bought_values = ", ".join(f"({int(article)}, {position})" for position, article in enumerate(bought)) or "(NULL, NULL)"
        cur.execute(
            f"""
            CREATE TEMP TABLE own_history AS
            SELECT * FROM h_history WHERE customer_key = {key}
            UNION ALL (
            SELECT DATE '{self.cutoff - timedelta(days=1)}' AS t_dat, CAST({key} AS BIGINT) AS customer_key,
                   CAST(b.article_id AS INTEGER) AS article_id,
                   CAST(coalesce(f.price, {self.default_price}) AS FLOAT) AS price,
                   CAST(coalesce((
                       SELECT sales_channel_id FROM h_history WHERE customer_key = {key}
                       GROUP BY 1 ORDER BY count(*) DESC, 1 DESC LIMIT 1
                   ), 2) AS TINYINT) AS sales_channel_id
            FROM (VALUES {bought_values}) b(article_id, position) LEFT JOIN h_article_features f USING (article_id)
            WHERE b.article_id IS NOT NULL
            ORDER BY b.position)
            """
        )
        # From here on the customer's own history (with the new purchases) is the week's history: every
        # per-customer statement reads only its customer's rows; whole-history aggregates are the week's.
        cur.execute("CREATE TEMP VIEW transactions AS SELECT * FROM own_history")
        cur.execute("CREATE TEMP VIEW articles AS SELECT * FROM h_articles")
        cur.execute("CREATE TEMP VIEW customers AS SELECT * FROM one_customer")
        for table, frame in rows.frames().items():
            cur.register(table, frame)
        cur.execute("CREATE TEMP VIEW article_features AS SELECT * FROM h_article_features")
        cur.execute("CREATE TEMP VIEW article_transaction_stats AS SELECT * FROM h_article_transaction_stats")

    def _postal_code_customers(self, who: Customer, postal_code: str | None) -> int:
        """``customer_features``' count of the customers of the postal code, this one included."""
        if postal_code is None:
            return 0
        position = self._customer_rows.get_indexer([who.key])[0]
        stored_here = position >= 0 and self.customers["postal_code"].iloc[position] == postal_code
        return self._postal_counts.get(postal_code, 0) - int(stored_here) + 1

    def newest_purchases(self, customer_key: int, limit: int = 12) -> pd.DataFrame:
        """``newest_purchases`` of the module, from the loaded week (no file is read)."""
        cur = self._con.cursor()
        try:
            return purchases_before(cur, "h_history", "h_articles", customer_key, self.cutoff, limit)
        finally:
            cur.close()

    def _bought_ids(self, bought: Iterable[int | str]) -> list[int]:
        ids = [parse_article_id(a) for a in bought]
        missing = [a for a in ids if a not in self._article_ids]
        if missing:
            raise ValueError(f"unknown article(s): {', '.join(format_article_id(a) for a in missing)}")
        return ids

    def rank(
        self,
        customer: str | int,
        bought: Iterable[int | str] = (),
        age: float | None = None,
        attributes: dict | None = None,
        exclude_bought: bool = True,
        k: int = K,
    ) -> Ranked:
        """The ranking stage for one customer, as the weekly assets run it for every customer: each
        retriever's ``retrieve`` on the week's fitted state, then ``hm_assets.pipeline.ranking.stage``."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        who = self.customer(customer, age, attributes)
        bought_ids = self._bought_ids(bought)
        cursor = self._con.cursor()
        try:
            rows, shared = self._prepare(cursor, who, bought_ids)
            cur = CustomerViews(cursor, partial(self._create_views, who=who, bought=bought_ids, rows=rows))
            timings["prepare"] = time.perf_counter() - started
            raws = self._retrieve(cur, who, shared, timings)
            mark = time.perf_counter()
            candidates = customer_candidates(cur, raws, self.max_candidates, self.week_rules, rows, self.cap, self.calibration)
            timings["candidates"] = time.perf_counter() - mark
            mark = time.perf_counter()
            pairs = customer_pair_features(self.week_articles, candidates, rows, self.cutoff)
            timings["pair_features"] = time.perf_counter() - mark
        finally:
            cursor.close()
        mark = time.perf_counter()
        recs = recommend_lists(
            pairs, partial(self._score, at_least=k), np.asarray([who.key], dtype=np.int64), list(self.fallback), k,
            exclude=bought_ids if exclude_bought else (),
        )
        timings["rank"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        return Ranked(who, bought_ids, candidates, pairs, recs, timings, cur.created)

    def _retrieve(self, cur, who: Customer, shared: dict, timings: dict[str, float]) -> dict[str, object]:
        """Every retriever's raw candidates for the customer of the prepared cursor ``cur``."""
        ctx = RetrievalContext(
            con=cur, cutoff=self.cutoff, week_key=self.week,
            customer_keys=np.asarray([who.key], dtype=np.int64), inputs=self.inputs, log=log, shared=shared,
            articles=self._articles_by_id,
        )
        raws = {}
        for retriever in self.retrievers:
            mark = time.perf_counter()
            raws[retriever.name] = retriever.retrieve(ctx, self.configs[retriever.name], self.states[retriever.name])
            timings[f"retriever:{retriever.name}"] = time.perf_counter() - mark
        return raws

    def _score(self, pairs: pd.DataFrame, at_least: int = K) -> np.ndarray:
        """Scores of one customer's candidates; with the ranker's prescreen, at least ``at_least`` of
        them are scored by the whole model (the others NaN)."""
        return self.scorer(pairs, at_least) if self.scorer is not None else ranker.HEURISTIC(pairs)

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
        ranked = self.rank(customer, bought, age, attributes, exclude_bought, k)
        out = self._describe(ranked.recs, ranked.candidates)
        out.attrs.update(
            {
                "customer_key": ranked.who.key,
                "customer_id": ranked.who.customer_id,
                "known": ranked.who.known,
                "week": self.week,
                "bought": ranked.bought,
                "candidates": len(ranked.candidates),
                "seconds": round(ranked.timings["total"], 4),
                "timings": {name: round(s, 4) for name, s in ranked.timings.items()},
            }
        )
        return out

    def explain(
        self,
        customer: str | int,
        article_id: int | str,
        bought: Iterable[int | str] = (),
        age: float | None = None,
        attributes: dict | None = None,
    ) -> dict:
        """Why ``article_id`` is (or is not) in the customer's list: its rank and score, the
        retrievers that proposed it (their rank and score), whether the ranker's prescreen left it
        out (its first trees placed it below the customer's best), and the pair features that moved
        its score most (LightGBM's per-feature contributions, in the model's raw score units)."""
        article = self._bought_ids([article_id])[0]
        ranked = self.rank(customer, bought, age, attributes)
        in_list = ranked.recs[ranked.recs["article_id"] == article]
        row = ranked.candidates[ranked.candidates["article_id"] == article]
        proposed = []
        for retriever in self.retrievers:
            rank_column, score_column = f"rank_{retriever.name}", f"score_{retriever.name}"
            if len(row) and rank_column in row and pd.notna(row[rank_column].iloc[0]):
                proposed.append(
                    {"retriever": retriever.name, "rank": int(row[rank_column].iloc[0]), "score": float(row[score_column].iloc[0])}
                )
        pair = ranked.pairs[ranked.pairs["article_id"] == article]
        contributions: list[dict] = []
        bias = None
        score = None
        prescreened_out = False
        if len(pair):
            score = float(self._score(pair)[0])
            listed = ranked.pairs[~ranked.pairs["article_id"].isin(ranked.bought)]
            prescreened_out = bool(np.isnan(self._score(listed)[(listed["article_id"] == article).to_numpy()]).any())
            if self.scorer is not None:
                values = pair[self.scorer.features].to_numpy(np.float64, na_value=np.nan)
                contrib = self.scorer.booster.predict(values, pred_contrib=True, num_threads=1)[0]
                bias = float(contrib[-1])
                order = np.argsort(-np.abs(contrib[:-1]), kind="stable")[:12]
                contributions = [
                    {
                        "feature": self.scorer.features[i],
                        "value": None if np.isnan(values[0, i]) else float(values[0, i]),
                        "contribution": float(contrib[i]),
                    }
                    for i in order
                ]
        return {
            "article_id": article,
            "rank": int(in_list["rank"].iloc[0]) if len(in_list) else None,
            "score": score,
            "candidate": bool(len(row)),
            "prescreened_out": prescreened_out,
            "retrievers": proposed,
            "contributions": contributions,
            "bias": bias,
        }

    def _describe(self, recs: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
        recs = recs.sort_values("rank", kind="mergesort")
        listed = candidates[candidates["article_id"].isin(recs["article_id"])]
        proposed = pd.Series(retriever_names_of(listed).to_numpy(), index=listed["article_id"].to_numpy())
        out = self._article_names.reindex(recs["article_id"].to_numpy()).reset_index(drop=True)
        out["article_id"] = recs["article_id"].to_numpy()
        out.insert(0, "rank", recs["rank"].to_numpy())
        out["score"] = recs["score"].to_numpy()
        out["retrievers"] = proposed.reindex(recs["article_id"].to_numpy()).fillna("").to_numpy()
        return out[["rank", *ARTICLE_COLUMNS, "score", "retrievers"]]


__all__ = [
    "Customer",
    "OnDemandRecommender",
    "Ranked",
    "customer_key_of",
    "find_customer",
    "parse_customer_key",
    "format_table",
    "newest_purchases",
    "newest_recommendation_week",
    "retriever_names_of",
    "stored_recommendations",
]
