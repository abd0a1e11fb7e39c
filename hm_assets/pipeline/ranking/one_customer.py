"""The ranking stage for one customer over arrays (the online path): the batch's SQL, computed in memory.

For one customer the batch's statements cost their plans, not their rows: the pair features alone
are some 120 operators to bind, optimize and start for ~120 candidate rows (about 50 ms a call), and
the union, rules and cap another ~35 ms in eight statements. Here the same results come from the
customer's own rows (``CustomerRows``, read once per call) and the week's tables, read once per week
as arrays (``WeekArticles``, ``WeekRules``):

    customer_candidates      ``ranked_candidates`` of every retriever, ``build_union``, the rules
                             and the calibrated cap (``stage.select_candidates``)
    customer_pair_features   ``sql/pair_features.sql``

The rules that depend on the article alone (``FilterRule.per_article``) run their own SQL once a
week over every article; the per-customer rules have an array form here (``IN_MEMORY``), and a rule
without one runs its SQL on every call.

The SQL stays the definition: the batch runs it for every customer, and the tests hold these equal to
it, to the bit and with the same column names, order and types (``test_one_customer.py`` on the
tiny run's week for customers with history, without, unknown and after purchases; unit tests with
ties, duplicates, every rule and a calibrated cap; ``test_retriever_contract.py`` end to end). A
change to the SQL's features, a rule or the cap's order needs the same change here; those tests say
where.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.features.taste import ArticleTaste, taste_vectors, taste_window_start
from hm_assets.pipeline.ranking.candidates import OPEN_BAND, RANK_BANDS, CandidateCap, RetrieverCalibration
from hm_assets.pipeline.ranking.filters import FilterRule
from hm_assets.platform.arrays import run_starts

# The history's attributes (from `articles`) matched against the candidate's: (feature table, the
# candidate side's table, its column). The SQL's pref_* joins, in the order it names them.
PREFERENCES: tuple[tuple[str, str, str], ...] = (
    ("pref_product_type", "af", "product_type_no"),
    ("pref_product_group", "a", "product_group_name"),
    ("pref_colour_group", "af", "colour_group_code"),
    ("pref_graphical_appearance", "af", "graphical_appearance_no"),
    ("pref_section", "af", "section_no"),
    ("pref_garment_group", "af", "garment_group_no"),
    ("pref_index_group", "af", "index_group_no"),
)
HISTORY_ATTRIBUTES = (
    "product_code", "product_type_no", "product_group_name", "colour_group_code", "graphical_appearance_no",
    "section_no", "department_no", "garment_group_no", "index_group_no",
)
NUMPY_TYPES = {
    "TINYINT": "int8", "SMALLINT": "int16", "INTEGER": "int32", "BIGINT": "int64",
    "UTINYINT": "uint8", "USMALLINT": "uint16", "UINTEGER": "uint32", "FLOAT": "float32", "DOUBLE": "float64",
}
DAYS_4W = 28


@dataclass(frozen=True)
class Column:
    """A column's values with the rows that are not NULL, and the pandas type DuckDB gives it."""

    values: np.ndarray
    valid: np.ndarray
    dtype: str

    def take(self, rows: np.ndarray, found: np.ndarray) -> "Column":
        rows = np.where(found, rows, 0)
        if len(self.values) == 0:
            return Column(np.zeros(len(rows), self.values.dtype), np.zeros(len(rows), bool), self.dtype)
        return Column(self.values[rows], self.valid[rows] & found, self.dtype)

    def pandas(self):
        """As DuckDB's ``df()`` would give it: NaN for a NULL float, a nullable integer type where an
        integer column holds a NULL."""
        if self.dtype.startswith("float"):
            return np.where(self.valid, self.values, np.nan).astype(self.dtype)
        if self.valid.all():
            return self.values.astype(self.dtype)
        return pd.arrays.IntegerArray(self.values.astype(self.dtype), ~self.valid)


def _float(values: np.ndarray, valid: np.ndarray) -> Column:
    """A ``CAST(... AS FLOAT)`` of the SQL."""
    return Column(np.where(valid, values, 0.0).astype(np.float32), valid, "float32")


