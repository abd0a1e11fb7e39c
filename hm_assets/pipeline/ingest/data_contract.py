"""The input contract: the Kaggle "H&M Personalized Fashion Recommendations" files.

Reading is done by DuckDB with explicit column types. Real-world variants are normalised
(article_id with or without its leading zero, an extra unnamed index column, age as float,
UTF-8 BOM, CRLF line endings). Anything else that does not fit raises ``InputDataError``
naming the file, the column and the line, before anything is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from hm_assets.platform.guards import raise_if_out_of_memory

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ARTICLES_FILE = "articles.csv"
CUSTOMERS_FILE = "customers.csv"
TRANSACTIONS_FILE = "transactions_train.csv"
IMAGES_DIR = "images"
# Articles per customer in a submission, scored by MAP@12: every list the pipeline and the service make.
K = 12


class InputDataError(ValueError):
    """Input that breaks the data contract; says where: file, column, line."""

    def __init__(self, file: Path | str, message: str, column: str | None = None, line: int | None = None):
        self.file = str(file)
        self.column = column
        self.line = line
        self.reason = message
        where = [self.file]
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass(frozen=True)
class FileSpec:
    name: str
    columns: dict[str, str]
    optional: frozenset[str] = field(default_factory=frozenset)

    @property
    def required(self) -> list[str]:
        return [c for c in self.columns if c not in self.optional]


ARTICLE_COLUMNS: dict[str, str] = {
    "article_id": "BIGINT",
    "product_code": "BIGINT",
    "prod_name": "VARCHAR",
    "product_type_no": "INTEGER",
    "product_type_name": "VARCHAR",
    "product_group_name": "VARCHAR",
    "graphical_appearance_no": "INTEGER",
    "graphical_appearance_name": "VARCHAR",
    "colour_group_code": "INTEGER",
    "colour_group_name": "VARCHAR",
    "perceived_colour_value_id": "INTEGER",
    "perceived_colour_value_name": "VARCHAR",
    "perceived_colour_master_id": "INTEGER",
    "perceived_colour_master_name": "VARCHAR",
    "department_no": "INTEGER",
    "department_name": "VARCHAR",
    "index_code": "VARCHAR",
    "index_name": "VARCHAR",
    "index_group_no": "INTEGER",
    "index_group_name": "VARCHAR",
    "section_no": "INTEGER",
    "section_name": "VARCHAR",
    "garment_group_no": "INTEGER",
    "garment_group_name": "VARCHAR",
    "detail_desc": "VARCHAR",
}

CUSTOMER_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "FN": "DOUBLE",
    "Active": "DOUBLE",
    "club_member_status": "VARCHAR",
    "fashion_news_frequency": "VARCHAR",
    "age": "DOUBLE",
    "postal_code": "VARCHAR",
}

TRANSACTION_COLUMNS: dict[str, str] = {
    "t_dat": "DATE",
    "customer_id": "VARCHAR",
    "article_id": "BIGINT",
    "price": "DOUBLE",
    "sales_channel_id": "INTEGER",
}

ARTICLES = FileSpec(ARTICLES_FILE, ARTICLE_COLUMNS, optional=frozenset({"detail_desc"}))
CUSTOMERS = FileSpec(CUSTOMERS_FILE, CUSTOMER_COLUMNS)
TRANSACTIONS = FileSpec(TRANSACTIONS_FILE, TRANSACTION_COLUMNS)

# A customer's integer key: the last 15 hex digits of its 64-hex-digit id (60 bits, a positive
# BIGINT). Stable across files and far cheaper to join than the string; ingest checks uniqueness.
CUSTOMER_KEY_SQL = "('0x' || right(customer_id, 15))::UBIGINT::BIGINT"
CUSTOMER_ID_PATTERN = "^[0-9a-fA-F]{16,}$"


def _sniff_header(path: Path) -> list[str]:
    if not path.exists():
        raise InputDataError(path, "file not found")
    if not path.is_file():
        raise InputDataError(path, "not a regular file")
    with path.open("rb") as handle:
        head = handle.read(65536)
    if not head.strip():
        raise InputDataError(path, "file is empty", line=1)
    if b"\x00" in head:
        raise InputDataError(path, "not a CSV text file (binary content)", line=1)
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if len(head) < 65536 or exc.start < len(head) - 4:
            raise InputDataError(path, f"not a UTF-8 CSV text file ({exc.reason} at byte {exc.start})", line=1) from exc
        text = head[: exc.start].decode("utf-8-sig")
    first_line = text.splitlines()[0] if text.splitlines() else ""
    return [c.strip() for c in next(csv.reader(io.StringIO(first_line)))]


def _column_types(path: Path, spec: FileSpec) -> dict[str, str]:
    header = _sniff_header(path)
    if len(header) < 2:
        raise InputDataError(path, f"not a CSV file with the expected header (found {header[:3]!r})", line=1)
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise InputDataError(path, f"missing column (header has {len(header)} columns: {', '.join(header)})", column=missing[0], line=1)
    types: dict[str, str] = {}
    for position, name in enumerate(header):
        if name in spec.columns:
            types[name] = spec.columns[name]
        elif name == "" or name.lower().startswith("unnamed"):
            types[name or f"index_column_{position}"] = "VARCHAR"  # a saved pandas index: ignored
        else:
            types[name] = "VARCHAR"  # an extra column is kept out of the way, not an error
    return types


def _raise_first_reject(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    rejects = con.execute(
        "SELECT line, column_name, error_type, error_message FROM reject_errors ORDER BY line LIMIT 1"
    ).fetchall()
    if not rejects:
        return
    line, column, error_type, message = rejects[0]
    column = column if column not in (None, "") else None
    kind = str(error_type).replace("_", " ").lower()
    detail = str(message).split("\n")[0]
    raise InputDataError(path, f"{kind}: {detail}", column=column, line=int(line))


def load_csv(con: duckdb.DuckDBPyConnection, path: Path, spec: FileSpec, table: str) -> int:
    """Read ``path`` into table ``table`` (columns typed per ``spec``, plus ``line``); returns rows.

    ``line`` is the 1-based line number in the file (the header is line 1).
    """
    path = Path(path)
    types = _column_types(path, spec)
    columns_sql = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in types.items()) + "}"
    con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT row_number() OVER () + 1 AS line, *
            FROM read_csv(?, header = true, columns = {columns_sql}, delim = ',', quote = '"',
                          escape = '"', strict_mode = true, store_rejects = true,
                          parallel = false, null_padding = false, auto_detect = false)
            """,
            [str(path)],
        )
    except duckdb.Error as exc:
        raise_if_out_of_memory(exc, con=con)  # a too small memory budget is not bad input
        raise InputDataError(path, f"unreadable as CSV: {str(exc).splitlines()[0]}") from exc
    _raise_first_reject(con, path)
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    if rows == 0:
        raise InputDataError(path, "file has a header but no data rows", line=2)
    return int(rows)


