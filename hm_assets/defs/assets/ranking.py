"""Filtered union of candidates -> LightGBM ranker -> 12 recommendations each.

The pair features (``sql/pair_features.sql``) are not an asset: the recommendations compute each
shard's in memory and score them, and the ranker computes those of its labelled weeks' samples
(``hm_assets/pipeline/ranking/samples.py``). Stored, they were 9 GB a week at full scale, written
once and read back once."""


import json
from dataclasses import dataclass
from functools import partial

import dagster as dg
import pandas as pd
import pyarrow as pa

from hm_assets.defs.assets.weekly import history, previous_weeks, this_and_previous_week, week_view
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.pipeline.evaluation.baselines import last_week_top
from hm_assets.pipeline.ranking.candidates import (
    CALIBRATION_KEY,
    DEFAULT_CAP,
    CandidateCap,
    add_effects,
    calibration_record,
    effects_table,
    found_true_pairs,
    previous_week_calibration,
    RetrieverCalibration,
)
from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.ranking.filters import RULE_NAMES, prepare_rule_inputs, rule_input_tables, rules_by_name
from hm_assets.pipeline.ranking.ranker import (
    MAX_TRAINING_WEEKS,
    K,
    RankerConfig,
    importances,
    save,
    stored_scorer,
    train,
)
from hm_assets.pipeline.ranking.samples import PAIR_FEATURE_INPUTS, labelled_weeks, training_sample, week_candidates
from hm_assets.pipeline.ranking.stage import (
    kaggle_submission,
    pair_feature_batches,
    recommend_lists_from_batches,
    select_candidates,
)
from hm_assets.pipeline.retrieval.registry import retriever_names
from hm_assets.platform.fanout import ShardOutputs, ShardTask, sharded_asset
from hm_assets.platform.metadata import markdown_table, stopwatch

GROUP = "ranking"


class CandidateFilterConfig(dg.Config):
    rules: list[str] = list(RULE_NAMES)
    # The cap per customer after the rules; lower for a customer without a purchase in
    # lapsed_after_days (or ever): see CandidateCap.
    max_per_customer: int = DEFAULT_CAP.per_customer
    max_per_lapsed_customer: int = DEFAULT_CAP.per_lapsed_customer
    lapsed_after_days: int = DEFAULT_CAP.lapsed_after_days
    # Empty: every registered retriever. A subset serves ablations and cheaper runs; the ranker
    # must then be trained on weeks built with the same subset.
    retrievers: list[str] = []


def candidate_cap(config: CandidateFilterConfig) -> CandidateCap:
    return CandidateCap(config.max_per_customer, config.max_per_lapsed_customer, config.lapsed_after_days)


def selected_retrievers(config: CandidateFilterConfig) -> list[str]:
    names = config.retrievers or retriever_names()
    unknown = sorted(set(names) - set(retriever_names()))
    if unknown:
        raise ValueError(f"unknown retriever(s) {unknown}; registered: {retriever_names()}")
    return names


@dataclass(frozen=True)
class CandidatesPlan:
    """What every candidates shard of a week shares, computed once by the plan step: the cap's
    calibration and the rules' whole-history inputs (``rule_input_tables``: each shard computing
    them again cost 0.75 s at full scale, 14 times a week)."""

    calibration: RetrieverCalibration | None
    rule_inputs: dict[str, pa.Table]


def candidates_plan(
    weeks: WeekPartitions, context: dg.OpExecutionContext, store: HMStore, config: CandidateFilterConfig
) -> CandidatesPlan:
    candidate_cap(config)  # a wrong cap fails here, once, not in every shard
    calibration = previous_week_calibration(store, context.partition_key, selected_retrievers(config))
    if calibration is None:
        context.log.warning("no earlier week with retriever outputs and purchases: the cap keeps the best ranks")
    with week_view(context, store, weeks, with_features=False) as view:
        rule_inputs = rule_input_tables(view.con, view.cutoff)
    return CandidatesPlan(calibration, rule_inputs)


