"""Group operations on sorted numpy arrays, for the few-customer paths where pandas' per-call
overhead would cost more than the work."""

from __future__ import annotations

import numpy as np


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Whether each row starts a run of rows equal in every one of ``keys`` (arrays of one length,
    ordered so that equal rows are consecutive)."""
    n = len(keys[0])
    starts = np.zeros(n, bool)
    starts[:1] = True
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts


def position_in_runs(keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal consecutive ``keys`` (pandas' ``groupby().cumcount()``)."""
    n = len(keys)
    starts = run_starts(keys)
    return np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))


def matching_rows(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``sorted_ids`` equal to each of ``wanted``: (the position in ``wanted``, the row),
    in the order of ``wanted``, then of the rows (the order of an inner merge)."""
    start = np.searchsorted(sorted_ids, wanted, side="left")
    counts = np.searchsorted(sorted_ids, wanted, side="right") - start
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.arange(len(wanted)), counts), np.repeat(start, counts) + within


def group_rows(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups of equal ``keys`` (one array per key column): each row's group number, groups
    numbered in the keys' sort order, and each group's first row. ``np.bincount(number, weights)``
    then sums a group's weights in row order (as a SQL engine's sum does, one thread)."""
    order = np.lexsort(keys[::-1])
    starts = run_starts(*(key[order] for key in keys))
    number = np.empty(len(order), np.int64)
    number[order] = np.cumsum(starts) - 1
    return number, order[starts]


def compensated_sums(number: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """Each group's sum of ``values`` (``number``: each row's group) as pandas' ``groupby().sum()``
    computes it, to the bit: Kahan-compensated, in row order. Vectorized across groups, one step per
    row of the largest group."""
    order = np.argsort(number, kind="stable")
    group = number[order]
    step = position_in_runs(group)
    values = values[order].astype(np.float64)
    total = np.zeros(groups, np.float64)
    compensation = np.zeros(groups, np.float64)
    for j in range(int(step.max()) + 1 if len(step) else 0):
        at = step == j
        g = group[at]
        y = values[at] - compensation[g]
        t = total[g] + y
        compensation[g] = (t - total[g]) - y
        total[g] = t
    return total


def pairs_in(first: np.ndarray, second: np.ndarray, among_first: np.ndarray, among_second: np.ndarray) -> np.ndarray:
    """Whether each pair (``first[i]``, ``second[i]``) is one of the pairs (``among_first[j]``,
    ``among_second[j]``) (a MultiIndex ``isin`` without building one)."""
    _, codes_first = np.unique(np.concatenate([first, among_first]), return_inverse=True)
    distinct_second, codes_second = np.unique(np.concatenate([second, among_second]), return_inverse=True)
    combined = codes_first.astype(np.int64) * len(distinct_second) + codes_second
    return np.isin(combined[: len(first)], combined[len(first):])
