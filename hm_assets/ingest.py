"""Ingest: validated, normalised snapshots of the Kaggle files as Parquet under HM_HOME."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
from PIL import Image

from hm_assets.data_contract import (
    TRANSACTIONS_FILE,
    InputDataError,
    image_path,
    load_articles,
    load_customers,
    load_transactions,
)
from hm_assets.store import HMStore, atomic_path, write_parquet
from hm_assets.weeks import WEEK

ARTICLE_OUTPUT_COLUMNS = """
    CAST(article_id AS INTEGER) AS article_id, CAST(product_code AS INTEGER) AS product_code, prod_name,
    product_type_no, product_type_name, product_group_name, graphical_appearance_no,
    graphical_appearance_name, colour_group_code, colour_group_name, perceived_colour_value_id,
    perceived_colour_value_name, perceived_colour_master_id, perceived_colour_master_name,
    department_no, department_name, index_code, index_name, index_group_no, index_group_name,
    section_no, section_name, garment_group_no, garment_group_name,
    coalesce(detail_desc, '') AS detail_desc
"""


def normalised_articles(con: duckdb.DuckDBPyConnection, data_dir: Path) -> duckdb.DuckDBPyRelation:
    load_articles(con, data_dir)
    return con.sql(f"SELECT {ARTICLE_OUTPUT_COLUMNS} FROM articles_raw ORDER BY article_id")


def normalised_customers(con: duckdb.DuckDBPyConnection, data_dir: Path) -> duckdb.DuckDBPyRelation:
    load_customers(con, data_dir)
    return con.sql(
        """
        SELECT customer_key, customer_id,
               CAST(coalesce(FN, 0) > 0 AS TINYINT) AS fn,
               CAST(coalesce(Active, 0) > 0 AS TINYINT) AS active,
               coalesce(nullif(upper(trim(club_member_status)), ''), 'UNKNOWN') AS club_member_status,
               coalesce(nullif(upper(trim(fashion_news_frequency)), ''), 'UNKNOWN') AS fashion_news_frequency,
               CAST(round(age) AS SMALLINT) AS age,
               coalesce(postal_code, '') AS postal_code
        FROM customers_raw ORDER BY line
        """
    )


def file_fingerprint(path: Path) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so concurrent runs build shared staging once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staged_transactions(store: HMStore, data_dir: Path) -> Path:
    """The whole transactions file validated and typed once per file version (cached).

    Weekly partitions are then cheap selections from it; a file that fails validation
    raises InputDataError and writes nothing.
    """
    source = Path(data_dir) / TRANSACTIONS_FILE
    staging_dir = store.root / "staging"
    if not source.exists():
        raise InputDataError(source, "file not found")
    target = staging_dir / f"transactions-{file_fingerprint(source)}.parquet"
    with file_lock(staging_dir / "transactions.lock"):
        if target.exists():
            return target
        con = store.connect()
        try:
            load_transactions(con, data_dir)
            relation = con.sql(
                """
                SELECT t_dat, ('0x' || right(customer_id, 15))::UBIGINT::BIGINT AS customer_key,
                       CAST(article_id AS INTEGER) AS article_id, CAST(price AS FLOAT) AS price,
                       CAST(sales_channel_id AS TINYINT) AS sales_channel_id
                FROM transactions_raw ORDER BY line
                """
            )
            write_parquet(relation, target)
        finally:
            con.close()
        for old in staging_dir.glob("transactions-*.parquet"):
            if old != target:
                old.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class WeekIngest:
    rows: int
    customers: int
    unknown_customer_rows: int
    unknown_article_rows: int
    first_day: date | None
    last_day: date | None


def write_week(
    con: duckdb.DuckDBPyConnection,
    staging: Path,
    articles: Path,
    customers: Path,
    week: date,
    target: Path,
) -> WeekIngest:
    """Write the transactions of one week, dropping (and counting) unknown ids."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE week_rows AS
        SELECT t.*, c.customer_key IS NOT NULL AS known_customer, a.article_id IS NOT NULL AS known_article
        FROM read_parquet(?) t
        LEFT JOIN (SELECT customer_key FROM read_parquet(?)) c USING (customer_key)
        LEFT JOIN (SELECT article_id FROM read_parquet(?)) a USING (article_id)
        WHERE t.t_dat >= ? AND t.t_dat < ?
        """,
        [str(staging), str(customers), str(articles), week, week + WEEK],
    )
    unknown_customers, unknown_articles = con.execute(
        "SELECT count(*) FILTER (WHERE NOT known_customer), count(*) FILTER (WHERE NOT known_article) FROM week_rows"
    ).fetchall()[0]
    kept = con.sql(
        """
        SELECT t_dat, customer_key, article_id, price, sales_channel_id FROM week_rows
        WHERE known_customer AND known_article ORDER BY t_dat, customer_key, article_id
        """
    )
    rows = write_parquet(kept, target)
    customers_n, first, last = con.execute(
        "SELECT count(DISTINCT customer_key), min(t_dat), max(t_dat) FROM week_rows WHERE known_customer AND known_article"
    ).fetchall()[0]
    return WeekIngest(rows, int(customers_n), int(unknown_customers), int(unknown_articles), first, last)


def catalogue_images(data_dir: Path, article_ids: list[int], previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """article_id -> image path and whether it decodes. Unchanged files reuse the previous verdict."""
    known: dict[str, tuple[int, int, bool, int, int]] = {}
    if previous is not None and len(previous):
        for row in previous.itertuples(index=False):
            known[row.path] = (row.size_bytes, row.mtime_ns, row.readable, row.width, row.height)
    records = []
    for article_id in article_ids:
        path = image_path(data_dir, article_id)
        try:
            stat = path.stat()
        except OSError:
            records.append((article_id, str(path), False, False, 0, 0, 0, 0))
            continue
        cached = known.get(str(path))
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            readable, width, height = cached[2], cached[3], cached[4]
        else:
            readable, width, height = _probe_image(path)
        records.append((article_id, str(path), True, readable, width, height, stat.st_size, stat.st_mtime_ns))
    return pd.DataFrame.from_records(
        records,
        columns=["article_id", "path", "exists", "readable", "width", "height", "size_bytes", "mtime_ns"],
    ).astype({"article_id": "int32", "width": "int32", "height": "int32", "size_bytes": "int64", "mtime_ns": "int64"})


def _probe_image(path: Path) -> tuple[bool, int, int]:
    try:
        with Image.open(path) as image:
            image.load()
            return True, int(image.width), int(image.height)
    except Exception:  # any decoding failure means "no usable image", never a crash
        return False, 0, 0


__all__ = [
    "atomic_path",
    "catalogue_images",
    "normalised_articles",
    "normalised_customers",
    "staged_transactions",
    "write_week",
]
