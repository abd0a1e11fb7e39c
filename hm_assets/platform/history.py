"""A week's view of the data: DuckDB views over what is known strictly before the cut-off.

Partition W may only use transactions dated before W. ``open_week`` registers:
- ``transactions``: every ingested week before the cut-off (the history),
- ``articles``, ``customers``: the snapshots,
- ``truth``: the target week's transactions, only where ``with_truth=True`` (labels, evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from hm_assets.platform.guards import raise_if_out_of_memory
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import WEEK, parse_week


class MissingHistoryError(RuntimeError):
    pass


def stored_history_weeks(store: HMStore) -> list[str]:
    """The ingested weeks of transactions in ``store``, for tools that run outside the code
    location (the ablation, the online path, the gallery); a gap between them is an error, not a
    shorter history."""
    keys = store.partitions("transactions")
    gaps = [(a, b) for a, b in zip(keys, keys[1:]) if parse_week(b) - parse_week(a) != WEEK]
    if gaps:
        shown = ", ".join(f"{a}..{b}" for a, b in gaps[:5])
        raise MissingHistoryError(
            f"weeks of transactions are missing in {store.asset_dir('transactions')} between {shown}: "
            "backfill the 'transactions' asset over those weeks first"
        )
    return keys


def history_files(store: HMStore, week_keys: Iterable[str], cutoff: date) -> list[Path]:
    """Weekly transaction files before ``cutoff``; every such week must be materialized."""
    keys = sorted(k for k in week_keys if parse_week(k) < cutoff)
    files = [store.fetch(store.asset_path("transactions", k)) for k in keys]
    missing = [k for k, f in zip(keys, files) if not f.exists()]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise MissingHistoryError(
            f"transactions are not materialized for {len(missing)} week(s) before {cutoff}: {shown}. "
            f"Backfill the 'transactions' asset over those partitions first."
        )
    return files


def _parquet_list(files: list[Path]) -> str:
    return "[" + ", ".join(f"'{f}'" for f in files) + "]"


EMPTY_TRANSACTIONS = (
    "SELECT CAST(NULL AS DATE) AS t_dat, CAST(NULL AS BIGINT) AS customer_key, CAST(NULL AS INTEGER) AS article_id, "
    "CAST(NULL AS FLOAT) AS price, CAST(NULL AS TINYINT) AS sales_channel_id WHERE false"
)


@dataclass
class WeekView:
    con: duckdb.DuckDBPyConnection
    cutoff: date
    has_truth: bool
    memory_limit: str | None = None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "WeekView":
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        raise_if_out_of_memory(exc, self.memory_limit)  # DuckDB's OOM -> an error naming the budget


def open_week(
    store: HMStore,
    week_key: str,
    all_week_keys: Iterable[str],
    with_truth: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
) -> WeekView:
    cutoff = parse_week(week_key)
    con = con or store.connect()
    files = history_files(store, all_week_keys, cutoff)
    source = f"SELECT * FROM read_parquet({_parquet_list(files)})" if files else EMPTY_TRANSACTIONS
    # The filter is redundant with the file list; it keeps the no-leakage promise explicit.
    con.execute(f"CREATE OR REPLACE VIEW transactions AS SELECT * FROM ({source}) WHERE t_dat < DATE '{cutoff}'")
    con.execute(f"CREATE OR REPLACE VIEW articles AS SELECT * FROM read_parquet('{store.require('articles')}')")
    con.execute(f"CREATE OR REPLACE VIEW customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
    has_truth = False
    if with_truth:
        truth_file = store.fetch(store.asset_path("transactions", week_key))
        if truth_file.exists():
            con.execute(
                f"CREATE OR REPLACE VIEW truth AS SELECT * FROM read_parquet('{truth_file}') "
                f"WHERE t_dat >= DATE '{cutoff}' AND t_dat < DATE '{cutoff + WEEK}'"
            )
            has_truth = con.execute("SELECT count(*) > 0 FROM truth").fetchall()[0][0]
    if not has_truth:
        con.execute(f"CREATE OR REPLACE VIEW truth AS {EMPTY_TRANSACTIONS}")
    return WeekView(con=con, cutoff=cutoff, has_truth=bool(has_truth), memory_limit=store.duckdb_memory_limit)


def register_parquet(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