def candidates_shard(
    weeks: WeekPartitions, context: dg.OpExecutionContext, store: HMStore, config: CandidateFilterConfig, task: ShardTask
) -> dict:
    key = context.partition_key
    names = selected_retrievers(config)
    sources = {name: store.require(name, key) for name in names}
    where = task.shard.where()
    plan: CandidatesPlan = task.shared
    with week_view(context, store, weeks, with_truth=True) as view:
        prepare_rule_inputs(view.con, view.cutoff, tables=plan.rule_inputs)
        selection = select_candidates(
            view.con, sources, rules_by_name(config.rules), view.cutoff, candidate_cap(config), plan.calibration, where,
            view.has_truth, rule_inputs_ready=True, materialize=False,
        )
        part = task.part("candidates", ".parquet")
        # the week's file carries the calibration its cap used (the on-demand path reads it there)
        record = {CALIBRATION_KEY: calibration_record(plan.calibration, names)}
        rows = store.write_parquet(view.con.sql("SELECT * FROM candidates"), part, metadata=record)
        # counted on the part just written: the view would run the cap again
        view.con.execute(f"CREATE TEMP VIEW written_candidates AS SELECT customer_key, article_id FROM read_parquet('{part}')")
        summary = {
            "rows": rows,
            "union_rows": selection.union_rows,
            "customers": view.con.execute("SELECT count(DISTINCT customer_key) FROM written_candidates").fetchall()[0][0],
            "effects": selection.effects,
            "has_truth": view.has_truth,
        }
        if view.has_truth:
            summary["found_union"] = found_true_pairs(view.con, "union_candidates")
            summary["found_kept"] = found_true_pairs(view.con, "written_candidates")
            summary["purchases"] = view.con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT customer_key, article_id FROM truth WHERE {where})"
            ).fetchall()[0][0]
    return summary


def candidates_metadata(
    context, store: HMStore, config: CandidateFilterConfig, shards: list[dict], files: dict, plan: CandidatesPlan
) -> dict:
    calibration = plan.calibration
    rows = sum(s["rows"] for s in shards)
    customers_n = sum(s["customers"] for s in shards)
    effects: list = []
    for shard in shards:
        effects = add_effects(effects, shard["effects"])
    metadata: dict = {
        "dagster/row_count": rows,
        "union_rows": sum(s["union_rows"] for s in shards),
        "customers": int(customers_n),
        "candidates_per_customer_mean": round(rows / max(customers_n, 1), 2),
        "rules_enabled": ", ".join(config.rules) or "none",
        "cap": f"{config.max_per_customer}; {config.max_per_lapsed_customer} without a purchase in {config.lapsed_after_days} days",
        "cap_order": f"hit rate per retriever and rank band on {calibration.week}" if calibration else "best rank",
        "rule_effects": markdown_table(effects_table(effects)),
    }
    if calibration is not None:
        metadata["cap_calibration"] = markdown_table(calibration.by_band(), floatfmt=".4f")
    for effect in effects:
        metadata[f"removed_by_{effect.rule}"] = effect.removed
        if effect.removed_true is not None:
            metadata[f"true_purchases_removed_by_{effect.rule}"] = effect.removed_true
    if shards and shards[0]["has_truth"]:
        purchases = sum(s["purchases"] for s in shards)
        metadata["recall_union"] = round(sum(s["found_union"] for s in shards) / max(purchases, 1), 4)
        metadata["recall_after_filters"] = round(sum(s["found_kept"] for s in shards) / max(purchases, 1), 4)
    return metadata


RANKER_DESCRIPTION = (
    "LightGBM ranker (binary, or lambdarank) trained on the previous weeks: their buyers' candidates "
    "with the pair features they had as of their own cut-offs, labelled with what was bought in those weeks."
)


