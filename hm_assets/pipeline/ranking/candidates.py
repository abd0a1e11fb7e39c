"""The filtered union of all retrievers' candidates.

One row per (customer, article) with every retriever's score and rank as columns (NULL when that
retriever did not propose it), then the business rules, then a cap per customer.

The cap keeps the candidates most likely to be bought. That likelihood is calibrated on the
previous week, whose outcome is known at the cut-off: for each retriever and rank band, the share
of its candidates for that week's buyers that were bought (``RetrieverCalibration``). A pair
proposed by several retrievers gets their combined chance (noisy-or). Without a calibration week
the cap falls back to the best rank of any retriever. Ranks of different retrievers are not
comparable (rank 3 of a weak retriever is worth less than rank 40 of a strong one); the calibrated
order lets a new retriever join without crowding out better candidates. A week's candidates file
records the calibration its cap used (``CALIBRATION_KEY``), so the on-demand path orders a
customer's cap as the batch did without measuring the previous week again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from hm_assets.pipeline.ranking.filters import FilterRule
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import WEEK, parse_week


def source_sql(source: Path | str) -> str:
    """A retriever's candidates: its Parquet file, or (a ``str``) a table or registered frame."""
    return f"read_parquet('{source}')" if isinstance(source, Path) else source


Sources = dict[str, Path | str]


def source_names(sources: Sources) -> list[str]:
    return list(sources)


def union_sql(sources: Sources, where: str = "true") -> str:
    # Retrievers by position (a TINYINT compares faster than a name), and n_retrievers counted from
    # the rank columns (a retriever's candidates always have a rank: ``ranked_candidates``):
    # count(DISTINCT retriever) took a second hash aggregate and a join, 60% of the query at full
    # scale (RESULTS.md).
    names = source_names(sources)
    parts = " UNION ALL ".join(
        f"SELECT CAST({i} AS TINYINT) AS retriever, customer_key, article_id, score, rank FROM {source_sql(source)} WHERE {where}"
        for i, source in enumerate(sources.values())
    )
    columns = ",\n".join(
        f"max(score) FILTER (WHERE retriever = {i}) AS score_{name},\n"
        f"min(rank) FILTER (WHERE retriever = {i}) AS rank_{name}"
        for i, name in enumerate(names)
    )
    kept = ", ".join(f"score_{name}, rank_{name}" for name in names)
    proposed = " + ".join(f"CAST(rank_{name} IS NOT NULL AS INTEGER)" for name in names)
    return f"""
        SELECT customer_key, article_id, {kept}, CAST({proposed} AS TINYINT) AS n_retrievers, best_rank
        FROM (
            SELECT customer_key, article_id,
                   {columns},
                   CAST(min(rank) AS SMALLINT) AS best_rank
            FROM ({parts})
            GROUP BY customer_key, article_id
        )
    """


@dataclass
class RuleEffect:
    rule: str
    removed: int
    removed_true: int | None


def build_union(con: duckdb.DuckDBPyConnection, sources: Sources, where: str = "true") -> int:
    """The union of the retrievers' candidates (of the customers matching ``where``) as ``union_candidates``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE union_candidates AS {union_sql(sources, where)}")
    return con.execute("SELECT count(*) FROM union_candidates").fetchall()[0][0]


def apply_rules(
    con: duckdb.DuckDBPyConnection, rules: list[FilterRule], cutoff, has_truth: bool
) -> list[RuleEffect]:
    """Mark removals of every enabled rule in ``removed_pairs``; counts per rule (overlaps counted in each).
    One statement marks, one counts: for one customer (online) a statement's fixed cost is most of its time."""
    con.execute("CREATE OR REPLACE TEMP TABLE removed_pairs (customer_key BIGINT, article_id INTEGER, rule VARCHAR)")
    if not rules:
        return []
    marks = " UNION ALL ".join(
        f"SELECT DISTINCT customer_key, article_id, '{rule.name}' AS rule FROM ({rule.sql})" for rule in rules
    )
    con.execute(f"INSERT INTO removed_pairs {marks}", {"cutoff": cutoff} if "$cutoff" in marks else {})
    if has_truth:
        counts = con.execute(
            "SELECT r.rule, count(*), count(t.customer_key) FROM removed_pairs r "
            "LEFT JOIN (SELECT DISTINCT customer_key, article_id FROM truth) t USING (customer_key, article_id) "
            "GROUP BY r.rule"
        ).fetchall()
    else:
        counts = con.execute("SELECT rule, count(*), NULL FROM removed_pairs GROUP BY rule").fetchall()
    by_rule = {rule: (int(removed), None if removed_true is None else int(removed_true)) for rule, removed, removed_true in counts}
    return [
        RuleEffect(rule.name, *by_rule.get(rule.name, (0, 0 if has_truth else None)))
        for rule in rules
    ]


