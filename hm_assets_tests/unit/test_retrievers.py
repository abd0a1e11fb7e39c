"""Each retriever on a hand-made tiny history with a known answer."""

from datetime import date

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.retrieval import also_bought, popularity_model, purchase_history_similar, repurchase
from hm_assets.pipeline.retrieval.also_bought import AlsoBoughtConfig
from hm_assets.pipeline.retrieval.base import RankedLists, finalize_candidates, ranked_candidates, ranking_sql
from hm_assets.pipeline.retrieval.popularity_model import PopularityModelConfig
from hm_assets.pipeline.retrieval.purchase_history_similar import PurchaseHistoryConfig
from hm_assets.pipeline.retrieval.repurchase import RepurchaseConfig
from hm_assets_tests.builders import (
    articles_frame,
    customers_frame,
    retrieval_context,
    transactions_frame,
    week_connection,
)

CUTOFF = date(2020, 9, 23)


def test_repurchase_returns_own_articles_in_recency_order():
    articles = articles_frame([{"article_id": a} for a in (1, 2, 3, 4)])
    customers = customers_frame([7, 8])
    txns = transactions_frame(
        [
            ("2020-09-01", 7, 1, 0.02, 2),
            ("2020-09-10", 7, 2, 0.02, 2),
            ("2020-09-20", 7, 3, 0.02, 2),
            ("2020-09-21", 8, 4, 0.02, 2),
            ("2020-09-23", 7, 4, 0.02, 2),  # on the cut-off: must not be used
        ]
    )
    con = week_connection(txns, articles, customers, CUTOFF)
    out = finalize_candidates(repurchase.RETRIEVER.generate(retrieval_context(con, CUTOFF, customers), RepurchaseConfig()), 30)
    assert out[out.customer_key == 7].sort_values("rank").article_id.tolist() == [3, 2, 1]
    assert out[out.customer_key == 8].article_id.tolist() == [4]
    assert list(out.columns) == ["customer_key", "article_id", "score", "rank"]


def test_repurchase_frequency_beats_single_purchase_of_same_age():
    articles = articles_frame([{"article_id": a} for a in (1, 2)])
    customers = customers_frame([7])
    txns = transactions_frame([("2020-09-20", 7, 1, 0.02, 2), ("2020-09-20", 7, 2, 0.02, 2), ("2020-09-20", 7, 2, 0.02, 2)])
    con = week_connection(txns, articles, customers, CUTOFF)
    out = finalize_candidates(repurchase.RETRIEVER.generate(retrieval_context(con, CUTOFF, customers), RepurchaseConfig()), 30)
    assert out.sort_values("rank").article_id.tolist() == [2, 1]


def test_also_bought_finds_the_planted_pair():
    articles = articles_frame([{"article_id": a} for a in range(1, 21)])
    customers = customers_frame(list(range(100, 140)))
    rows = []
    for c in range(100, 130):  # 30 customers buy 1 and 2 together
        rows += [("2020-09-10", c, 1, 0.02, 2), ("2020-09-10", c, 2, 0.02, 2)]
    for i, c in enumerate(range(100, 130)):  # noise: scattered single purchases on other days
        rows.append(("2020-09-12", c, 3 + i % 15, 0.02, 2))
    rows.append(("2020-09-20", 135, 1, 0.02, 2))  # customer 135 bought only article 1
    con = week_connection(transactions_frame(rows), articles, customers, CUTOFF)
    out = finalize_candidates(also_bought.RETRIEVER.generate(retrieval_context(con, CUTOFF, customers), AlsoBoughtConfig()), 40)
    mine = out[out.customer_key == 135].sort_values("rank")
    assert mine.article_id.iloc[0] == 2


