"""The ranker's training sample and its compiled scoring."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from hm_assets.pipeline.ranking import ranker


def trained_booster(seed: int = 0):
    rng = np.random.default_rng(seed)
    customers, per_customer = 200, 20
    pairs = pd.DataFrame(
        {
            "customer_key": np.repeat(np.arange(customers, dtype=np.int64), per_customer),
            "article_id": np.tile(np.arange(per_customer, dtype=np.int32), customers),
            "score_a": rng.normal(size=customers * per_customer).astype(np.float32),
            "rank_a": pd.array(rng.integers(1, 50, customers * per_customer), dtype="Int16"),
            "pref": rng.random(customers * per_customer),
        }
    )
    pairs.loc[rng.random(len(pairs)) < 0.2, "rank_a"] = pd.NA  # retriever did not propose it
    bought = pairs[(pairs["score_a"] > 1.0) | (pairs["pref"] > 0.95)][["customer_key", "article_id"]]
    rows = ranker.training_rows(pairs, bought, 10, seed)
    settings = ranker.RankerSettings(boost_rounds=30, num_leaves=7, min_data_in_leaf=5)
    return ranker.train(ranker.stack_weeks([rows]), settings), pairs


def test_compiled_scores_equal_lightgbm_and_are_cached(tmp_path):
    booster, pairs = trained_booster()
    scorer = ranker.PairScorer(booster, tmp_path)
    assert scorer.compiled is not None, "lleaves is a pinned dependency: compilation must work"
    np.testing.assert_allclose(scorer(pairs), ranker.predict(booster, pairs), rtol=0, atol=1e-9)
    compiled = sorted(tmp_path.glob("ranker-*.o"))
    assert len(compiled) == 1
    stamp = compiled[0].stat().st_mtime_ns
    again = ranker.PairScorer(booster, tmp_path)  # loads the cached object, compiles nothing
    assert sorted(tmp_path.glob("ranker-*.o")) == compiled and compiled[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again(pairs), scorer(pairs))
    other, _ = trained_booster(seed=1)
    ranker.PairScorer(other, tmp_path)
    assert len(list(tmp_path.glob("ranker-*.o"))) == 2  # one object per model


def test_a_prescreen_scores_each_customers_best_by_the_first_trees_with_the_whole_model(tmp_path):
    booster, pairs = trained_booster()
    pairs = pairs[pairs["customer_key"] != 7].copy()
    short = pd.DataFrame({"customer_key": [7] * 5, "article_id": np.arange(5, dtype=np.int32), "score_a": np.float32(0.1),
                          "rank_a": pd.array([1, 2, 3, 4, 5], dtype="Int16"), "pref": 0.5})
    pairs = pd.concat([pairs, short], ignore_index=True)  # a customer with fewer candidates than kept
    whole = ranker.PairScorer(booster, tmp_path)
    screened = ranker.PairScorer(booster, tmp_path, prescreen=ranker.Prescreen(rounds=5, keep=12))
    assert len(list(tmp_path.glob("ranker-*.o"))) == 2  # the whole model and its first 5 trees
    scores = screened(pairs)
    kept = ~np.isnan(scores)
    per_customer = pd.Series(kept).groupby(pairs["customer_key"].to_numpy()).sum()
    assert (per_customer.drop(7) == 12).all() and per_customer[7] == 5
    np.testing.assert_array_equal(scores[kept], whole(pairs)[kept])  # the whole model's scores, to the bit
    first = booster.predict(pairs[booster.feature_name()], num_iteration=5)
    threshold = pd.Series(np.where(kept, first, np.inf)).groupby(pairs["customer_key"].to_numpy()).transform("min")
    assert (first[~kept] <= threshold[~kept]).all()  # nothing left out scored higher by the first trees
    shuffled = pairs.sample(frac=1.0, random_state=3)
    again = pd.Series(screened(shuffled), index=shuffled.index).sort_index()
    np.testing.assert_array_equal(again.to_numpy(), scores)  # whatever the rows' order
    longer = screened(pairs, at_least=15)  # a longer list asked for (the service's k): as many scored
    per_customer = pd.Series(~np.isnan(longer)).groupby(pairs["customer_key"].to_numpy()).sum()
    assert (per_customer.drop(7) == 15).all() and per_customer[7] == 5
    np.testing.assert_array_equal(longer[kept], scores[kept])
    assert ranker.PairScorer(booster, tmp_path, prescreen=ranker.Prescreen(rounds=30, keep=12)).prescreen is None
    with pytest.raises(ValueError, match="keep >= 12"):
        ranker.Prescreen(rounds=5, keep=6)


@pytest.mark.parametrize("seed", range(4))
def test_best_per_customer_of_sorted_rows_equals_the_general_path(seed):
    """A shard's rows come sorted by customer and take a path without a sort; shuffled, the same rows
    take the general one: the same mask, with ties at the cut and articles repeated or not."""
    rng = np.random.default_rng(seed)
    for trial in range(100):
        sizes = rng.integers(1, 60, rng.integers(1, 30))
        customer = np.repeat(np.sort(rng.choice(10**6, len(sizes), replace=False)), sizes).astype(np.int64)
        article = np.concatenate([rng.choice(200, size, replace=trial % 3 == 0) for size in sizes]).astype(np.int32)
        score = rng.integers(0, 6, len(customer)) / 6 if trial % 2 else rng.random(len(customer))
        keep = int(rng.integers(12, 40))
        shuffle = rng.permutation(len(customer))
        general = np.empty(len(customer), dtype=bool)
        general[shuffle] = ranker.best_per_customer(customer[shuffle], article[shuffle], score[shuffle], keep)
        np.testing.assert_array_equal(ranker.best_per_customer(customer, article, score, keep), general)
        distinct = pd.DataFrame({"c": customer[general], "a": article[general]}).drop_duplicates().groupby("c").size()
        np.testing.assert_array_equal(distinct.to_numpy(), np.minimum(pd.DataFrame({"c": customer, "a": article}).drop_duplicates().groupby("c").size().to_numpy(), keep))


def stored_candidates(pairs: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``pairs`` as a week's stored candidates: with a best rank, in the candidates' order."""
    pairs = pairs.assign(best_rank=pairs["rank_a"].fillna(99).astype("int16"))
    pairs = pairs.sort_values(["customer_key", "best_rank", "article_id"], kind="mergesort").reset_index(drop=True)
    pairs.to_parquet(path, index=False)
    return pairs


