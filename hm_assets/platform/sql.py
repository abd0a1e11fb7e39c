"""Load the DuckDB SQL files in ``sql/`` by name; copy an Arrow batch's columns into a float matrix."""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa

from hm_assets.platform.settings import SQL_DIR


@cache
def load_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file named {name!r} in {SQL_DIR}")
    return path.read_text()


def float_matrix(batch: pa.RecordBatch, columns: list[str], out: np.ndarray | None = None) -> np.ndarray:
    """``columns`` of ``batch`` as one C-ordered float64 matrix, nulls as NaN (columns of any numeric
    type; cast them to DOUBLE in the query and this is a copy). ``out``: a float64 buffer of at least
    the batch's rows and exactly ``columns`` columns, whose first rows become the matrix. Reusing one
    across batches spares faulting in a new allocation's pages every batch (~0.5 s per 160 MB here)."""
    if out is None:
        matrix = np.empty((batch.num_rows, len(columns)), dtype=np.float64)
    elif out.dtype != np.float64 or out.ndim != 2 or out.shape[1] != len(columns) or len(out) < batch.num_rows:
        raise ValueError(f"a buffer of shape {out.shape} ({out.dtype}) cannot hold {batch.num_rows} rows x {len(columns)} columns")
    else:
        matrix = out[: batch.num_rows]
    for j, name in enumerate(columns):
        matrix[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return matrix