# Upper bounds of the rank bands a retriever's hit rate is measured in; the last band is open.
RANK_BANDS: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 30, 50, 100)
OPEN_BAND = RANK_BANDS[-1] + 1
# Pseudo-candidates pulling a thinly observed band towards the overall hit rate.
PRIOR_STRENGTH = 200


@dataclass(frozen=True)
class RetrieverCalibration:
    """P(bought | retriever, rank band), measured on one earlier week's buyers."""

    week: str
    table: pd.DataFrame  # retriever, band, proposed, bought, hit_rate

    @cached_property
    def _rates(self) -> dict[tuple[str, int], float]:
        return {(r, int(b)): float(h) for r, b, h in zip(self.table["retriever"], self.table["band"], self.table["hit_rate"])}

    def rate(self, retriever: str, band: int) -> float:
        return self._rates.get((retriever, band), 0.0)

    def by_band(self) -> pd.DataFrame:
        """Hit rate by rank band (rows) and retriever (columns), for the UI."""
        table = self.table.pivot(index="band", columns="retriever", values="hit_rate")
        table.index = [f"> {RANK_BANDS[-1]}" if band == OPEN_BAND else f"<= {band}" for band in table.index]
        return table.rename_axis("rank").reset_index()

    def priority_sql(self, retrievers: list[str]) -> str:
        """SQL for a union row's calibrated chance of being bought (noisy-or over its retrievers).
        Each retriever's rate is looked up in a list indexed by rank (1 … the open band): a chain of
        band comparisons per retriever cost a quarter of the cap's time."""
        misses = []
        for name in retrievers:
            rates = ", ".join(repr(self.rate(name, band_of(rank))) for rank in range(1, OPEN_BAND + 1))
            # (``least`` would skip a NULL rank: the CASE keeps it NULL, and a NULL index gives NULL)
            index = f"CASE WHEN rank_{name} > {OPEN_BAND} THEN {OPEN_BAND} ELSE rank_{name} END"
            misses.append(f"(1 - coalesce(([{rates}]::DOUBLE[])[{index}], 0.0))")
        return "1 - " + " * ".join(misses) if misses else "0.0::DOUBLE"


def band_of(rank: int) -> int:
    """The rank band (its upper bound, or ``OPEN_BAND``) of a rank from 1."""
    return next((upper for upper in RANK_BANDS if rank <= upper), OPEN_BAND)


def band_sql(column: str) -> str:
    cases = " ".join(f"WHEN {column} <= {upper} THEN {upper}" for upper in RANK_BANDS)
    return f"CASE {cases} ELSE {OPEN_BAND} END"