def ranker(
    weeks: WeekPartitions, context: dg.AssetExecutionContext, store: HMStore, config: RankerConfig
) -> dg.MaterializeResult:
    key = context.partition_key
    labelled = labelled_weeks(store, key, config.training_weeks)
    if len(labelled) < config.training_weeks:
        raise dg.Failure(
            description=(
                f"the ranker for {key} was asked to learn from {config.training_weeks} labelled week(s) but "
                f"{len(labelled)} exist ({', '.join(labelled) or 'none'}): materialize "
                f"{', '.join(PAIR_FEATURE_INPUTS)} (and transactions) "
                f"for the {config.training_weeks} weeks before {key}, or set the ranker's training_weeks lower"
            ),
            metadata={"asked": config.training_weeks, "found": ", ".join(labelled) or "none"},
        )
    prescreen = config.prescreen()  # checked before the training
    sample = training_sample(store, labelled, weeks.history_keys(), config, log=context.log.info)
    rows = sample.rows
    model_path = store.asset_path("ranker", key, ".txt")
    info_path = store.asset_path("ranker", key, ".json")
    metadata: dict = {
        "training_weeks": ", ".join(labelled) or "none",
        "objective": config.objective,
        "samples_read_back": ", ".join(sample.reused) or "none",
    }
    if rows.empty or rows["label"].sum() == 0:
        context.log.warning("no labelled candidates to learn from: recommendations fall back to retriever agreement")
        model_path.unlink(missing_ok=True)
        with store.atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps({"trained": False, "weeks": labelled}))
        metadata["trained"] = False
        return dg.MaterializeResult(metadata=metadata)
    with stopwatch() as watch:
        booster = train(rows, config.settings(), context.log.info)
    with store.atomic_path(model_path) as tmp:
        save(booster, tmp)
    with store.atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps({
            "trained": True, "weeks": labelled, "features": booster.feature_name(),
            "prescreen": prescreen.as_dict() if prescreen else None,
        }))
    importance = importances(booster)
    metadata.update(
        {
            "trained": True,
            "training_rows": len(rows),
            "training_queries": int(rows["query"].nunique()),
            "max_rows_per_week": config.max_rows_per_week,
            "prescreen": (
                f"the first {prescreen.rounds} trees pick each customer's {prescreen.keep} best candidates" if prescreen
                else "off: every candidate scored by the whole model"
            ),
            "positive_rate": round(float(rows["label"].mean()), 4),
            "features": len(booster.feature_name()),
            "feature_columns": dg.MetadataValue.md(", ".join(f"`{name}`" for name in booster.feature_name())),
            "feature_importance": markdown_table(importance.head(25), floatfmt=".3f"),
            "model_path": store.relative(model_path),
            "seconds": watch.seconds,
        }
    )
    return dg.MaterializeResult(metadata=metadata)


def popular_fallback(weeks: WeekPartitions, context: dg.OpExecutionContext, store: HMStore, config) -> pd.DataFrame:
    """Last week's bestsellers: fill lists the ranker leaves short."""
    with week_view(context, store, weeks, with_features=False) as view:
        return last_week_top(view.con, view.cutoff, 24)


def recommendations_shard(weeks: WeekPartitions, context: dg.OpExecutionContext, store: HMStore, config, task: ShardTask) -> dict:
    key = context.partition_key
    scorer = stored_scorer(store, key)
    where = task.shard.where()
    with week_candidates(store, key, weeks.history_keys(), where=where) as (view, taste):
        customers_frame = view.con.sql(
            f"SELECT customer_key, customer_id FROM customers WHERE {where} ORDER BY customer_key"
        ).df()
        pairs = view.con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]
        batches = pair_feature_batches(view.con, view.cutoff, taste, scorer.features)
        recs = recommend_lists_from_batches(batches, scorer, customers_frame["customer_key"].to_numpy(), task.shared)
    rows = store.write_parquet(recs, task.part("recommendations", ".parquet"))
    with store.atomic_path(task.part("submission", ".csv")) as csv:
        kaggle_submission(recs, customers_frame).to_csv(csv, header=task.shard.index == 0, index=False)
    return {"rows": rows, "from_ranker": int(recs["score"].notna().sum()), "pairs": int(pairs)}


