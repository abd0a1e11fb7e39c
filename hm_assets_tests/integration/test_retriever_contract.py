"""The retriever contract on a materialized tiny week: ``fit`` once per week (the state the weekly
asset stores), ``retrieve`` for any set of customers — for one customer, as the online path calls it
(in-memory seeds and scoring where a retriever has them), it gives exactly that customer's rows of
the batch; and the online list after a purchase equals what the batch stage
computes for that customer given the same history."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.features.taste import read_article_taste
from hm_assets.pipeline.ranking.candidates import DEFAULT_CAP, previous_week_calibration
from hm_assets.pipeline.ranking.filters import RULES
from hm_assets.pipeline.ranking.stage import pair_features, recommend_lists, select_candidates
from hm_assets.pipeline.retrieval.base import RetrievalContext, load_state, ranked_candidates, retriever_inputs, state_path
from hm_assets.pipeline.retrieval.registry import RETRIEVERS
from hm_assets.platform.history import open_week, register_parquet, stored_history_weeks
from hm_assets.platform.sql import load_sql
from hm_assets.platform.store import HMStore, write_parquet
from hm_assets.serving.on_demand import OnDemandRecommender
from hm_assets_tests.tiny_run import customers_with_history


@pytest.fixture(scope="module")
def store(recs_run) -> HMStore:
    return HMStore(home=str(recs_run.home))


def _week_view(store: HMStore, week: str):
    view = open_week(store, week, stored_history_weeks(store))
    for table in FEATURE_TABLES:
        register_parquet(view.con, table, store.require(table, week))
    return view


def _one_customer(con, key: int) -> None:
    """Restrict the connection's views to one customer (the history the online path holds)."""
    for name in ("transactions", "customers", "customer_features", "customer_transaction_stats"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE one_{name} AS SELECT * FROM {name} WHERE customer_key = {key}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM one_{name}")


def _check_unique_pairs(retriever, raw) -> None:
    """A retriever declaring ``unique_pairs`` (the ranking then skips its dedupe) gives one row per
    (customer, article), in the batch and online alike."""
    if not retriever.unique_pairs:
        return
    frame = raw if isinstance(raw, pd.DataFrame) else raw.df()
    repeated = frame.duplicated(["customer_key", "article_id"]).sum()
    assert repeated == 0, f"{retriever.name} declares unique pairs but gave {repeated} repeated (customer, article) rows"


@pytest.mark.parametrize("retriever", RETRIEVERS, ids=lambda r: r.name)
def test_retrieve_for_one_customer_is_their_part_of_the_batch(retriever, store, recs_run):
    week = recs_run.week
    state = load_state(state_path(store, retriever.name, week))
    config = retriever.config_class()
    inputs = retriever_inputs(store, [retriever], week)
    stored = pd.read_parquet(store.require(retriever.name, week))
    with _week_view(store, week) as view:
        keys = view.con.sql("SELECT customer_key FROM customers").df()["customer_key"].to_numpy()
        ctx = RetrievalContext(con=view.con, cutoff=view.cutoff, week_key=week, customer_keys=keys, inputs=inputs)
        raw = retriever.retrieve(ctx, config, state)
        _check_unique_pairs(retriever, raw)
        batch = ranked_candidates(view.con, raw, config.max_candidates, retriever.unique_pairs).df()
    # the stored state reproduces the asset's own output
    pd.testing.assert_frame_equal(batch, stored)
    customers = customers_with_history(store, week, 6) + [int(k) for k in keys[:2]]
    proposed = 0
    for key in customers:
        with _week_view(store, week) as view:
            _one_customer(view.con, key)
            # as online: one context for the call, its seeds and purchases read once (``ctx.shared``), the
            # articles in memory
            ctx = RetrievalContext(con=view.con, cutoff=view.cutoff, week_key=week, customer_keys=np.array([key]), inputs=inputs, shared={},
                                   articles=view.con.sql("SELECT * FROM articles").df().set_index("article_id", drop=False))
            raw = retriever.retrieve(ctx, config, state)
            _check_unique_pairs(retriever, raw)
            mine = ranked_candidates(view.con, raw, config.max_candidates, retriever.unique_pairs).df()
        theirs = batch[batch["customer_key"] == key].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, theirs, obj=f"{retriever.name}, customer {key}")
        proposed += len(mine)
    assert proposed > 0 or retriever.name in {"repurchase"}