def calibrate(con: duckdb.DuckDBPyConnection, week: str, sources: dict[str, Path], truth: Path) -> RetrieverCalibration | None:
    """Hit rates per retriever and rank band of ``week``'s candidates among that week's buyers
    (``sources``: the retrievers' outputs of that week; ``truth``: its transactions)."""
    parts = " UNION ALL ".join(
        f"SELECT '{name}' AS retriever, customer_key, article_id, rank FROM read_parquet('{path}')"
        for name, path in sources.items()
    )
    table = con.sql(
        f"""
        WITH bought AS (SELECT DISTINCT customer_key, article_id FROM read_parquet('{truth}')),
        proposed AS (
            SELECT p.retriever, {band_sql('p.rank')} AS band, (b.article_id IS NOT NULL) AS hit
            FROM ({parts}) p
            SEMI JOIN (SELECT DISTINCT customer_key FROM bought) USING (customer_key)
            LEFT JOIN bought b USING (customer_key, article_id)
        )
        SELECT retriever, CAST(band AS INTEGER) AS band, count(*) AS proposed, CAST(sum(hit::INTEGER) AS BIGINT) AS bought
        FROM proposed GROUP BY ALL ORDER BY retriever, band
        """
    ).df()
    if table.empty or table["bought"].sum() == 0:
        return None
    overall = table["bought"].sum() / table["proposed"].sum()
    table["hit_rate"] = (table["bought"] + PRIOR_STRENGTH * overall) / (table["proposed"] + PRIOR_STRENGTH)
    return RetrieverCalibration(week, table)


# The key of a week's candidates file's Parquet metadata that records the calibration its cap used.
CALIBRATION_KEY = "hm.cap_calibration"
CALIBRATION_COLUMNS = ("retriever", "band", "proposed", "bought", "hit_rate")


def calibration_record(calibration: RetrieverCalibration | None, retrievers: list[str]) -> str:
    """``calibration`` (or its absence) for the retrievers it was measured for, as the JSON a week's
    candidates carry (floats written by ``repr``: read back to the bit)."""
    if calibration is None:
        return json.dumps({"retrievers": sorted(retrievers), "week": None})
    table = calibration.table
    rows = [list(row) for row in zip(*(table[c].tolist() for c in CALIBRATION_COLUMNS))]
    return json.dumps({"retrievers": sorted(retrievers), "week": calibration.week, "columns": CALIBRATION_COLUMNS, "rows": rows})


def recorded_calibration(candidates: Path, retrievers: list[str]) -> tuple[bool, RetrieverCalibration | None]:
    """(found, the calibration) that the candidates file records for ``retrievers``; not found in a
    file written before candidates carried it, or for other retrievers."""
    metadata = pq.read_schema(candidates).metadata or {}
    raw = metadata.get(CALIBRATION_KEY.encode())
    if raw is None:
        return False, None
    record = json.loads(raw)
    if record["retrievers"] != sorted(retrievers):
        return False, None
    if record["week"] is None:
        return True, None
    table = pd.DataFrame(record["rows"], columns=record["columns"])
    table = table.astype({"band": "int32", "proposed": "int64", "bought": "int64", "hit_rate": "float64"})
    return True, RetrieverCalibration(record["week"], table)


def week_calibration(store: HMStore, week: str, retrievers: list[str]) -> RetrieverCalibration | None:
    """The calibration ``week``'s cap used, as its candidates file records it (measured again where
    that file does not: an older home, other retrievers, no candidates yet)."""
    candidates = store.optional("candidates", week)
    if candidates is not None:
        found, calibration = recorded_calibration(candidates, retrievers)
        if found:
            return calibration
    return previous_week_calibration(store, week, retrievers)


def previous_week_calibration(store: HMStore, week: str, retrievers: list[str]) -> RetrieverCalibration | None:
    """The calibration the cap of ``week`` uses: measured on the week before, when that week's
    retriever outputs and transactions exist."""
    earlier = (parse_week(week) - WEEK).isoformat()
    truth = store.optional("transactions", earlier)
    sources = {name: store.optional(name, earlier) for name in retrievers}
    if truth is None or any(path is None for path in sources.values()):
        return None
    con = store.connect()
    try:
        return calibrate(con, earlier, sources, truth)
    finally:
        con.close()