def test_purchase_history_similar_finds_articles_bought_by_the_same_people():
    rng = np.random.default_rng(0)
    articles = articles_frame([{"article_id": a} for a in range(1, 41)])
    customers = customers_frame(list(range(1000, 1300)))
    rows = []
    # two taste groups: customers 1000-1149 buy from articles 1-20, the others from 21-40
    for c in range(1000, 1300):
        pool = range(1, 21) if c < 1150 else range(21, 41)
        for a in rng.choice(list(pool), size=6, replace=False):
            rows.append((f"2020-09-{rng.integers(1, 22):02d}", c, int(a), 0.02, 2))
    rows.append(("2020-09-22", 1299, 5, 0.02, 2))  # a group-B customer's newest purchase is from group A
    con = week_connection(transactions_frame(rows), articles, customers, CUTOFF)
    config = PurchaseHistoryConfig(factors=8, iterations=10, neighbours=10, seed_articles=1)
    out = finalize_candidates(purchase_history_similar.RETRIEVER.generate(retrieval_context(con, CUTOFF, customers), config), 40)
    group_a_customer = out[out.customer_key == 1000]
    assert (group_a_customer.article_id <= 20).mean() > 0.8
    nearest_to_newest = out[(out.customer_key == 1299) & (out["rank"] <= 5)]
    assert (nearest_to_newest.article_id <= 20).mean() >= 0.8  # neighbours of article 5, not of the customer's old taste


def test_popularity_model_adapts_to_age_and_covers_cold_start():
    rng = np.random.default_rng(1)
    articles = articles_frame([{"article_id": a} for a in range(1, 31)])
    keys = list(range(1, 801))
    ages = [20.0 if k % 2 else 60.0 for k in keys]
    customers = customers_frame(keys, ages)
    rows = []
    for k, age in zip(keys[:700], ages[:700]):  # last week's buyers: young buy 1-15, old buy 16-30
        pool = range(1, 16) if age < 40 else range(16, 31)
        for a in rng.choice(list(pool), size=3, replace=False):
            rows.append(("2020-09-18", k, int(a), 0.02, 2))
    con = week_connection(transactions_frame(rows), articles, customers, CUTOFF)
    config = PopularityModelConfig(max_candidates=10, negatives_per_buyer=10, boost_rounds=40)
    out = finalize_candidates(popularity_model.RETRIEVER.generate(retrieval_context(con, CUTOFF, customers), config), 10)
    cold_young, cold_old = 701, 702  # no history at all
    assert set(out.customer_key) == set(keys)
    young = out[out.customer_key == cold_young].article_id
    old = out[out.customer_key == cold_old].article_id
    assert (young <= 15).mean() >= 0.9 and (old > 15).mean() >= 0.9


def test_popularity_lists_handed_over_ranked_equal_the_frameworks_ranking_of_the_same_rows():
    """The popularity model hands its profiles' lists to their customers already ranked, in customer
    order (``RankedLists``): the same rows, ranks and order as ranking every customer's rows in SQL
    (score descending, ties by article id, at most ``max_candidates``)."""
    rng = np.random.default_rng(3)
    lists = pd.DataFrame({
        "profile_id": np.repeat([0, 1, 2, -1], [6, 4, 5, 3]),
        "article_id": rng.permutation(np.arange(100, 118)).astype(np.int32),
        "score": rng.choice([0.25, 0.5, 0.75, 0.125], size=18),  # ties, broken by article id
    }).sample(frac=1, random_state=0)
    customers = np.array([907, 3, 55, 12, 8, 1_000_000_000_123], dtype=np.int64)
    profile_ids = np.array([1, 0, -1, 2, 5, 0])  # profile 5 has no list
    ranked = popularity_model.customers_lists(customers, profile_ids, lists, max_candidates=4, chunk=2)
    handed = finalize_candidates(RankedLists(list(ranked)), 4)
    raw = pd.DataFrame({"customer_key": customers, "profile_id": profile_ids}).merge(lists, on="profile_id")
    expected = finalize_candidates(raw[["customer_key", "article_id", "score"]], 4)
    assert len(expected) == 5 * 4 - 1  # profile -1 has 3 articles
    pd.testing.assert_frame_equal(handed, expected, check_exact=True)