def test_training_keys_drawn_on_the_stored_candidates_equal_the_in_memory_sample(tmp_path):
    _, pairs = trained_booster()
    path = tmp_path / "candidates.parquet"
    pairs = stored_candidates(pairs, path)
    truth = pairs[pairs["score_a"] > 1.2][["customer_key", "article_id"]].iloc[::2]
    in_memory = ranker.training_rows(pd.read_parquet(path), truth, 5, seed=3)
    keys = ranker.training_keys(duckdb.connect(), path, truth, 5, seed=3)
    assert 0 < in_memory["label"].sum() < len(in_memory)
    pd.testing.assert_frame_equal(keys, in_memory[["customer_key", "article_id", "label"]], check_dtype=False)


def test_training_keys_within_a_budget_keep_whole_customers(tmp_path):
    _, pairs = trained_booster()
    path = tmp_path / "candidates.parquet"
    pairs = stored_candidates(pairs, path)
    truth = pairs[pairs["score_a"] > 1.0][["customer_key", "article_id"]]
    whole = ranker.training_keys(duckdb.connect(), path, truth, 5, seed=3)
    budget = len(whole) // 3
    kept = ranker.training_keys(duckdb.connect(), path, truth, 5, seed=3, max_rows=budget)
    assert budget - 20 < len(kept) <= budget  # whole customers, as many as fit
    per_customer = whole.groupby("customer_key").size()
    assert kept.groupby("customer_key").size().equals(per_customer.loc[kept["customer_key"].unique()])
    assert kept["label"].sum() > 0
    unbounded = ranker.training_keys(duckdb.connect(), path, truth, 5, seed=3, max_rows=len(whole))
    pd.testing.assert_frame_equal(unbounded, whole)


def matrix_sql(path: Path, features: list[str]) -> str:
    """customer_key, article_id and ``features`` as DOUBLE, as ``stage.pair_feature_batches`` gives them."""
    columns = ", ".join(f'CAST("{name}" AS DOUBLE) AS "{name}"' for name in features)
    return f"SELECT customer_key, article_id, {columns} FROM read_parquet('{path}')"


def test_lists_from_batches_equal_lists_from_the_whole_frame(tmp_path):
    from hm_assets.pipeline.ranking.stage import recommend_lists, recommend_lists_from_batches

    booster, pairs = trained_booster()
    # an article proposed twice for one customer, and score ties, both across batch borders
    # in customer order, as the pair features are computed; articles shuffled within a customer
    pairs = pd.concat([pairs, pairs.iloc[::7]], ignore_index=True).sample(frac=1.0, random_state=2, ignore_index=True)
    pairs = pairs.sort_values("customer_key", kind="stable", ignore_index=True)
    pairs.loc[pairs.index[::5], "score_a"] = np.float32(0.5)
    path = tmp_path / "pairs.parquet"
    pairs.to_parquet(path, index=False)
    customers = np.arange(205, dtype=np.int64)  # five without candidates: filled from the fallback
    fallback = [900, 901, *range(12)]
    con = duckdb.connect()
    screened = ranker.PairScorer(booster, tmp_path, prescreen=ranker.Prescreen(rounds=5, keep=12))
    for scorer in (ranker.PairScorer(booster, tmp_path), screened, ranker.HEURISTIC):
        frame = con.execute(f"SELECT * FROM read_parquet('{path}')").df()
        if scorer is ranker.HEURISTIC:
            frame["n_retrievers"] = frame["rank_a"].notna().astype("int8") + 1
            frame["best_rank"] = frame["rank_a"].fillna(99).astype("int16")
            frame.to_parquet(path, index=False)
        whole = recommend_lists(frame, scorer, customers, fallback)
        sql = matrix_sql(path, scorer.features)
        batches = list(con.sql(sql).to_arrow_reader(1000))
        assert len(batches) == -(-len(pairs) // 1000) > 1
        batched = recommend_lists_from_batches(iter(batches), scorer, customers, fallback)
        pd.testing.assert_frame_equal(batched, whole)
        assert len(whole) == 12 * len(customers) and whole["score"].isna().sum() == 12 * 5
    empty = recommend_lists_from_batches(iter(()), scorer, customers[:2], fallback)
    assert empty["article_id"].tolist() == fallback[:12] * 2
    pairs.sample(frac=1.0, random_state=4).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="not in customer order"):
        recommend_lists_from_batches(con.sql(matrix_sql(path, screened.features)).to_arrow_reader(1000),
                                     screened, customers, fallback)


