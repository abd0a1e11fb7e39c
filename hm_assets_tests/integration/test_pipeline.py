"""The whole weekly graph materialized on the tiny preset, as `hm-recs run` does it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from hm_assets.defs.runner import run_weeks
from hm_assets.pipeline.evaluation.quality_checks import recommendation_problems
from hm_assets.platform.weeks import WEEK
from hm_assets.pipeline.ingest.data_range import scan_data_range

FAST = {
    "ops": {
        "ranker": {"config": {"training_weeks": 1, "boost_rounds": 60}},
        "popularity_model": {"config": {"boost_rounds": 40}},
        "image_embeddings": {"config": {"max_epochs": 1}},
    }
}


@pytest.fixture(scope="session")
def tiny_run(tiny_data):
    from hm_assets.definitions import build_definitions

    defs = build_definitions()

    data_range = scan_data_range(tiny_data)
    home = Path(os.environ["HM_HOME"])
    instance = dg.DagsterInstance.ephemeral()
    plan = run_weeks(defs, instance, data_range, data_range.live_week, training_weeks=1, backtest_weeks=2, run_config=FAST)
    return home, data_range, plan, instance


def test_plan_covers_training_week_evaluated_week_and_live_week(tiny_run):
    _, data_range, plan, _ = tiny_run
    assert plan.full == [data_range.newest_week_with_truth, data_range.live_week]
    assert plan.training_side == [data_range.newest_week_with_truth - WEEK]


def test_every_customer_gets_twelve_known_articles(tiny_run, tiny_data):
    home, data_range, _, _ = tiny_run
    for week in (data_range.newest_week_with_truth, data_range.live_week):
        recs = home / "assets" / "recommendations" / f"{week}.parquet"
        problems = recommendation_problems(
            duckdb.connect(), recs, home / "assets" / "customers.parquet", home / "assets" / "articles.parquet"
        )
        assert problems == []
    customers = pd.read_csv(tiny_data / "customers.csv", usecols=["customer_id"])
    live = pd.read_parquet(home / "assets" / "recommendations" / f"{data_range.live_week}.parquet")
    assert live["customer_key"].nunique() == len(customers)


def test_submission_is_in_kaggle_format(tiny_run, tiny_data):
    home, data_range, _, _ = tiny_run
    submission = pd.read_csv(home / "assets" / "submission" / f"{data_range.live_week}.csv", dtype=str)
    customers = pd.read_csv(tiny_data / "customers.csv", usecols=["customer_id"], dtype=str)
    assert list(submission.columns) == ["customer_id", "prediction"]
    assert set(submission["customer_id"]) == set(customers["customer_id"])
    lists = submission["prediction"].str.split(" ")
    assert lists.map(len).eq(12).all() and lists.map(lambda l: len(set(l))).eq(12).all()
    assert lists.explode().str.fullmatch(r"\d{10}").all()


def test_evaluation_reports_ranker_next_to_baselines(tiny_run):
    home, data_range, _, _ = tiny_run
    metrics = json.loads((home / "assets" / "evaluation" / f"{data_range.newest_week_with_truth}.json").read_text())
    for key in ("map12_ranker", "map12_trending", "map12_last_week_top12", "recall_union", "recall_after_filters"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["recall_after_filters"] <= metrics["recall_union"]
    assert metrics["map12_ranker"] > metrics["map12_last_week_top12"]
    # hm-synth ships its own model's expected top-12 (oracle.csv): reported with the stage diagnostics
    assert metrics["map12_oracle"] > metrics["map12_trending"]
    assert metrics["ranker_vs_oracle"] == pytest.approx(metrics["map12_ranker"] / metrics["map12_oracle"], rel=1e-3)
    assert metrics["oracle_recall_after_filters"] <= metrics["oracle_recall_union"] <= 1.0
    assert 0.0 < metrics["oracle_recall_ranker"] <= metrics["oracle_recall_after_filters"]
    for name in ("popularity_model", "repurchase", "taste_popular"):
        assert 0.0 <= metrics[f"oracle_recall_{name}"] <= metrics["oracle_recall_union"]
    live = json.loads((home / "assets" / "evaluation" / f"{data_range.live_week}.json").read_text())
    assert live == {"week": data_range.live_week.isoformat(), "has_truth": False}


def test_asset_checks_ran_and_passed(tiny_run):
    _, _, _, instance = tiny_run
    runs = instance.get_runs()
    assert runs and all(run.is_success for run in runs)
    failed_checks = []
    for run in runs:
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = event.dagster_event.event_specific_data
            if not evaluation.passed:
                failed_checks.append(evaluation.check_name)
    assert failed_checks == []


def test_candidate_metadata_reports_recall(tiny_run):
    _, data_range, _, instance = tiny_run
    key = dg.AssetKey("repurchase")
    event = instance.get_latest_materialization_event(key)
    assert event is not None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[data_range.newest_week_with_truth.isoformat()]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata
    assert 0.0 < metadata["recall"].value <= 1.0
    assert metadata["candidates_per_customer_mean"].value > 0


def test_customer_shards_give_the_same_results_as_one_shard(tiny_run, tmp_path):
    """The per-customer steps run shard by shard; any shard size gives identical outputs."""
    from hm_assets.definitions import build_definitions
    from hm_assets.defs.resources import HMDataset, HMStore

    defs = build_definitions()
    candidates, recommendations = (defs.get_assets_def(a) for a in ("candidates", "recommendations"))
    home, data_range, _, _ = tiny_run
    week = data_range.newest_week_with_truth.isoformat()
    sharded_home = tmp_path / "home"
    shutil.copytree(home / "assets", sharded_home / "assets")
    result = dg.materialize(
        [candidates, recommendations],
        partition_key=week,
        resources={"store": HMStore(home=str(sharded_home), customers_per_shard=300), "dataset": HMDataset()},
        selection=[candidates, recommendations],
    )
    assert result.success
    shards = result.asset_materializations_for_node("candidates")[0].metadata["customer_shards"].value
    assert shards >= 4
    for asset in ("candidates", "recommendations"):
        one = pd.read_parquet(home / "assets" / asset / f"{week}.parquet")
        many = pd.read_parquet(sharded_home / "assets" / asset / f"{week}.parquet")
        pd.testing.assert_frame_equal(one.reset_index(drop=True), many.reset_index(drop=True))
    assert (home / "assets" / "submission" / f"{week}.csv").read_text() == (
        sharded_home / "assets" / "submission" / f"{week}.csv"
    ).read_text()


def test_ablation_removes_each_retriever_and_groups_with_seed_averaging(tiny_run):
    from hm_assets.defs.resources import HMStore
    from hm_assets.pipeline.evaluation.ablation import ablation
    from hm_assets.platform.history import stored_history_weeks
    from hm_assets.pipeline.retrieval.registry import retriever_names

    home, data_range, _, _ = tiny_run
    week = data_range.newest_week_with_truth.isoformat()
    content = ["image_similar", "text_similar", "attribute_similar"]
    store = HMStore(home=str(home))
    table = ablation(
        store, week, retriever_names(), 1, stored_history_weeks(store),
        groups={"content": content}, seeds=(0, 1),
    ).set_index("without")
    assert list(table.index) == [*retriever_names(), "content"]
    assert table["map12_all"].nunique() == 1 and 0 < table["map12_all"].iloc[0] <= 1
    assert ((table["map12_without"] >= 0) & (table["map12_without"] <= 1)).all()
    assert (table["seeds"] == 2).all() and table["delta_sd"].notna().all()
    # The cold-start retriever is the only source for most customers: removing it must hurt.
    assert table.loc["popularity_model", "map12_delta"] > 0


def test_scored_matrices_equal_the_pair_features_statement_with_the_tables_columns_looked_up(tiny_run):
    """The recommendations score matrices made of the statement's pair-level columns and the feature
    tables' own columns looked up by customer and article: value for value (NaN for NULL) the
    statement's whole frame, which the ranker learns from, in the same order; a customer missing
    from a feature table gets NaN there, as the statement's LEFT JOIN gives."""
    import numpy as np

    from hm_assets.defs.resources import HMStore
    from hm_assets.pipeline.ranking.ranker import feature_columns
    from hm_assets.pipeline.ranking.samples import week_candidates
    from hm_assets.pipeline.ranking.stage import customer_chunks, pair_feature_batches, pair_features_frame
    from hm_assets.platform.history import stored_history_weeks

    home, data_range, _, _ = tiny_run
    week = data_range.newest_week_with_truth.isoformat()
    store = HMStore(home=str(home))
    with week_candidates(store, week, stored_history_weeks(store)) as (view, taste):
        dropped = view.con.execute("SELECT min(customer_key) FROM customer_transaction_stats").fetchall()[0][0]
        view.con.execute(
            f"CREATE OR REPLACE VIEW customer_transaction_stats AS SELECT * FROM "
            f"read_parquet('{store.require('customer_transaction_stats', week)}') WHERE customer_key <> {dropped}"
        )
        frame = pair_features_frame(view.con, view.cutoff, taste)
        features = feature_columns(frame)
        pairs = pair_feature_batches(view.con, view.cutoff, taste, features, rows=700)
        assert {t.key for t in pairs.matrix.tables} == {"customer_key", "article_id"}
        assert 0 < len(pairs.matrix.computed) < len(features) - 20
        chunks = [(c, a, m.copy()) for c, a, m in customer_chunks(pairs.reader, pairs.matrix)]
    assert len(chunks) > 1
    assert np.concatenate([c for c, _, _ in chunks]).tolist() == frame["customer_key"].tolist()
    assert np.concatenate([a for _, a, _ in chunks]).tolist() == frame["article_id"].tolist()
    matrix = np.concatenate([m for _, _, m in chunks])
    np.testing.assert_array_equal(matrix, frame[features].to_numpy(np.float64, na_value=np.nan))
    mine = frame["customer_key"].to_numpy() == dropped
    assert mine.any() and np.isnan(matrix[mine][:, features.index("txn_all")]).all()


