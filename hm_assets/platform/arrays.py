"""Group operations on sorted numpy arrays, for the few-customer paths where pandas' per-call
overhead would cost more than the work."""

from __future__ import annotations

import numpy as np


def position_in_runs(keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal consecutive ``keys`` (pandas' ``groupby().cumcount()``)."""
    n = len(keys)
    starts = np.ones(n, bool)
    starts[1:] = keys[1:] != keys[:-1]
    return np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))


def matching_rows(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``sorted_ids`` equal to each of ``wanted``: (the position in ``wanted``, the row),
    in the order of ``wanted``, then of the rows (the order of an inner merge)."""
    start = np.searchsorted(sorted_ids, wanted, side="left")
    counts = np.searchsorted(sorted_ids, wanted, side="right") - start
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.arange(len(wanted)), counts), np.repeat(start, counts) + within