def test_stacked_weeks_group_each_weeks_customers_and_number_them_in_order():
    week = lambda customers, articles, value: pd.DataFrame(  # noqa: E731
        {"customer_key": customers, "article_id": articles, "f": value, "label": np.int8(0)}
    )
    first = week([1, 1, 5], [3, 7, 2], 1.0)
    unsorted = week([5, 2, 5, 2], [9, 4, 1, 8], 2.0)  # rows out of order: sorted within the week
    last = week([2], [4], 3.0)  # the previous week's last customer again: a group of its own
    stacked = ranker.stack_weeks([first, unsorted, last])
    assert stacked["customer_key"].tolist() == [1, 1, 5, 2, 2, 5, 5, 2]
    assert stacked["article_id"].tolist() == [3, 7, 2, 4, 8, 1, 9, 4]
    assert stacked["query"].tolist() == [0, 0, 1, 2, 2, 3, 3, 4]
    assert stacked["f"].tolist() == [1.0] * 3 + [2.0] * 4 + [3.0]
    assert ranker.stack_weeks([]).empty
    empty = first.iloc[:0]
    assert ranker.stack_weeks([first, empty])["query"].tolist() == [0, 0, 1]  # a week without rows
    assert ranker.stack_weeks([empty, empty]).empty


def test_the_training_matrix_holds_the_features_as_float32_with_nulls_as_nan():
    rows = pd.DataFrame({
        "customer_key": [1, 2], "article_id": [5, 6], "label": np.int8([1, 0]), "query": [0, 1],
        "a": np.float32([0.5, np.nan]), "b": pd.array([3, None], dtype="Int16"), "c": np.int32([7, -2]),
    })
    matrix = ranker.training_matrix(rows, ranker.feature_columns(rows))
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, np.array([[0.5, 3, 7], [np.nan, np.nan, -2]], dtype=np.float32))
    # an integer float32 cannot hold exactly, or a float64: the matrix is float64, the values exact
    wide = ranker.training_matrix(rows.assign(c=np.int64([2**24 + 1, 0]), d=[0.1, 0.2]), ["a", "c", "d"])
    assert wide.dtype == np.float64 and wide[0, 1] == 2**24 + 1 and wide[1, 2] == 0.2
    with pytest.raises(TypeError, match="feature c is category"):
        ranker.training_matrix(rows.assign(c=pd.Categorical(["x", "y"])), ["a", "c"])


def test_kaggle_submission_lists_each_customers_articles_best_first_as_kaggle_writes_them():
    from hm_assets.pipeline.ingest.data_contract import format_article_id
    from hm_assets.pipeline.ranking.stage import kaggle_submission

    rng = np.random.default_rng(3)
    recs = pd.DataFrame({
        "customer_key": np.repeat(np.array([7, 2, 9], dtype=np.int64), [12, 3, 12]),
        "article_id": rng.integers(1, 10**9, 27).astype(np.int32),
        "rank": np.r_[np.arange(1, 13), [3, 1, 2], np.arange(12, 0, -1)],
    }).sample(frac=1.0, random_state=0)
    recs.loc[recs.index[0], "article_id"] = 108775015  # a real H&M id: nine digits, written with its leading zero
    customers = pd.DataFrame({"customer_key": np.array([9, 4, 2, 7], dtype=np.int64), "customer_id": ["c9", "c4", "c2", "c7"]})
    out = kaggle_submission(recs, customers)
    assert out["customer_id"].tolist() == ["c9", "c4", "c2", "c7"] and out["prediction"].iloc[1] == ""
    for customer_id, prediction in zip(out["customer_id"], out["prediction"]):
        own = recs[recs["customer_key"] == int(customer_id[1:])].sort_values("rank")
        assert prediction == " ".join(format_article_id(a) for a in own["article_id"])
    assert "0108775015" in " ".join(out["prediction"])
    empty = kaggle_submission(recs.iloc[:0], customers)
    assert empty["prediction"].tolist() == [""] * 4