def test_article_taste_read_from_the_retrievers_fitted_factors_equals_its_own_fit(tiny_run):
    """The weekly ``article_taste`` takes the week's ALS factors from purchase_history_similar's
    fitted state instead of fitting the same factorisation again: every week's stored table is the
    table fitted afresh from the history, to the bit."""
    import numpy as np
    import pyarrow.parquet as pq

    from hm_assets.defs.resources import HMStore
    from hm_assets.pipeline.features.taste import article_taste
    from hm_assets.pipeline.retrieval.base import RetrievalContext
    from hm_assets.platform.history import open_week, stored_history_weeks

    home, _, _, _ = tiny_run
    store = HMStore(home=str(home))
    weeks = sorted(path.stem for path in store.asset_dir("article_taste").glob("*.parquet"))
    assert len(weeks) >= 2
    for week in weeks:
        with open_week(store, week, stored_history_weeks(store)) as view:
            ctx = RetrievalContext(con=view.con, cutoff=view.cutoff, week_key=week, customer_keys=np.zeros(0, np.int64))
            fitted = article_taste(ctx)
        stored = pq.read_table(store.require("article_taste", week))
        assert fitted.num_rows > 100 and stored.equals(fitted), week


def test_settings_and_feature_ablations_retrain_on_the_kept_samples_paired_by_seed(tiny_run):
    from hm_assets.defs.resources import HMStore
    from hm_assets.pipeline.evaluation.ablation import RANKER, feature_ablation, settings_ablation
    from hm_assets.platform.history import stored_history_weeks

    home, data_range, _, _ = tiny_run
    week = data_range.newest_week_with_truth.isoformat()
    store = HMStore(home=str(home))
    keys = stored_history_weeks(store)
    table = settings_ablation(
        store, week, {"same": {"feature_fraction": RANKER.feature_fraction}, "short": {"boost_rounds": 30}}, keys,
        seeds=(0, 1), training_weeks=1,
    ).set_index("variant")
    # The defaults restated retrain the same models on the same samples: exactly the same MAP@12.
    assert table.loc["same", "map12_delta"] == 0 and table.loc["same", "delta_sd"] == 0
    assert table.loc["same", "map12_variant"] == table.loc["short", "map12_defaults"]
    assert 0 < table.loc["short", "map12_variant"] <= 1 and (table["seeds"] == 2).all()
    assert (table[["train_seconds", "train_seconds_defaults"]] > 0).all().all()
    assert (table["training_rows"] == table["training_rows_defaults"]).all()
    # A sampling setting gets its own sample of the same weeks: a smaller row budget, fewer rows.
    budget = settings_ablation(
        store, week, {"fewer_rows": {"max_rows_per_week": 1_000, "boost_rounds": 30}}, keys, training_weeks=1
    ).set_index("variant")
    assert budget.loc["fewer_rows", "training_rows"] <= 1_000 < budget.loc["fewer_rows", "training_rows_defaults"]
    with pytest.raises(ValueError, match="training_weeks"):
        settings_ablation(store, week, {"bad": {"training_weeks": 3}}, keys, training_weeks=1)
    features = feature_ablation(store, week, {"taste": ["taste_long", "taste_recent"]}, keys, training_weeks=1)
    assert features.loc[0, "without"] == "taste" and features.loc[0, "features"] == "taste_long, taste_recent"
    assert 0 < features.loc[0, "map12_all"] <= 1 and 0 < features.loc[0, "map12_without"] <= 1


def test_ranker_fails_clearly_without_the_training_weeks_it_was_asked_for(tiny_run, tmp_path):
    """Asked for more labelled weeks than exist, the ranker stops naming what is missing; it does
    not train a smaller model, and the week's previous ranker files stay as they were."""
    from hm_assets.definitions import build_definitions
    from hm_assets.defs.resources import HMDataset, HMStore

    ranker = build_definitions().get_assets_def("ranker")

    home, data_range, _, _ = tiny_run
    week = data_range.newest_week_with_truth.isoformat()
    copy = tmp_path / "home"
    shutil.copytree(home / "assets", copy / "assets")
    before = {p.name: p.read_bytes() for p in (copy / "assets" / "ranker").glob(f"{week}.*")}
    with pytest.raises(dg.Failure, match=r"asked to learn from 5 labelled week\(s\) but 1 exist"):
        dg.materialize(
            [ranker],
            partition_key=week,
            resources={"store": HMStore(home=str(copy)), "dataset": HMDataset()},
            run_config={"ops": {"ranker": {"config": {"training_weeks": 5}}}},
        )
    assert {p.name: p.read_bytes() for p in (copy / "assets" / "ranker").glob(f"{week}.*")} == before
