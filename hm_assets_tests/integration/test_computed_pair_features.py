"""Pair features are computed, not stored: a week's lists are its candidates' pair features scored
whole, and the ranker's training samples hold the features their pairs have in their customers'
whole lists, kept until one of the sample's inputs is written again."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hm_assets.pipeline.evaluation.baselines import last_week_top
from hm_assets.pipeline.ranking.ranker import RankerConfig, stack_weeks, stored_scorer
from hm_assets.pipeline.ranking.samples import training_sample, week_pairs, week_training_rows
from hm_assets.pipeline.ranking.stage import recommend_lists
from hm_assets.platform.history import open_week, stored_history_weeks
from hm_assets.platform.store import HMStore
from hm_assets_tests.baseline import baseline


def test_a_labelled_weeks_sample_holds_its_pairs_features_and_is_kept_until_its_inputs_change():
    base = baseline()
    store = HMStore(home=str(base.copy_home()))
    week, keys = str(base.week - (base.next_week - base.week)), stored_history_weeks(store)

    drawn, kept = week_training_rows(store, week, keys, 5, 3, 0)
    assert not kept and 0 < drawn["label"].sum() < len(drawn)
    assert drawn.groupby("customer_key")["label"].max().eq(1).all()  # buyers with a bought candidate only
    # each chosen pair's features, computed alone, are those it has in its customer's whole list
    whole = week_pairs(store, week, keys, drawn[["customer_key"]].drop_duplicates())
    assert len(whole) > len(drawn)
    expected = drawn[["customer_key", "article_id"]].merge(whole, on=["customer_key", "article_id"])
    pd.testing.assert_frame_equal(drawn.drop(columns="label"), expected[list(drawn.columns.drop("label"))])

    again, kept = week_training_rows(store, week, keys, 5, 3, 0)
    assert kept
    pd.testing.assert_frame_equal(again, drawn)
    other_seed, kept = week_training_rows(store, week, keys, 5, 4, 0)
    assert not kept and not other_seed[["customer_key", "article_id"]].equals(drawn[["customer_key", "article_id"]])

    # an input written again (a re-materialized feature table): drawn anew, the stale sample removed
    features = store.require("customer_transaction_stats", week)
    store.write_parquet(pd.read_parquet(features), features)
    redrawn, kept = week_training_rows(store, week, keys, 5, 3, 0)
    assert not kept
    pd.testing.assert_frame_equal(redrawn, drawn)
    samples = sorted(p.name for p in (store.asset_dir("ranker") / "samples").iterdir())
    assert sum(name.startswith(f"{week}-") and "-seed3-" in name for name in samples) == 1
    # changed pair-feature code (sql/pair_features.sql, the taste views): drawn anew, not read back
    recomputed, kept = week_training_rows(store, week, keys, 5, 3, 0, features_version="changed")
    assert not kept
    pd.testing.assert_frame_equal(recomputed, drawn)
    redrawn, kept = week_training_rows(store, week, keys, 5, 3, 0)
    assert not kept  # the stale sample of the default version was removed by the changed one

    stacked = training_sample(store, [week], keys, RankerConfig(negatives_per_customer=5, seed=3, max_rows_per_week=0))
    assert stacked.reused == [week]
    pd.testing.assert_frame_equal(stacked.rows.drop(columns="query"), stack_weeks([redrawn]).drop(columns="query"))


def test_a_weeks_lists_are_its_candidates_pair_features_scored_whole():
    """The recommendations compute each shard's pair features in memory, in batches: the same lists
    as every customer's pair features computed at once and scored as one frame."""
    base = baseline()
    store = HMStore(home=str(base.home))
    week, keys = str(base.week), stored_history_weeks(store)
    customers = pd.read_parquet(store.require("customers"), columns=["customer_key"])
    pairs = week_pairs(store, week, keys, customers)
    assert pairs["customer_key"].nunique() > len(customers) // 2
    with open_week(store, week, keys) as view:
        fallback = last_week_top(view.con, view.cutoff, 24)
    expected = recommend_lists(pairs, stored_scorer(store, week), np.sort(customers["customer_key"].to_numpy()), fallback)
    pd.testing.assert_frame_equal(pd.read_parquet(store.require("recommendations", week)), expected)
