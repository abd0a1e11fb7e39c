"""taste_similar on a hand-made week whose articles sit in two known styles."""

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hm_assets.pipeline.features.taste import taste_table
from hm_assets.pipeline.retrieval.base import finalize_candidates, retriever_inputs
from hm_assets.pipeline.retrieval.taste_similar import RETRIEVER, TasteSimilarConfig, fit_pool, taste_similar_candidates
from hm_assets_tests.builders import articles_frame, customers_frame, retrieval_context, transactions_frame, week_connection

CUTOFF = date(2020, 9, 23)
# style A along the first axis, style B along the second; article 9 has no vector (never in the ALS window)
VECTORS = {1: (1.0, 0.1, 0), 2: (1.0, -0.1, 0), 3: (1.0, 0.05, 0), 4: (1.0, 0.0, 0.1),
           5: (0.1, 1.0, 0), 6: (0.0, 1.0, 0.05), 7: (-0.05, 1.0, 0), 8: (0.0, 1.0, -0.1)}


def _week(tmp_path: Path):
    articles = articles_frame([{"article_id": a} for a in range(1, 10)])
    customers = customers_frame([7, 8, 9, 10])
    rows = [
        ("2020-08-20", 7, 1, 0.02, 2), ("2020-08-25", 7, 2, 0.02, 2),  # customer 7: style A, over a week ago
        ("2020-08-28", 8, 5, 0.02, 2),  # customer 8: style B
        ("2020-03-01", 9, 1, 0.02, 2),  # customer 9: only before the taste's 16 weeks
        ("2020-08-30", 10, 9, 0.02, 2),  # customer 10: only an article without a vector
    ]
    # the last 14 days' sales: 4 and 6 sell most, 3 and 7 once; 8 sold 20 days ago (not in the pool)
    rows += [("2020-09-20", 100 + i, a, 0.02, 2) for i, a in enumerate([4, 4, 4, 6, 6, 6, 3, 7])]
    rows += [("2020-09-03", 120, 8, 0.02, 2), ("2020-09-03", 121, 8, 0.02, 2)]
    con = week_connection(transactions_frame(rows), articles, customers, CUTOFF)
    ids = np.array(sorted(VECTORS), dtype=np.int32)
    vectors = np.array([VECTORS[a] for a in ids], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "article_taste.parquet"
    pq.write_table(taste_table(ids, vectors.astype(np.float32), np.zeros(len(ids)), seed=0), path)
    ctx = replace(retrieval_context(con, CUTOFF, customers), inputs={"article_taste": path})
    return con, ctx


def test_the_pool_is_the_last_days_best_sellers_with_a_vector(tmp_path):
    _, ctx = _week(tmp_path)
    pool = fit_pool(ctx, TasteSimilarConfig())
    assert sorted(pool.ids[pool.pool].tolist()) == [3, 4, 6, 7]
    assert fit_pool(ctx, TasteSimilarConfig(pool_size=2)).ids[fit_pool(ctx, TasteSimilarConfig(pool_size=2)).pool].tolist() == [4, 6]


def test_each_customer_gets_the_pool_in_the_order_of_their_style(tmp_path):
    _, ctx = _week(tmp_path)
    config = TasteSimilarConfig()
    out = finalize_candidates(RETRIEVER.generate(ctx, config), config.max_candidates)
    lists = {key: group.sort_values("rank")["article_id"].tolist() for key, group in out.groupby("customer_key")}
    # style A first for 7, style B first for 8; within a style the better seller first (the cosines are close)
    assert lists[7][:2] == [4, 3] and set(lists[7][2:]) == {6, 7}
    assert lists[8][:2] == [6, 7] and set(lists[8][2:]) == {3, 4}
    # nothing for a customer without purchases in the window or without a known vector (the sellers have lists too)
    assert 9 not in lists and 10 not in lists
    # articles already bought are not excluded (that is repurchase's and the rules' business), articles outside the pool never proposed
    assert not set(out["article_id"]) & {1, 2, 5, 8, 9}
    # the popularity weight decides between styles when it dominates the cosine
    heavy = finalize_candidates(RETRIEVER.generate(ctx, TasteSimilarConfig(popularity_weight=10.0)), 4)
    assert heavy[heavy.customer_key == 7].sort_values("rank")["article_id"].tolist()[:2] in ([4, 6], [6, 4])


def test_a_pool_smaller_than_the_lists_gives_every_article_once(tmp_path):
    _, ctx = _week(tmp_path)
    out = finalize_candidates(RETRIEVER.generate(ctx, TasteSimilarConfig(max_candidates=40)), 40)
    assert (out.groupby("customer_key")["rank"].agg(list) == pd.Series([[1, 2, 3, 4]] * out["customer_key"].nunique(),
            index=out.groupby("customer_key")["rank"].agg(list).index)).all()
    assert not out.duplicated(["customer_key", "article_id"]).any()


def test_online_taste_similar_equals_its_batch(tmp_path):
    """Online (the call's purchases read once, in memory) the retriever gives the batch's rows."""
    con, ctx = _week(tmp_path)
    config = TasteSimilarConfig(max_candidates=3)
    pool = fit_pool(ctx, config)
    batch = finalize_candidates(taste_similar_candidates(ctx, config, pool), config.max_candidates)
    online = finalize_candidates(taste_similar_candidates(replace(ctx, shared={}), config, pool), config.max_candidates)
    assert len(batch) == 3 * batch["customer_key"].nunique() and {7, 8} <= set(batch["customer_key"])
    pd.testing.assert_frame_equal(online, batch, check_exact=True)


def test_the_ranked_lists_are_the_frameworks_ranking_of_the_same_scores(tmp_path):
    """The retriever hands its lists over ranked; ranking its rows in SQL (score descending, then article)
    gives the same lists, ties among equal sellers of one style included."""
    _, ctx = _week(tmp_path)
    config = TasteSimilarConfig(max_candidates=3)
    handed = finalize_candidates(RETRIEVER.generate(ctx, config), config.max_candidates)
    rows = handed[["customer_key", "article_id", "score"]].astype({"score": "float64"})
    assert handed["rank"].tolist() == np.tile([1, 2, 3], len(handed) // 3).tolist()
    pd.testing.assert_frame_equal(finalize_candidates(rows.sample(frac=1, random_state=0), config.max_candidates), handed)


def test_a_weekly_input_needs_its_week(tmp_path):
    from hm_assets.platform.store import HMStore

    with pytest.raises(ValueError, match="article_taste"):
        retriever_inputs(HMStore(home=str(tmp_path)), [RETRIEVER])
