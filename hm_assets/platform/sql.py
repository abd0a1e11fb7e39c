"""Load the DuckDB SQL files in ``sql/`` by name."""

from __future__ import annotations

from functools import cache

from hm_assets.platform.settings import SQL_DIR


@cache
def load_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file named {name!r} in {SQL_DIR}")
    return path.read_text()