def test_online_list_after_a_purchase_equals_the_batch_stage_given_that_history(store, recs_run):
    """The batch stage (every retriever's retrieve for every customer, the union, rules, cap, pair
    features and the ranker) over the week's history plus one purchase, against the on-demand path."""
    week = recs_run.week
    key = customers_with_history(store, week, 6)[2]
    with OnDemandRecommender(store, week) as recommender:
        history = pd.concat(pd.read_parquet(p) for p in sorted(store.asset_dir("transactions").glob("*.parquet")) if p.stem < week)
        article = int(history["article_id"].value_counts().index[4])
        online = recommender.rank(key, bought=[article], exclude_bought=False)
        fallback = list(recommender.fallback)
        score = recommender._score
        assert recommender.scorer is not None and recommender.scorer.prescreen is not None  # the default's two stages
    with _week_view(store, week) as view:
        con = view.con
        bought = pd.DataFrame({"t_dat": [view.cutoff - timedelta(days=1)], "customer_key": [key], "article_id": [article]})
        con.register("bought_df", bought)
        channel = con.execute(
            f"SELECT sales_channel_id FROM transactions WHERE customer_key = {key} GROUP BY 1 ORDER BY count(*) DESC, 1 DESC LIMIT 1"
        ).fetchall()[0][0]
        con.execute(
            f"""CREATE TEMP TABLE with_purchase AS SELECT * FROM transactions UNION ALL
                SELECT CAST(b.t_dat AS DATE), CAST(b.customer_key AS BIGINT), CAST(b.article_id AS INTEGER), CAST(f.price AS FLOAT),
                       CAST({channel} AS TINYINT)
                FROM bought_df b JOIN article_features f USING (article_id)"""
        )
        con.execute("CREATE OR REPLACE TEMP VIEW transactions AS SELECT * FROM with_purchase")
        for table in ("customer_features", "customer_transaction_stats"):
            con.execute(f"CREATE TEMP TABLE new_{table} AS {load_sql(table)}", {"cutoff": view.cutoff})
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM new_{table}")
        keys = con.sql("SELECT customer_key FROM customers ORDER BY 1").df()["customer_key"].to_numpy()
        ctx = RetrievalContext(con=con, cutoff=view.cutoff, week_key=week, customer_keys=keys, inputs=retriever_inputs(store, RETRIEVERS, week))
        sources = {}
        for retriever in RETRIEVERS:
            config = retriever.config_class()
            raw = retriever.retrieve(ctx, config, load_state(state_path(store, retriever.name, week)))
            sources[retriever.name] = store.scratch_dir() / f"contract-{retriever.name}.parquet"
            write_parquet(ranked_candidates(con, raw, config.max_candidates), sources[retriever.name])
        calibration = previous_week_calibration(store, week, [r.name for r in RETRIEVERS])
        select_candidates(con, sources, list(RULES), view.cutoff, DEFAULT_CAP, calibration)
        pairs = pair_features(con, view.cutoff, read_article_taste(store.require("article_taste", week))).df()
    mine = pairs[pairs["customer_key"] == key].reset_index(drop=True)
    theirs = online.pairs.reset_index(drop=True)
    assert len(theirs) > 12
    pd.testing.assert_frame_equal(
        theirs.sort_values("article_id").reset_index(drop=True), mine.sort_values("article_id").reset_index(drop=True),
        check_dtype=False, rtol=1e-5,
    )
    batch = recommend_lists(mine, score, np.array([key]), fallback)
    assert batch["article_id"].tolist() == online.recs["article_id"].tolist()
    np.testing.assert_allclose(batch["score"].to_numpy(float), online.recs["score"].to_numpy(float), rtol=1e-6)