def first_violation(con: duckdb.DuckDBPyConnection, table: str, condition: str, column: str) -> tuple[int, str] | None:
    rows = con.execute(
        f"SELECT line, CAST({column} AS VARCHAR) FROM {table} WHERE {condition} ORDER BY line LIMIT 1"
    ).fetchall()
    return (int(rows[0][0]), rows[0][1]) if rows else None


def check(con: duckdb.DuckDBPyConnection, path: Path, table: str, column: str, condition: str, message: str) -> None:
    """Raise InputDataError at the first row where ``condition`` holds."""
    violation = first_violation(con, table, condition, column)
    if violation is not None:
        line, value = violation
        raise InputDataError(path, f"{message} (value {value!r})", column=column, line=line)


def check_unique(con: duckdb.DuckDBPyConnection, path: Path, table: str, column: str, what: str) -> None:
    rows = con.execute(
        f"""
        SELECT line, first_line, CAST({column} AS VARCHAR) FROM (
            SELECT line, {column}, min(line) OVER (PARTITION BY {column}) AS first_line FROM {table}
        ) WHERE line > first_line ORDER BY line LIMIT 1
        """
    ).fetchall()
    if rows:
        line, first_line, value = rows[0]
        raise InputDataError(path, f"duplicated {what} {value!r} (first seen on line {first_line})", column=column, line=int(line))


