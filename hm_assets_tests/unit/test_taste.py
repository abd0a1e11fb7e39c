"""Taste vectors: the customer's taste from their purchases, the same for one customer as in the
batch, and the pair features' cosines, hand-computed."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from hm_assets.pipeline.retrieval.purchase_history_similar import PurchaseHistoryConfig
from hm_assets.platform.sql import load_sql
from hm_assets.pipeline.features.taste import (
    CANDIDATE_CUSTOMERS,
    LONG_HALF_LIFE_DAYS,
    RECENT_HALF_LIFE_DAYS,
    ArticleTaste,
    article_taste,
    customer_taste,
    register_taste,
    taste_clusters,
    taste_table,
    vectors_of,
)
from hm_assets_tests.builders import articles_frame, customers_frame, retrieval_context, transactions_frame, week_connection

CUTOFF = date(2020, 9, 23)
# Hand-made unit vectors: articles 1 and 3 are orthogonal, article 2 lies between them.
VECTORS = {1: [1.0, 0.0], 2: [0.6, 0.8], 3: [0.0, 1.0]}


def hand_made_taste() -> pa.Table:
    ids = np.array(list(VECTORS), dtype=np.int32)
    table = taste_table(ids, np.array([VECTORS[a] for a in VECTORS], dtype=np.float32), np.zeros(len(ids)), seed=0)
    assert sorted(np.asarray(table.column("taste_cluster_16")).tolist()) == [0, 1, 2]  # one cluster each
    return table


@pytest.fixture
def con():
    articles = articles_frame([{"article_id": a} for a in (1, 2, 3, 4)])
    customers = customers_frame([7, 8, 9])
    rows = [("2020-09-%02d" % d, 7, 1, 0.02, 2) for d in (1, 2, 3)]  # 22, 21, 20 days before the cut-off
    rows += [("2020-09-20", 7, 3, 0.03, 2)]  # 3 days before
    rows += [("2020-09-15", 8, 4, 0.02, 1)]  # an article without a vector only
    rows += [("2020-01-02", 9, 1, 0.02, 1)]  # outside the 16-week window
    return week_connection(transactions_frame(rows), articles, customers, CUTOFF)


def expected_profile(half_life: float) -> np.ndarray:
    days_and_articles = [(22, 1), (21, 1), (20, 1), (3, 3)]
    total = sum(0.5 ** (d / half_life) * np.asarray(VECTORS[a]) for d, a in days_and_articles)
    return total / np.linalg.norm(total)


def test_a_customers_taste_is_the_recency_weighted_mean_of_what_they_bought(con):
    ids, vectors = vectors_of(hand_made_taste())
    taste = customer_taste(con, CUTOFF, ids, vectors, "SELECT * FROM (VALUES (7), (8), (9)) v(customer_key)").to_pandas()
    # 8 bought only an article without a vector, 9 only before the window: neither has a taste
    assert taste["customer_key"].tolist() == [7]
    row = taste.iloc[0]
    assert np.asarray(row["taste_long"]) == pytest.approx(expected_profile(LONG_HALF_LIFE_DAYS), abs=1e-6)
    assert np.asarray(row["taste_recent"]) == pytest.approx(expected_profile(RECENT_HALF_LIFE_DAYS), abs=1e-6)
    # the recent taste leans towards the newest purchase (article 3), the long-term one towards article 1
    assert row["taste_recent"][1] > row["taste_long"][1]


def test_one_customers_taste_equals_their_taste_in_the_batch(con):
    ids, vectors = vectors_of(hand_made_taste())
    batch = customer_taste(con, CUTOFF, ids, vectors, "SELECT customer_key FROM customers").to_pandas()
    alone = customer_taste(con, CUTOFF, ids, vectors, "SELECT 7 AS customer_key").to_pandas()
    assert len(alone) == 1
    assert np.asarray(alone.iloc[0]["taste_long"]) == pytest.approx(np.asarray(batch.iloc[0]["taste_long"]), abs=0)


def test_pair_features_hold_the_cosine_with_the_customers_taste(con):
    con.register(
        "candidates_df",
        pd.DataFrame({"customer_key": [7, 7, 8], "article_id": [2, 4, 2], "score_r": [1.0, 0.5, 1.0], "rank_r": [1, 2, 1],
                      "n_retrievers": [1, 1, 1], "best_rank": [1, 2, 1]}).astype({"customer_key": "int64", "article_id": "int32"}),
    )
    con.execute("CREATE TABLE candidates AS SELECT * FROM candidates_df")
    register_taste(con, CUTOFF, ArticleTaste.of(hand_made_taste()), CANDIDATE_CUSTOMERS)
    pairs = con.sql(load_sql("pair_features"), params={"cutoff": CUTOFF}).df().set_index(["customer_key", "article_id"])
    assert pairs.loc[(7, 2), "taste_long"] == pytest.approx(float(expected_profile(LONG_HALF_LIFE_DAYS) @ VECTORS[2]), abs=1e-6)
    assert pairs.loc[(7, 2), "taste_recent"] == pytest.approx(float(expected_profile(RECENT_HALF_LIFE_DAYS) @ VECTORS[2]), abs=1e-6)
    assert pd.isna(pairs.loc[(7, 4), "taste_long"])  # an article without a vector
    # three vectors, three taste clusters: customer 7 bought article 1 three times and article 3 once
    assert pairs.loc[(7, 2), "pref_taste_cluster_16"] == 0.0 and pd.isna(pairs.loc[(7, 4), "pref_taste_cluster_16"])
    assert pd.isna(pairs.loc[(8, 2), "taste_long"])  # a customer without a taste


def test_article_taste_is_unit_length_and_reproducible():
    # two groups of customers with disjoint baskets: the factorisation separates them
    rows = [(f"2020-09-{d:02d}", c, a, 0.02, 1) for d in (1, 8, 15) for c in range(1, 21) for a in ((1, 2, 3) if c <= 10 else (4, 5, 6))]
    articles = articles_frame([{"article_id": a} for a in range(1, 7)])
    customers = customers_frame(list(range(1, 21)))
    con = week_connection(transactions_frame(rows), articles, customers, CUTOFF)
    ctx = retrieval_context(con, CUTOFF, customers)
    config = PurchaseHistoryConfig(factors=4, iterations=8)
    first, second = article_taste(ctx, config), article_taste(ctx, config)
    assert first.equals(second)
    ids, vectors = vectors_of(first)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(6), abs=1e-5)
    within = vectors[0] @ vectors[1]
    across = vectors[0] @ vectors[4]
    assert within > across


def test_taste_clusters_find_the_groups_and_each_article_s_share_of_its_cluster():
    rng = np.random.default_rng(3)
    # three tight groups of unit vectors around orthogonal directions
    centres = np.eye(3)
    vectors = np.concatenate([centres[g] + rng.normal(0, 0.05, (20, 3)) for g in range(3)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = taste_clusters(vectors.astype(np.float32), 3, seed=0)
    assert labels.tolist() == taste_clusters(vectors.astype(np.float32), 3, seed=0).tolist()
    for g in range(3):  # each group is one cluster, and the clusters differ
        assert len(set(labels[g * 20:(g + 1) * 20].tolist())) == 1
    assert len(set(labels.tolist())) == 3
    # last week's sales: two articles of group 0; every other article sold nothing
    sales = np.zeros(60)
    sales[0], sales[1] = 1.0, 3.0
    table = taste_table(np.arange(60, dtype=np.int32), vectors.astype(np.float32), sales, seed=0)
    for k in (16, 64):
        cluster = np.asarray(table.column(f"taste_cluster_{k}"))
        share = table.column(f"taste_cluster_{k}_share_1w").to_pylist()
        assert cluster.max() < k and len(set(cluster[:20].tolist()) & set(cluster[20:].tolist())) == 0
        for article in range(60):
            sold = sales[cluster == cluster[article]].sum()
            if sold == 0:  # its cluster sold nothing: no share
                assert share[article] is None
            else:
                assert share[article] == pytest.approx(sales[article] / sold)
    # the share is a share: over a cluster that sold, it sums to 1
    shares16 = pd.Series(table.column("taste_cluster_16_share_1w").to_pylist(), dtype=float)
    assert shares16.groupby(np.asarray(table.column("taste_cluster_16"))).sum().max() == pytest.approx(1.0)