def _smallint(values: np.ndarray, valid: np.ndarray) -> Column:
    return Column(np.where(valid, values, 0).astype(np.int16), valid, "int16")


def read_columns(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Column]:
    """Every column of ``sql``'s result, by name."""
    relation = con.sql(sql)
    types = dict(zip(relation.columns, (str(t) for t in relation.types)))
    unsupported = {name: t for name, t in types.items() if t not in NUMPY_TYPES and name not in HISTORY_ATTRIBUTES}
    if unsupported:
        raise TypeError(f"the online pair features read numeric columns only; {sql!r} has {unsupported}")
    arrays = relation.fetchnumpy()
    out = {}
    for name, kind in types.items():
        array = arrays[name]
        valid = ~np.ma.getmaskarray(array) if isinstance(array, np.ma.MaskedArray) else np.ones(len(array), bool)
        if kind == "VARCHAR":  # an attribute compared for equality only: its codes
            codes, _ = pd.factorize(pd.Series(np.ma.getdata(array), dtype=object))
            out[name] = Column(codes.astype(np.int64), valid & (codes >= 0), "int64")
        else:
            out[name] = Column(np.ma.getdata(array), valid, NUMPY_TYPES[kind])
    return out


def _positions(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``wanted`` in sorted ``ids`` and whether each is there."""
    if len(ids) == 0:
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    rows = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return rows, ids[rows] == wanted


@dataclass(frozen=True)
class Table:
    """A week's per-article table as columns, rows in ``ids`` order (sorted)."""

    ids: np.ndarray
    columns: dict[str, Column]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, table: str, key: str = "article_id", columns: str = "*") -> "Table":
        read = read_columns(con, f"SELECT {columns} FROM {table} ORDER BY {key}")
        ids = read[key].values.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"{table} holds an {key} more than once: the online pair features need one row per article")
        return cls(ids, read)

    def rows(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _positions(self.ids, wanted)


@dataclass(frozen=True)
class WeekArticles:
    """The article side of the pair features, read once per week: ``article_features``,
    ``article_transaction_stats``, the attributes of ``articles`` the history is matched on, and the
    taste vectors and clusters."""

    articles: Table
    features: Table
    stats: Table
    taste: ArticleTaste
    taste_clusters: Table  # rows in ``taste.ids`` order: a row here is the row of ``taste.vectors``

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, taste: ArticleTaste) -> "WeekArticles":
        con.register("online_article_taste", taste.table)
        try:
            clusters = Table.read(con, "online_article_taste", columns="* EXCLUDE (vector)")
        finally:
            con.unregister("online_article_taste")
        if not np.array_equal(clusters.ids, taste.ids):
            raise ValueError("article_taste's clusters and vectors are not in one article order")
        return cls(
            Table.read(con, "articles", columns=", ".join(("article_id",) + HISTORY_ATTRIBUTES)),
            Table.read(con, "article_features"),
            Table.read(con, "article_transaction_stats"),
            taste,
            clusters,
        )


