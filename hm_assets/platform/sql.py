"""Load the DuckDB SQL files in ``sql/`` by name; read a large result in DataFrame chunks."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import duckdb
import pandas as pd

from hm_assets.platform.settings import SQL_DIR


@cache
def load_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file named {name!r} in {SQL_DIR}")
    return path.read_text()


DUCKDB_VECTOR_ROWS = 2048


def frame_chunks(con: duckdb.DuckDBPyConnection, sql: str, rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """The result of ``sql`` as DataFrames of about ``rows`` rows each, in the result's order and
    with the dtypes ``.df()`` gives: a consumer that keeps a few columns of each chunk holds the
    whole result's width only ``rows`` at a time."""
    result = con.execute(sql)
    vectors = max(1, rows // DUCKDB_VECTOR_ROWS)
    while not (chunk := result.fetch_df_chunk(vectors)).empty:
        yield chunk