def test_ranking_of_unique_pairs_skips_the_dedupe_and_equals_the_deduped_ranking():
    rng = np.random.default_rng(3)
    pairs = pd.DataFrame({"customer_key": np.repeat(np.array([2**62 + 9, 4, 17]), 40), "article_id": np.tile(np.arange(40, dtype=np.int32), 3)})
    pairs["score"] = rng.integers(0, 6, len(pairs)) / 4.0  # ties, broken by article id
    raw = pairs.sample(frac=1.0, random_state=1).reset_index(drop=True)
    con = duckdb.connect()
    deduped = ranked_candidates(con, raw, 25).df()
    unique = ranked_candidates(con, raw, 25, unique=True).df()
    pd.testing.assert_frame_equal(unique, deduped, check_exact=True)
    assert "GROUP BY" not in ranking_sql("raw", 25, unique=True) and "GROUP BY" in ranking_sql("raw", 25)
    # the declaration is the retriever's promise: repeated pairs would each get a rank
    repeated = pd.concat([raw, raw.assign(score=raw["score"] - 1.0)], ignore_index=True)
    assert ranked_candidates(con, repeated, 25).df().equals(deduped)
    assert ranked_candidates(con, repeated, 100, unique=True).df().duplicated(["customer_key", "article_id"]).any()


def test_finalize_ranks_dedupes_and_caps():
    raw = pd.DataFrame({"customer_key": [1, 1, 1, 2], "article_id": [5, 5, 6, 7], "score": [0.1, 0.9, 0.5, 1.0]})
    out = finalize_candidates(raw, 1)
    assert out.to_dict("records") == [
        {"customer_key": 1, "article_id": 5, "score": np.float32(0.9), "rank": 1},
        {"customer_key": 2, "article_id": 7, "score": np.float32(1.0), "rank": 1},
    ]


def test_seeds_shared_by_the_online_retrievers_equal_each_retrievers_own_query():
    """Online, one read of the customer's purchases serves every retriever's seeds (lookback and
    count of its own); each equals that retriever's own query, ties on a day included."""
    from dataclasses import replace

    from hm_assets.pipeline.retrieval.base import recent_purchase_seeds

    rng = np.random.default_rng(0)
    articles = articles_frame([{"article_id": a} for a in range(1, 30)])
    customers = customers_frame([7, 8, 9])
    days = pd.date_range("2020-06-01", "2020-09-22").strftime("%Y-%m-%d")
    txns = transactions_frame(
        [(str(rng.choice(days)), int(rng.choice([7, 8])), int(rng.integers(1, 30)), 0.02, 2) for _ in range(300)]
        + [("2020-09-20", 7, a, 0.02, 2) for a in (3, 1, 2)]  # a day's purchases tie on the date
    )
    con = week_connection(txns, articles, customers, CUTOFF)
    ctx = retrieval_context(con, CUTOFF, customers)
    shared = replace(ctx, shared={})
    for weeks, count in ((8, 10), (6, 6), (4, 5), (1, 2), (20, 100), (2, 1)):
        own = recent_purchase_seeds(ctx, weeks, count)
        assert len(own) > 0
        pd.testing.assert_frame_equal(recent_purchase_seeds(shared, weeks, count), own, check_exact=True)
    # one read of the purchases, and the last purchase of each article derived from it
    assert len(shared.shared) == 2


def test_online_personal_retrievers_equal_their_sql():
    """repurchase and taste_popular online (purchases read once, departments from the articles in
    memory) give their SQL's candidates for several customers: same rows, same scores, ties included."""
    from dataclasses import replace

    from hm_assets.pipeline.retrieval import taste_popular

    rng = np.random.default_rng(3)
    articles = articles_frame([{"article_id": a, "department_no": 100 + a % 5} for a in range(1, 40)])
    customers = customers_frame([7, 8, 9, 10])
    days = pd.date_range("2020-05-01", "2020-09-22").strftime("%Y-%m-%d")
    txns = transactions_frame(
        [(str(rng.choice(days)), int(rng.choice([7, 8, 9])), int(rng.integers(1, 40)), 0.02, 2) for _ in range(400)]
        + [("2020-09-20", 7, a, 0.02, 2) for a in (3, 3, 1, 2)]  # repeats and ties on a day
    )
    con = week_connection(txns, articles, customers, CUTOFF)
    con.execute("SET threads = 1")  # the SQL's sums in row order, as the online path sums
    ctx = retrieval_context(con, CUTOFF, customers)
    online = replace(ctx, shared={}, articles=articles.set_index("article_id", drop=False))
    config = taste_popular.TastePopularConfig()
    bestsellers = taste_popular.department_bestsellers(ctx, config)
    cases = [
        (repurchase.repurchase_candidates, RepurchaseConfig(), None),
        (repurchase.repurchase_candidates, RepurchaseConfig(lookback_weeks=3, half_life_days=5.0), None),
        (taste_popular.taste_popular_candidates, config, bestsellers),
        (taste_popular.taste_popular_candidates, taste_popular.TastePopularConfig(departments=2, lookback_weeks=4), bestsellers),
    ]
    for retrieve, settings, state in cases:
        keys = ["customer_key", "article_id"]
        theirs = retrieve(ctx, settings, state).sort_values(keys).reset_index(drop=True)
        mine = retrieve(online, settings, state).sort_values(keys).reset_index(drop=True)
        assert len(theirs) > 0
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True, obj=f"{retrieve.__name__} {settings}")