@dataclass(frozen=True)
class CandidateCap:
    """How many candidates a customer keeps after the rules: ``per_customer``, or ``per_lapsed_customer``
    for a customer whose last purchase lies more than ``lapsed_after_days`` before the cut-off, or who
    never bought. Every pair kept costs its features and its score, and at full scale the customers
    without a purchase in 13 weeks are half of all. A year and 60 candidates (the default) scores 6%
    fewer pairs at full scale at no measurable MAP@12; 91 days and 60 scores 20% fewer for 1-2%
    (RESULTS.md, "fewer candidates for lapsed customers"). Any change of the candidates reshuffles the
    ranker's negative samples, so the tiny preset's walkthrough (three purchases of a style) is the
    check that the on-demand lists still follow a purchase under it."""

    per_customer: int = 120
    per_lapsed_customer: int = 60
    lapsed_after_days: int = 365

    def __post_init__(self) -> None:
        if self.per_customer < 1 or self.per_lapsed_customer < 1 or self.lapsed_after_days < 0:
            raise ValueError(f"a candidate cap needs positive counts and non-negative days: {self}")
        if self.per_lapsed_customer > self.per_customer:
            raise ValueError(f"a lapsed customer keeps at most as many candidates as any other: {self}")

    @property
    def uniform(self) -> bool:
        return self.per_lapsed_customer == self.per_customer

    def limit(self, days_since_last_purchase: int | None) -> int:
        """The cap of one customer (None: never bought)."""
        if days_since_last_purchase is None or days_since_last_purchase > self.lapsed_after_days:
            return self.per_lapsed_customer
        return self.per_customer

    def limit_sql(self, days_since_last_purchase: str) -> str:
        """``limit`` in SQL over a column (NULL: never bought)."""
        if self.uniform:
            return str(int(self.per_customer))
        return (
            f"CASE WHEN {days_since_last_purchase} <= {int(self.lapsed_after_days)} "
            f"THEN {int(self.per_customer)} ELSE {int(self.per_lapsed_customer)} END"
        )


DEFAULT_CAP = CandidateCap()

# The cap's order within a customer's candidates (``one_customer.customer_candidates`` sorts the same
# way over arrays).
CAP_ORDER = "priority DESC, best_rank, n_retrievers DESC, article_id"


def filtered_candidates(
    con: duckdb.DuckDBPyConnection,
    cap: CandidateCap = DEFAULT_CAP,
    calibration: RetrieverCalibration | None = None,
    retrievers: list[str] | None = None,
) -> duckdb.DuckDBPyRelation:
    """Survivors of the rules; at most ``cap`` each, the most likely to be bought first by
    ``calibration`` (of ``retrievers``, the union's sources), else by best rank."""
    return con.sql(filtered_candidates_sql(cap, calibration, retrievers))


def filtered_candidates_sql(
    cap: CandidateCap = DEFAULT_CAP, calibration: RetrieverCalibration | None = None, retrievers: list[str] | None = None
) -> str:
    """The query of ``filtered_candidates`` over ``union_candidates``, ``removed_pairs`` and (for a
    cap that tells lapsed customers apart) ``customer_transaction_stats``."""
    priority = calibration.priority_sql(retrievers or []) if calibration is not None else "0.0::DOUBLE"
    stats = "" if cap.uniform else "LEFT JOIN customer_transaction_stats s USING (customer_key)"
    return (
        f"""
        SELECT * EXCLUDE (priority, keep) FROM (
            SELECT u.*, {priority} AS priority, {cap.limit_sql("s.days_since_last_purchase")} AS keep
            FROM union_candidates u {stats}
            ANTI JOIN removed_pairs r USING (customer_key, article_id)
        )
        QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY {CAP_ORDER}) <= keep
        ORDER BY customer_key, best_rank, article_id
        """
    )


def found_true_pairs(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many distinct (customer, article) purchases of the target week ``table`` contains."""
    return con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT customer_key, article_id FROM truth) t "
        f"SEMI JOIN {table} c USING (customer_key, article_id)"
    ).fetchall()[0][0]


def add_effects(total: list[RuleEffect], shard: list[RuleEffect]) -> list[RuleEffect]:
    if not total:
        return shard
    return [
        RuleEffect(
            a.rule,
            a.removed + b.removed,
            None if a.removed_true is None else a.removed_true + (b.removed_true or 0),
        )
        for a, b in zip(total, shard)
    ]


def effects_table(effects: list[RuleEffect]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"rule": e.rule, "removed_candidates": e.removed, "removed_true_purchases": e.removed_true} for e in effects]
    )
