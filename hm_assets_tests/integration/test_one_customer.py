"""The online ranking stage over arrays (``hm_assets.pipeline.ranking.one_customer``) against the
batch's SQL on the tiny run's week: for customers with history, without, a new one, and after
purchases, the customer's feature rows, the candidates and the pair features are the same to the
bit — names, order, types and values of every column."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from hm_assets.pipeline.ranking.candidates import DEFAULT_CAP
from hm_assets.pipeline.ranking.filters import RULES
from hm_assets.pipeline.ranking.stage import pair_features_frame, select_candidates
from hm_assets.pipeline.retrieval.base import RetrievalContext, customer_purchases, ranked_candidates
from hm_assets.platform.sql import load_sql
from hm_assets.platform.store import HMStore
from hm_assets.serving.on_demand import CustomerViews, OnDemandRecommender
from hm_assets_tests.tiny_run import customers_with_history


@pytest.fixture(scope="module")
def recommender(recs_run):
    with OnDemandRecommender(HMStore(home=str(recs_run.home)), recs_run.week) as loaded:
        yield loaded


def _cases(recommender: OnDemandRecommender, recs_run) -> list[tuple[object, list[int], dict]]:
    with_history = customers_with_history(recommender.store, recs_run.week, 16)
    without = sorted(set(recommender.customers["customer_key"].astype(int)) - set(customers_with_history(recommender.store, recs_run.week, 10**6)))
    popular = recommender.articles["article_id"].astype(int).tolist()
    cases: list[tuple[object, list[int], dict]] = []
    for i, key in enumerate(with_history):
        cases.append((key, [] if i % 2 else popular[i * 7 : i * 7 + 1 + i % 3], {}))
    cases += [(key, bought, {}) for key, bought in zip(without[:2], ([], popular[3:5]))]
    cases += [("someone new", [], {"age": 23.0}), ("someone else new", popular[10:12], {"age": 61.0})]
    return cases


def test_one_customer_stage_equals_the_batch_sql(recommender, recs_run):
    checked = 0
    for customer, bought, attributes in _cases(recommender, recs_run):
        who = recommender.customer(customer, **attributes)
        ranked = recommender.rank(customer, bought=bought, exclude_bought=False, **attributes)
        # every step of the registry's retrievers and rules has its in-memory form: no view was needed
        assert not ranked.views
        cur = recommender._con.cursor()
        try:
            bought_ids = recommender._bought_ids(bought)
            rows, shared = recommender._prepare(cur, who, bought_ids)
            frames = rows.frames()
            recommender._create_views(cur, who, bought_ids, rows)
            # what the retrievers share online, computed in memory, is what they would read from the views
            ctx = RetrievalContext(con=cur, cutoff=recommender.cutoff, week_key=recs_run.week,
                                   customer_keys=np.asarray([who.key]), shared={})
            pd.testing.assert_frame_equal(shared[("purchases",)], customer_purchases(ctx), check_exact=True, obj=f"purchases of {customer}")
            # the customer's feature rows by their SQL, over the customer and the other customers of
            # its postal code, in place of the in-memory ones, for everything below
            key = int(who.key)
            cur.execute(
                f"CREATE OR REPLACE TEMP VIEW customers AS SELECT * FROM h_customers WHERE customer_key <> {key} AND postal_code "
                "IS NOT DISTINCT FROM (SELECT postal_code FROM one_customer) UNION ALL SELECT * FROM one_customer"
            )
            for table in ("customer_features", "customer_transaction_stats"):
                cur.unregister(table)
                cur.execute(
                    f"CREATE TEMP TABLE {table} AS SELECT * FROM ({load_sql(table)}) WHERE customer_key = {key}", {"cutoff": recommender.cutoff}
                )
                pd.testing.assert_frame_equal(
                    frames[table], cur.execute(f"SELECT * FROM {table}").df(), check_exact=True, obj=f"{table} of {customer}"
                )
            cur.execute("CREATE OR REPLACE TEMP VIEW customers AS SELECT * FROM one_customer")
            raws = recommender._retrieve(cur, who, {}, {})
            for name, raw in raws.items():
                cur.register(f"ranked_{name}", ranked_candidates(cur, raw, recommender.max_candidates[name]).df())
                cur.execute(f"CREATE TEMP TABLE source_{name} AS SELECT * FROM ranked_{name}")
            select_candidates(
                cur, {name: f"source_{name}" for name in raws}, list(RULES), recommender.cutoff, DEFAULT_CAP,
                recommender.calibration, rule_inputs_ready=True,
            )
            candidates = cur.execute("SELECT * FROM candidates").df()
            pairs = pair_features_frame(cur, recommender.cutoff, recommender.article_taste)
        finally:
            cur.close()
        label = f"customer {customer}, bought {bought}"
        assert len(candidates) > 12, label
        pd.testing.assert_frame_equal(ranked.candidates, candidates, check_exact=True, obj=f"candidates of {label}")
        pd.testing.assert_frame_equal(ranked.pairs, pairs, check_exact=True, obj=f"pair features of {label}")
        checked += 1
        # the features a purchase moves do move: the bought article is now a re-buy
        if bought:
            row = ranked.pairs[ranked.pairs["article_id"] == bought[-1]]
            assert row.empty or int(row["bought_same_article"].iloc[0]) >= 1
    assert checked == len(_cases(recommender, recs_run))
    assert np.isfinite(ranked.recs["score"].dropna()).all()


def test_the_customer_views_are_made_at_the_first_statement_of_a_call(recommender, recs_run):
    """A step without an in-memory form reads the customer's views (``CustomerViews``): they are made
    when its first statement runs, and hold the history with the purchases just made."""
    key = customers_with_history(recommender.store, recs_run.week, 1)[0]
    article = int(recommender.articles["article_id"].iloc[0])
    who = recommender.customer(key)
    cursor = recommender._con.cursor()
    try:
        rows, _ = recommender._prepare(cursor, who, [article])
        views = CustomerViews(cursor, partial(recommender._create_views, who=who, bought=[article], rows=rows))
        assert not views.created
        history = views.execute("SELECT article_id FROM transactions").fetchnumpy()["article_id"]
        assert views.created
        assert history.tolist() == rows.article.tolist() and history[-1] == article
        assert views.execute("SELECT customer_key FROM customers").fetchall() == [(key,)]
        assert views.execute("SELECT customer_key FROM customer_features").fetchall() == [(key,)]
    finally:
        cursor.close()