def test_popularity_model_online_finds_profiles_with_missing_values():
    """Online, a customer is matched to the fitted profile with the same attributes, a missing age
    (NaN) included, and gets that profile's list, as the batch's merge gives it."""
    from dataclasses import replace

    articles = articles_frame([{"article_id": a} for a in range(1, 25)])
    keys = list(range(1, 41))
    customers = customers_frame(keys, ages=[float("nan") if k % 4 == 0 else 20.0 + k % 3 for k in keys])
    rng = np.random.default_rng(2)
    txns = transactions_frame(
        [("2020-09-1" + str(d), int(k), int(rng.integers(1, 25)), 0.02, 2) for k in keys for d in (6, 7, 8, 9)]
    )
    con = week_connection(txns, articles, customers, CUTOFF)
    ctx = retrieval_context(con, CUTOFF, customers)
    config = PopularityModelConfig(pool_size=20, boost_rounds=5, max_candidates=10)
    state = popularity_model.fit_popularity(ctx, config)
    assert state.model is not None and state.profiles["age_band"].isna().any()
    # every customer's profile is found among the fitted ones (the lookup, not the scoring of new profiles)
    online_ctx = replace(ctx, shared={})
    profiles = popularity_model.customer_profiles(online_ctx)
    assert all(key in state.profile_ids for key in popularity_model._profile_keys(profiles))
    batch = finalize_candidates(popularity_model.popularity_model_candidates(ctx, config, state), config.max_candidates)
    online = finalize_candidates(popularity_model.popularity_model_candidates(online_ctx, config, state), config.max_candidates)
    assert set(online["customer_key"]) == set(keys)
    pd.testing.assert_frame_equal(online, batch, check_exact=True)


def test_department_bestsellers_do_not_depend_on_the_purchases_order():
    """The departments' hot lists are the retriever's fitted state: the same whatever order the
    purchases come in and however many threads add them up. Many articles have equal decayed sales
    (the same purchase days in another order); the cut keeps the lower article ids among them."""
    from hm_assets.pipeline.retrieval import taste_popular

    articles = articles_frame([{"article_id": a, "department_no": 100 + a % 2} for a in range(1, 61)])
    customers = customers_frame([7, 8, 9])
    rng = np.random.default_rng(5)
    # every article sold on days 1, 2, 4 and 9 before the cut-off (and some more on other days)
    rows = [(f"2020-09-{23 - d:02d}", int(rng.choice([7, 8, 9])), a, 0.02, 2) for a in range(1, 61) for d in (1, 2, 4, 9)]
    rows += [(f"2020-09-{23 - int(d):02d}", 7, a, 0.02, 2) for a in (5, 6, 7) for d in rng.integers(1, 14, 3)]
    config = taste_popular.TastePopularConfig(per_department=10)
    results = []
    for seed, threads in ((0, 1), (1, 2), (2, 2)):
        shuffled = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
        con = week_connection(transactions_frame(shuffled), articles, customers, CUTOFF)
        con.execute(f"SET threads = {threads}")
        results.append(taste_popular.department_bestsellers(retrieval_context(con, CUTOFF, customers), config))
    first = results[0]
    assert all(first.equals(other) for other in results[1:])
    assert len(first) == 20 and first["share"].groupby(first["department_no"]).sum().round(12).eq(1.0).all()
    # the articles with extra sales lead; the ties are filled by article id
    even = first[first["department_no"] == 100]["article_id"].tolist()
    assert even == sorted([6] + [a for a in range(2, 61, 2) if a != 6][:9])
    odd = first[first["department_no"] == 101]["article_id"].tolist()
    assert odd == sorted([5, 7] + [a for a in range(1, 61, 2) if a not in (5, 7)][:8])