def load_articles(con: duckdb.DuckDBPyConnection, data_dir: Path, table: str = "articles_raw") -> int:
    path = Path(data_dir) / ARTICLES_FILE
    rows = load_csv(con, path, ARTICLES, table)
    check(con, path, table, "article_id", "article_id IS NULL", "missing article_id")
    check(con, path, table, "article_id", "article_id <= 0 OR article_id >= 10000000000", "article_id is not a 10-digit number")
    check_unique(con, path, table, "article_id", "article_id")
    return rows


def load_customers(con: duckdb.DuckDBPyConnection, data_dir: Path, table: str = "customers_raw") -> int:
    path = Path(data_dir) / CUSTOMERS_FILE
    rows = load_csv(con, path, CUSTOMERS, table)
    check(con, path, table, "customer_id", "customer_id IS NULL", "missing customer_id")
    check(con, path, table, "customer_id", f"NOT regexp_matches(customer_id, '{CUSTOMER_ID_PATTERN}')",
          "customer_id is not a hexadecimal id")
    check(con, path, table, "age", "age < 0 OR age > 130", "age out of range")
    check_unique(con, path, table, "customer_id", "customer_id")
    con.execute(f"ALTER TABLE {table} ADD COLUMN customer_key BIGINT")
    con.execute(f"UPDATE {table} SET customer_key = {CUSTOMER_KEY_SQL}")
    check_unique(con, path, table, "customer_key", "customer key (last 15 hex digits of customer_id)")
    return rows


def load_transactions(con: duckdb.DuckDBPyConnection, data_dir: Path, table: str = "transactions_raw") -> int:
    path = Path(data_dir) / TRANSACTIONS_FILE
    rows = load_csv(con, path, TRANSACTIONS, table)
    check(con, path, table, "t_dat", "t_dat IS NULL", "missing date")
    check(con, path, table, "customer_id", "customer_id IS NULL", "missing customer_id")
    check(con, path, table, "customer_id", f"NOT regexp_matches(customer_id, '{CUSTOMER_ID_PATTERN}')",
          "customer_id is not a hexadecimal id")
    check(con, path, table, "article_id", "article_id IS NULL", "missing article_id")
    check(con, path, table, "price", "price IS NULL", "missing price")
    check(con, path, table, "price", "price < 0 OR isnan(price) OR isinf(price)", "price must be a non-negative number")
    check(con, path, table, "sales_channel_id", "sales_channel_id IS NULL OR sales_channel_id NOT IN (1, 2)",
          "sales_channel_id must be 1 or 2")
    return rows


# Kaggle writes article ids zero-padded to this many digits ("0108775015").
ARTICLE_ID_DIGITS = 10


def format_article_id(article_id: int) -> str:
    return f"{int(article_id):0{ARTICLE_ID_DIGITS}d}"


def format_article_ids(article_ids: pd.Series) -> np.ndarray:
    """``format_article_id`` of every id, at once (a call per id costs a second per 600,000)."""
    return article_ids.astype("int64").astype(str).str.zfill(ARTICLE_ID_DIGITS).to_numpy(dtype=object)


def image_path(data_dir: Path, article_id: int) -> Path:
    text = format_article_id(article_id)
    return Path(data_dir) / IMAGES_DIR / text[:3] / f"{text}.jpg"