def recommendations_metadata(context, store: HMStore, config, shards: list[dict], files: dict, shared) -> dict:
    rows = sum(s["rows"] for s in shards)
    return {
        "dagster/row_count": rows,
        "customers": rows // K,
        "pairs_scored": sum(s["pairs"] for s in shards),
        "share_from_ranker": round(sum(s["from_ranker"] for s in shards) / max(rows, 1), 4),
        "submission_csv": dg.MetadataValue.path(store.relative(files["submission"])),
        "submission_url": dg.MetadataValue.url(store.url(files["submission"])),
    }


def ranking_assets(weeks: WeekPartitions) -> list[dg.AssetsDefinition]:
    """candidates -> ranker -> recommendations, the sharded ones one step per customer shard."""
    candidates = sharded_asset(
        name="candidates",
        description=(
            "Union of every retriever's candidates (their scores and ranks as columns), minus the business "
            "rules (each named and switchable), capped per customer: the candidates most likely to be bought "
            "first, by each retriever's hit rate per rank band on the previous week. One step per customer shard."
        ),
        # The previous week's retriever outputs calibrate the cap (see hm_assets/pipeline/ranking/candidates.py).
        deps=[
            history(weeks),
            *FEATURE_TABLES,
            *(dg.AssetDep(name, partition_mapping=this_and_previous_week()) for name in retriever_names()),
        ],
        outputs=ShardOutputs({"candidates": ".parquet"}),
        prepare=partial(candidates_plan, weeks),
        run_shard=partial(candidates_shard, weeks),
        finish=candidates_metadata,
        config_class=CandidateFilterConfig,
        group_name=GROUP,
        kinds={"duckdb", "parquet"},
        partitions_def=weeks.weekly,
    )
    @dg.asset(
        name="ranker",
        description=RANKER_DESCRIPTION,
        group_name=GROUP,
        kinds={"lightgbm", "duckdb", "sql"},
        partitions_def=weeks.weekly,
        # The labelled weeks' purchases are in the history; their pair features are computed from
        # their candidates, feature tables and taste, and the history before each.
        deps=[
            history(weeks),
            *(dg.AssetDep(name, partition_mapping=previous_weeks(MAX_TRAINING_WEEKS)) for name in PAIR_FEATURE_INPUTS),
        ],
    )
    def ranker_asset(context: dg.AssetExecutionContext, store: HMStore, config: RankerConfig) -> dg.MaterializeResult:
        return ranker(weeks, context, store, config)

    recommendations = sharded_asset(
        name="recommendations",
        description=(
            "Exactly 12 distinct articles for every customer in customers.csv, best first, plus the Kaggle "
            "submission CSV (customer_id, prediction). Each shard's pair features (customer and article "
            "features, their transaction statistics, preference shares, taste, consistency, retrieval scores "
            "and ranks; SQL: sql/pair_features.sql) are computed in memory and scored. One step per customer shard."
        ),
        deps=[history(weeks), *PAIR_FEATURE_INPUTS, "ranker"],
        outputs=ShardOutputs({"recommendations": ".parquet", "submission": ".csv"}),
        prepare=partial(popular_fallback, weeks),
        run_shard=partial(recommendations_shard, weeks),
        finish=recommendations_metadata,
        # Half the usual shard size: each shard computes its pairs' features and streams them to the
        # scorer, reading the history and the candidates once per shard. At full scale 50,000-customer
        # shards took 497 s at 3.8 GiB, 25,000 ones 515 s at 2.8 GiB; 100,000 were slower (RESULTS.md).
        shard_size=lambda store: max(1, store.customers_per_shard // 2),
        group_name=GROUP,
        kinds={"lightgbm", "parquet", "csv"},
        partitions_def=weeks.weekly,
    )
    return [candidates, ranker_asset, recommendations]