def inner_products(vectors: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """DuckDB's ``list_inner_product`` of FLOAT lists, row by row, to the bit: a single-precision
    sum in list order, each product fused into it (an exact product added, one rounding per step).
    A double-precision dot product differs in the last bit for most rows."""
    vectors = vectors.astype(np.float64)
    profile = profile.astype(np.float64)
    total = np.zeros(len(vectors), np.float32)
    for i in range(vectors.shape[1]):
        total = (total + vectors[:, i] * profile[i]).astype(np.float32)
    return total


def _one_row(con: duckdb.DuckDBPyConnection, table: str, customer_key: int) -> dict[str, Column]:
    return read_columns(con, f"SELECT * FROM {table} WHERE customer_key = {int(customer_key)}")


@dataclass(frozen=True)
class CustomerRows:
    """One customer's rows of the connection's views, read once per call: the history (article,
    days before the cut-off, channel) and the ``customer_features`` and
    ``customer_transaction_stats`` rows (empty columns when the customer has none)."""

    key: int
    article: np.ndarray
    days: np.ndarray
    channel: np.ndarray
    features: dict[str, Column]
    stats: dict[str, Column]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, customer_key: int, cutoff: date) -> "CustomerRows":
        history = con.execute(
            "SELECT article_id, CAST($cutoff::DATE - t_dat AS INTEGER) AS days, sales_channel_id FROM transactions "
            f"WHERE customer_key = {int(customer_key)}",
            {"cutoff": cutoff},
        ).fetchnumpy()
        return cls(
            int(customer_key),
            np.asarray(history["article_id"], dtype=np.int64),
            np.asarray(history["days"], dtype=np.int64),
            np.asarray(history["sales_channel_id"], dtype=np.int64),
            _one_row(con, "customer_features", customer_key),
            _one_row(con, "customer_transaction_stats", customer_key),
        )

    @classmethod
    def build(
        cls,
        customer: dict[str, object],
        history: dict[str, np.ndarray],
        postal_code_customers: int,
        schemas: dict[str, dict[str, str]],
    ) -> "CustomerRows":
        """The rows ``sql/customer_features.sql`` and ``sql/customer_transaction_stats.sql`` give the
        customer, computed here: ``customer``, its one row of ``customers`` (None for NULL);
        ``history``, its purchases (article_id, days before the cut-off, sales_channel_id, price);
        ``postal_code_customers``, the customers of its postal code (itself included; 0 without one);
        ``schemas``, each table's column names and pandas types (``schema_of``)."""
        article = np.asarray(history["article_id"], dtype=np.int64)
        days = np.asarray(history["days"], dtype=np.int64)
        channel = np.asarray(history["sales_channel_id"], dtype=np.int64)
        price_array = history["price"]
        price_valid = ~np.ma.getmaskarray(price_array) if isinstance(price_array, np.ma.MaskedArray) else np.ones(len(article), bool)
        price = np.ma.getdata(price_array).astype(np.float32)
        n = len(article)
        one = np.ones(1, bool)

        def value(v, valid: bool = True) -> tuple[np.ndarray, np.ndarray]:
            valid = valid and v is not None
            return np.asarray([v if valid else 0]), np.asarray([valid])

        def code(name: str, codes: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
            return value(codes.get(customer[name], 3))  # type: ignore[arg-type]

        features: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "customer_key": value(customer["customer_key"]),
            "age": value(customer["age"]),
            "fn": value(customer["fn"]),
            "active": value(customer["active"]),
            "club_status_code": code("club_member_status", {"ACTIVE": 0, "PRE-CREATE": 1, "LEFT CLUB": 2}),
            "news_frequency_code": code("fashion_news_frequency", {"NONE": 0, "REGULARLY": 1, "MONTHLY": 2}),
            "postal_code_customers": value(postal_code_customers),
            "customer_online_share": value((channel == 2).sum() / n if n else -1.0),
            "lifetime_txn_count": value(n),
            "lifetime_active_days": value(len(np.unique(days))),
            "days_since_first_purchase": value(days.max() if n else -1),
        }
        stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if n:
            recent = days <= 28

            def median(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                chosen = np.sort(price[rows & price_valid])
                if not len(chosen):
                    return value(0.0, False)
                half = len(chosen) // 2
                if len(chosen) % 2:
                    return value(chosen[half])
                low, high = np.float64(chosen[half - 1]), np.float64(chosen[half])
                return value(low + (high - low) * 0.5)

            paid = price[price_valid].astype(np.float64)
            stats = {
                "customer_key": value(customer["customer_key"]),
                "txn_1w": value((days <= 7).sum()),
                "txn_4w": value(recent.sum()),
                "txn_all": value(n),
                "median_price_4w": median(recent),
                "median_price_all": median(np.ones(n, bool)),
                # avg(): a double sum in row order
                "mean_price_all": value(np.cumsum(paid)[-1] / len(paid) if len(paid) else 0.0, bool(len(paid))),
                "min_price_all": value(paid.min() if len(paid) else 0.0, bool(len(paid))),
                "max_price_all": value(paid.max() if len(paid) else 0.0, bool(len(paid))),
                "days_since_last_purchase": value(days.min()),
                "distinct_articles": value(len(np.unique(article))),
                "shopping_days": value(len(np.unique(days))),
            }

        def typed(table: str, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Column]:
            schema = schemas[table]
            if not values:
                return {name: Column(np.zeros(0, dtype), np.zeros(0, bool), dtype) for name, dtype in schema.items()}
            missing = set(schema) ^ set(values)
            if missing:
                raise ValueError(f"the in-memory {table} and its SQL differ in columns {sorted(missing)}")
            return {name: Column(values[name][0].astype(dtype), values[name][1] & one, dtype) for name, dtype in schema.items()}

        return cls(
            int(customer["customer_key"]), article, days, channel,  # type: ignore[call-overload]
            typed("customer_features", features), typed("customer_transaction_stats", stats),
        )

    def frame(self, table: str) -> pd.DataFrame:
        """The row of ``table`` (customer_features or customer_transaction_stats) as the frame DuckDB
        would give (no rows without history, for the stats)."""
        columns = {"customer_features": self.features, "customer_transaction_stats": self.stats}[table]
        return pd.DataFrame({name: column.pandas() for name, column in columns.items()})

    def frames(self) -> dict[str, pd.DataFrame]:
        return {table: self.frame(table) for table in ("customer_features", "customer_transaction_stats")}

    def stat(self, name: str) -> float | None:
        column = self.stats[name]
        return column.values[0] if len(column.values) and column.valid[0] else None


def schema_of(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """A table's column names and the pandas types of its numeric columns."""
    relation = con.sql(f"SELECT * FROM {table} LIMIT 0")
    return {name: NUMPY_TYPES[str(kind)] for name, kind in zip(relation.columns, relation.types)}


def customer_pair_features(week: WeekArticles, candidates: pd.DataFrame, customer: CustomerRows, cutoff: date) -> pd.DataFrame:
    """The pair features of one customer's ``candidates`` (the frame of its table ``candidates``),
    from the customer's rows of the week's views: the columns and values of ``sql/pair_features.sql``."""
    cf, cs, customer_key = customer.features, customer.stats, customer.key
    order = np.lexsort((candidates["article_id"].to_numpy(), candidates["best_rank"].to_numpy()))
    candidates = candidates.iloc[order].reset_index(drop=True)
    n = len(candidates)
    article = candidates["article_id"].to_numpy().astype(np.int64)

    def broadcast(row: dict[str, Column], name: str) -> Column:
        column = row[name]
        if len(column.values) == 0:
            return Column(np.zeros(n, column.values.dtype), np.zeros(n, bool), column.dtype)
        return Column(np.repeat(column.values[:1], n), np.repeat(column.valid[:1], n), column.dtype)

    af_rows, af_found = week.features.rows(article)
    ats_rows, ats_found = week.stats.rows(article)
    a_rows, a_found = week.articles.rows(article)
    taste_rows, taste_found = week.taste_clusters.rows(article)
    af = {name: column.take(af_rows, af_found) for name, column in week.features.columns.items()}
    ats = {name: column.take(ats_rows, ats_found) for name, column in week.stats.columns.items()}
    a = {name: column.take(a_rows, a_found) for name, column in week.articles.columns.items()}
    a_taste = {name: column.take(taste_rows, taste_found) for name, column in week.taste_clusters.columns.items()}

    # The history: the customer's purchases of articles in both `articles` and `article_features`.
    bought, days = customer.article, customer.days
    h_a_rows, h_a_found = week.articles.rows(bought)
    h_af_rows, h_af_found = week.features.rows(bought)
    kept = h_a_found & h_af_found
    h_a = {name: column.take(h_a_rows[kept], np.ones(kept.sum(), bool)) for name, column in week.articles.columns.items()}
    h_days = days[kept]
    h_article = bought[kept]
    # rank() OVER (ORDER BY t_dat DESC) - 1: how many of the purchases are newer
    h_items_after = np.searchsorted(np.sort(h_days), h_days, side="left")
    h_taste_rows, h_taste_found = week.taste_clusters.rows(h_article)
    h_taste = {name: column.take(h_taste_rows, h_taste_found) for name, column in week.taste_clusters.columns.items()}
    price_vs_type = week.features.columns["price_vs_type"].take(h_af_rows[kept], np.ones(kept.sum(), bool))

    def matches(history_side: Column, candidate_side: Column) -> np.ndarray:
        """candidates x history: the purchase's attribute equals the candidate's (NULL matches nothing)."""
        return (
            (candidate_side.values[:, None] == history_side.values[None, :])
            & candidate_side.valid[:, None]
            & history_side.valid[None, :]
        )

    txn_all = broadcast(cs, "txn_all")
    txn_4w = broadcast(cs, "txn_4w")
    recent = h_days <= DAYS_4W

    def share(count: np.ndarray, total: Column) -> Column:
        """coalesce(n, 0) / nullif(total, 0)"""
        usable = total.valid & (total.values != 0)
        return _float(count / np.where(usable, total.values, 1), usable)

    def newest(match: np.ndarray) -> Column:
        """$cutoff - max(t_dat) over the matching purchases"""
        any_match = match.any(axis=1)
        return _smallint(np.where(match, h_days[None, :], np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max), any_match)

    def fewest_after(match: np.ndarray) -> Column:
        any_match = match.any(axis=1)
        return _smallint(np.where(match, h_items_after[None, :], np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max), any_match)

    out: dict[str, object] = {}
    for name in candidates.columns:
        series = candidates[name]
        out[name] = series.array if isinstance(series.dtype, pd.api.extensions.ExtensionDtype) else series.to_numpy()
    for row in (cf, cs):
        for name in row:
            if name != "customer_key":
                out[name] = broadcast(row, name).pandas()
    for name, column in af.items():
        if name not in ("article_id", "product_code"):
            out[name] = column.pandas()
    for name, column in ats.items():
        if name != "article_id":
            out[name] = column.pandas()

    type_match = matches(h_a["product_type_no"], af["product_type_no"])
    section_match = matches(h_a["section_no"], af["section_no"])
    department_match = matches(h_a["department_no"], a["department_no"])
    product_match = matches(h_a["product_code"], a["product_code"])
    article_match = article[:, None] == h_article[None, :]
    for name, side, column in PREFERENCES:
        candidate_side = af[column] if side == "af" else a[column]
        match = type_match if column == "product_type_no" else section_match if column == "section_no" else matches(h_a[column], candidate_side)
        out[name] = share(match.sum(axis=1), txn_all).pandas()
    out["bought_same_product"] = product_match.sum(axis=1).astype(np.int16)
    out["bought_same_article"] = article_match.sum(axis=1).astype(np.int16)
    out["days_since_bought_article"] = newest(article_match).pandas()
    out["days_since_bought_product"] = newest(product_match).pandas()
    out["days_since_bought_type"] = newest(type_match).pandas()
    out["items_since_bought_article"] = fewest_after(article_match).pandas()
    out["items_since_bought_product"] = fewest_after(product_match).pandas()
    out["pref_product_type_4w"] = share((type_match & recent).sum(axis=1), txn_4w).pandas()
    out["pref_section_4w"] = share((section_match & recent).sum(axis=1), txn_4w).pandas()
    out["pref_department"] = share(department_match.sum(axis=1), txn_all).pandas()
    out["pref_department_4w"] = share((department_match & recent).sum(axis=1), txn_4w).pandas()

    sales_1w, sales_prev_1w = ats["sales_1w"], ats["sales_prev_1w"]
    out["trend_1w_vs_prev"] = _float(
        (sales_1w.values + 1.0) / (sales_prev_1w.values + 1.0), sales_1w.valid & sales_prev_1w.valid
    ).pandas()
    price = af["price"]
    for name, stat in (("price_vs_customer_median", "median_price_all"), ("price_vs_customer_max", "max_price_all")):
        divisor = broadcast(cs, stat)
        usable = price.valid & divisor.valid & (divisor.values != 0)
        out[name] = _float(price.values.astype(np.float64) / np.where(usable, divisor.values, 1), usable).pandas()
    levels = price_vs_type.valid
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.log(price_vs_type.values[levels].astype(np.float64)).mean() if levels.any() else np.nan
        candidate_level = np.log(af["price_vs_type"].values.astype(np.float64))
    out["price_level_gap"] = _float(np.abs(candidate_level - level), af["price_vs_type"].valid & bool(levels.any())).pandas()
    age, mean_age = broadcast(cf, "age"), ats["buyers_mean_age"]
    gap = age.values.astype(np.float64) - mean_age.values.astype(np.float64)
    out["age_vs_buyers_mean"] = _float(gap, age.valid & mean_age.valid).pandas()
    out["age_gap_to_buyers"] = _float(np.abs(gap), age.valid & mean_age.valid).pandas()
    online, own_online = ats["article_online_share"], broadcast(cf, "customer_online_share")
    out["channel_gap"] = _float(
        online.values.astype(np.float64) - own_online.values.astype(np.float64), online.valid & own_online.valid
    ).pandas()

    # taste: the customer's vectors from the purchases in the window, the cosines with the candidates'
    start_days = (cutoff - taste_window_start(cutoff)).days
    window = (days >= 1) & (days <= start_days)
    keys, long, recent_taste = taste_vectors(
        np.full(int(window.sum()), customer_key), bought[window], days[window].astype(np.float64), week.taste.ids, week.taste.vectors
    )
    has_taste = len(keys) == 1
    for name, profile in (("taste_long", long), ("taste_recent", recent_taste)):
        cosine = inner_products(week.taste.vectors[taste_rows], profile[0]) if has_taste and len(week.taste.ids) else np.zeros(n)
        out[name] = _float(cosine, taste_found & has_taste).pandas()
    in_taste = a_taste["article_id"].valid
    cluster_counts = {}
    for k in ("16", "64"):
        cluster_counts[k] = matches(h_taste[f"taste_cluster_{k}"], a_taste[f"taste_cluster_{k}"]).sum(axis=1)
        share_k = share(cluster_counts[k], txn_all)
        out[f"pref_taste_cluster_{k}"] = Column(share_k.values, share_k.valid & in_taste, "float32").pandas()
    for k in ("16", "64"):
        column = a_taste[f"taste_cluster_{k}_share_1w"]
        out[f"taste_cluster_{k}_share_1w"] = _float(column.values, column.valid).pandas()
    usable = txn_all.valid & (txn_all.values != 0)
    share_64 = a_taste["taste_cluster_64_share_1w"]
    out["taste_cluster_affinity"] = _float(
        cluster_counts["64"] / np.where(usable, txn_all.values, 1) * share_64.values.astype(np.float64), usable & share_64.valid
    ).pandas()
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# Candidates: ranked_candidates per retriever -> union -> rules -> calibrated cap.
# --------------------------------------------------------------------------------------------


def _ranked(raw: pd.DataFrame, max_candidates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``base.RANKING_SQL`` for one customer's raw candidates: the best score of each article, ranked
    by score (descending, NaN first as DuckDB orders it) then article id, the first ``max_candidates``:
    (article ids, scores, ranks)."""
    article = raw["article_id"].to_numpy(np.int64)
    score = raw["score"].to_numpy(np.float64)
    if len(article) == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    nan = np.isnan(score)
    order_key = np.where(nan, np.inf, score)
    # the best score of each article (NaN beats every number, as in DuckDB's max)
    by_article = np.lexsort((-order_key, article))
    keep = by_article[run_starts(article[by_article])]
    article, score, order_key = article[keep], score[keep], order_key[keep]
    ranked = np.lexsort((article, -order_key))[: int(max_candidates)]
    return article[ranked], score[ranked], np.arange(1, len(ranked) + 1)


def _nullable_int(values: np.ndarray, valid: np.ndarray, dtype: str):
    return Column(np.where(valid, values, 0).astype(dtype), valid, dtype).pandas()


def customer_candidates(
    con: duckdb.DuckDBPyConnection,
    raws: dict[str, pd.DataFrame | duckdb.DuckDBPyRelation],
    max_candidates: dict[str, int],
    rules: WeekRules,
    customer: CustomerRows,
    cap: CandidateCap,
    calibration: RetrieverCalibration | None,
) -> pd.DataFrame:
    """``stage.select_candidates`` for one customer, as the frame of its table ``candidates``: each
    retriever's raw candidates ranked and capped, their union (a score and rank column per retriever
    in ``raws``' order), without what the ``rules`` remove, at most ``cap`` (by the customer's
    days since the last purchase) by calibrated priority."""
    customer_key = customer.key
    names = list(raws)
    ranked = {}
    for name, raw in raws.items():
        frame = raw if isinstance(raw, pd.DataFrame) else raw.df()
        if len(frame) and (frame["customer_key"].to_numpy(np.int64) != customer_key).any():
            raise ValueError(f"{name} proposed candidates for customers other than {customer_key}")
        ranked[name] = _ranked(frame, max_candidates[name])
    article = np.unique(np.concatenate([ranked[name][0] for name in names])) if names else np.zeros(0, np.int64)
    n = len(article)
    scores, ranks, valid = {}, {}, {}
    for name in names:
        ids, score, rank = ranked[name]
        rows = np.searchsorted(article, ids)
        scores[name] = np.full(n, np.nan)
        ranks[name] = np.zeros(n, np.int64)
        valid[name] = np.zeros(n, bool)
        scores[name][rows] = score
        ranks[name][rows] = rank
        valid[name][rows] = True
    proposed = np.array([valid[name] for name in names]).reshape(len(names), n)
    n_retrievers = proposed.sum(axis=0)
    best_rank = np.where(proposed, np.array([ranks[name] for name in names]).reshape(len(names), n), np.iinfo(np.int64).max).min(
        axis=0, initial=np.iinfo(np.int64).max
    )
    removed = rules.removed(con, customer, article)
    kept = ~removed
    priority = np.zeros(n)
    if calibration is not None:
        miss = np.ones(n)
        for name in names:
            rate = np.full(n, calibration.rate(name, OPEN_BAND))
            for upper in reversed(RANK_BANDS):
                rate = np.where(ranks[name] <= upper, calibration.rate(name, upper), rate)
            # `1 - m1 * m2 * ...`: the products in the SQL's order, so the doubles agree to the bit
            miss = miss * (1 - np.where(valid[name], rate, 0.0))
        priority = 1 - miss
    candidates = np.flatnonzero(kept)
    chosen = candidates[np.lexsort((article[candidates], -n_retrievers[candidates], best_rank[candidates], -priority[candidates]))]
    last = customer.stat("days_since_last_purchase")
    chosen = chosen[: cap.limit(None if last is None else int(last))]
    chosen = chosen[np.lexsort((article[chosen], best_rank[chosen]))]
    out: dict[str, object] = {
        "customer_key": np.full(len(chosen), customer_key, np.int64),
        "article_id": article[chosen].astype(np.int32),
    }
    for name in names:
        out[f"score_{name}"] = np.where(valid[name][chosen], scores[name][chosen], np.nan).astype(np.float32)
        out[f"rank_{name}"] = _nullable_int(ranks[name][chosen], valid[name][chosen], "int16")
    out["n_retrievers"] = n_retrievers[chosen].astype(np.int8)
    out["best_rank"] = best_rank[chosen].astype(np.int16)
    return pd.DataFrame(out)


def _removed_by_rules(
    con: duckdb.DuckDBPyConnection, rules: list[FilterRule], cutoff: date, customer_key: int, article: np.ndarray
) -> np.ndarray:
    """Which of ``article`` the rules remove for the customer: their SQL, in one statement, over the
    union as ``union_candidates``."""
    if not rules or not len(article):
        return np.zeros(len(article), bool)
    marks = " UNION ALL ".join(f"SELECT article_id FROM ({rule.sql})" for rule in rules)
    union = pd.DataFrame({"customer_key": np.full(len(article), customer_key, np.int64), "article_id": article.astype(np.int32)})
    con.register("one_customer_union", union)
    try:
        gone = con.execute(
            f"WITH union_candidates AS (SELECT * FROM one_customer_union) SELECT DISTINCT article_id FROM ({marks})",
            {"cutoff": cutoff} if "$cutoff" in marks else {},
        ).fetchnumpy()
    finally:
        con.unregister("one_customer_union")
    return np.isin(article, np.asarray(gone["article_id"], dtype=np.int64))


# The per-customer rules of ``filters.RULES`` over arrays (their SQL is the definition; the tests hold
# the two equal). A rule without an entry here runs its SQL on every call.
KIDS_INDEX_GROUP = "Baby/Children"


def _wrong_channel(week: "WeekRules", customer: CustomerRows, article: np.ndarray) -> np.ndarray:
    channels = customer.channel
    if len(channels) < 5 or channels.min() != channels.max():
        return np.zeros(len(article), bool)
    rows, found = week.channels.rows(article)
    sales = week.channels.columns["store_sales" if channels[0] == 1 else "online_sales"].take(rows, found)
    return found & (channels[0] in (1, 2)) & sales.valid & (sales.values == 0)


def _price_range(week: "WeekRules", customer: CustomerRows, article: np.ndarray) -> np.ndarray:
    txn_all, highest, lowest = customer.stat("txn_all"), customer.stat("max_price_all"), customer.stat("min_price_all")
    if txn_all is None or txn_all < 5:
        return np.zeros(len(article), bool)
    rows, found = week.prices.rows(article)
    price = week.prices.columns["price"].take(rows, found)
    # FLOAT arithmetic, as DuckDB does it for a FLOAT column and a decimal constant
    above = price.values > np.float32(2.0) * np.float32(highest) if highest is not None else np.zeros(len(article), bool)
    below = price.values < np.float32(lowest) / np.float32(3.0) if lowest is not None else np.zeros(len(article), bool)
    return found & price.valid & (above | below)


def _customer_type(week: "WeekRules", customer: CustomerRows, article: np.ndarray) -> np.ndarray:
    rows, found = week.kids.rows(customer.article)
    total = int(found.sum())
    kids = int(week.kids.columns["kids"].take(rows, found).values[found].sum())
    if total < 8 or kids > 0:
        return np.zeros(len(article), bool)
    rows, found = week.kids.rows(article)
    return found & week.kids.columns["kids"].take(rows, found).values.astype(bool)


IN_MEMORY = {"wrong_channel": _wrong_channel, "price_range": _price_range, "customer_type": _customer_type}


@dataclass(frozen=True)
class WeekRules:
    """The business rules for one customer at a time, read once per week: what the article-only rules
    remove (their own SQL over every article), the per-customer rules' inputs as arrays, and the
    rules (in their order) that run as SQL on every call, having no array form."""

    rules: tuple[FilterRule, ...]
    cutoff: date
    evaluated: np.ndarray  # sorted article ids the article-only rules were evaluated for
    removed_for_anyone: np.ndarray  # sorted article ids they remove
    channels: Table  # rule_article_channels
    prices: Table  # article_features' price
    kids: Table  # articles: whether of the children's index group

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, rules: list[FilterRule], cutoff: date) -> "WeekRules":
        """``con``: the whole week's views and its ``rule_*`` tables (``prepare_rule_inputs``)."""
        article_only = [rule for rule in rules if rule.per_article]
        evaluated = np.unique(np.asarray(
            con.execute("SELECT article_id FROM articles UNION SELECT article_id FROM transactions").fetchnumpy()["article_id"], dtype=np.int64
        ))
        removed = evaluated[_removed_by_rules(con, article_only, cutoff, -1, evaluated)]
        return cls(
            tuple(rules),
            cutoff,
            evaluated,
            removed,
            Table.read(con, "rule_article_channels"),
            Table.read(con, "article_features", columns="article_id, price"),
            Table.read(
                con, "articles",
                columns=f"article_id, CAST(index_group_name IS NOT DISTINCT FROM '{KIDS_INDEX_GROUP}' AS TINYINT) AS kids",
            ),
        )

    def removed(self, con: duckdb.DuckDBPyConnection, customer: CustomerRows, article: np.ndarray) -> np.ndarray:
        """Which of the customer's candidate ``article`` the rules remove."""
        # membership by binary search in the sorted week-wide arrays: np.isin would sort 105k ids per call
        out = _positions(self.removed_for_anyone, article)[1]
        unseen = ~_positions(self.evaluated, article)[1]
        if unseen.any():  # an article in no table of the week: its article-only rules as SQL too
            out[unseen] |= _removed_by_rules(con, [rule for rule in self.rules if rule.per_article], self.cutoff, customer.key, article[unseen])
        by_sql = []
        for rule in self.rules:
            if rule.per_article:
                continue
            if rule.name in IN_MEMORY:
                out |= IN_MEMORY[rule.name](self, customer, article)
            else:
                by_sql.append(rule)
        if by_sql:
            out |= _removed_by_rules(con, by_sql, self.cutoff, customer.key, article)
        return out
