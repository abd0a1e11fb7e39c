"""The array helpers of the online paths against the pandas operations they stand for, on random
data with ties, repeats, empty inputs and groups of many rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hm_assets.platform.arrays import compensated_sums, group_rows, matching_rows, pairs_in, position_in_runs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_sums_equal_pandas_groupby_sum_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    n = 2_000
    customer = rng.choice(np.array([7, 3, 2**40 + 1], np.int64), n)
    article = rng.integers(0, 40, n).astype(np.int32)
    # magnitudes far apart: a plain sum differs from the compensated one in the last bits
    value = rng.choice([1e-9, 0.1, 3.0, 1e7], n) * rng.random(n)
    number, first = group_rows(customer, article)
    frame = pd.DataFrame({"customer_key": customer, "article_id": article, "score": value})
    theirs = frame.groupby(["customer_key", "article_id"], as_index=False)["score"].sum()
    mine = pd.DataFrame({"customer_key": customer[first], "article_id": article[first],
                         "score": compensated_sums(number, value, len(first))})
    pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    # np.bincount over the same groups is the row-order double sum a SQL engine's one thread makes
    plain = np.zeros(len(first))
    for g, v in zip(number, value):
        plain[g] += v
    assert np.array_equal(np.bincount(number, weights=value, minlength=len(first)), plain)


def test_group_rows_of_nothing():
    number, first = group_rows(np.zeros(0, np.int64), np.zeros(0, np.int32))
    assert len(number) == len(first) == 0
    assert len(compensated_sums(number, np.zeros(0), 0)) == 0


def test_pairs_in_equals_a_multiindex_isin():
    rng = np.random.default_rng(5)
    first, second = rng.integers(0, 4, 300) * 10**12, rng.integers(0, 30, 300)
    among_first, among_second = rng.integers(0, 4, 50) * 10**12, rng.integers(0, 30, 50)
    expected = pd.MultiIndex.from_arrays([first, second]).isin(pd.MultiIndex.from_arrays([among_first, among_second]))
    assert 0 < expected.sum() < len(expected)
    assert np.array_equal(pairs_in(first, second, among_first, among_second), expected)
    assert not pairs_in(first, second, among_first[:0], among_second[:0]).any()


def test_matching_rows_is_an_inner_merge_and_position_in_runs_a_cumcount():
    rng = np.random.default_rng(9)
    left = pd.DataFrame({"key": rng.integers(0, 15, 40), "l": np.arange(40)})
    right = pd.DataFrame({"key": np.sort(rng.integers(0, 15, 60)), "r": np.arange(60)})
    merged = left.merge(right, on="key")
    wanted, row = matching_rows(right["key"].to_numpy(), left["key"].to_numpy())
    assert left["l"].to_numpy()[wanted].tolist() == merged["l"].tolist()
    assert right["r"].to_numpy()[row].tolist() == merged["r"].tolist()
    keys = np.sort(rng.integers(0, 6, 50))
    assert position_in_runs(keys).tolist() == pd.Series(keys).groupby(keys).cumcount().tolist()
