"""Filtered union of candidates -> pair features -> LightGBM ranker -> 12 recommendations each."""


import json

import dagster as dg
import pandas as pd

from hm_assets import ranker as ranking
from hm_assets.assets.features import feature_assets
from hm_assets.assets.retrieval import candidate_assets
from hm_assets.assets.weekly import HISTORY, previous_weeks, week_view
from hm_assets.baselines import last_week_top
from hm_assets.candidates import apply_rules, build_union, effects_table, filtered_candidates
from hm_assets.data_contract import format_article_id
from hm_assets.filters import RULE_NAMES, rules_by_name
from hm_assets.history import register_parquet
from hm_assets.metadata import markdown_table, stopwatch
from hm_assets.metrics import recall
from hm_assets.partitions import weekly_partitions_def
from hm_assets.resources import HMStore
from hm_assets.retrievers.registry import retriever_names
from hm_assets.sql import load_sql
from hm_assets.store import atomic_path, write_parquet
from hm_assets.weeks import WEEK, parse_week

GROUP = "ranking"
MAX_TRAINING_WEEKS = 8


class CandidateFilterConfig(dg.Config):
    rules: list[str] = list(RULE_NAMES)
    max_per_customer: int = 120


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "parquet"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY, *feature_assets, *candidate_assets],
)
def candidates(context: dg.AssetExecutionContext, store: HMStore, config: CandidateFilterConfig) -> dg.MaterializeResult:
    """Union of every retriever's candidates (their scores and ranks as columns), minus the
    business rules (each named and switchable), capped per customer by best retriever rank."""
    key = context.partition_key
    sources = {name: store.require(name, key) for name in retriever_names()}
    with stopwatch() as watch, week_view(context, store, with_truth=True) as view:
        union_rows = build_union(view.con, sources)
        effects = apply_rules(view.con, rules_by_name(config.rules), view.cutoff, view.has_truth)
        rows = write_parquet(filtered_candidates(view.con, config.max_per_customer), store.asset_path("candidates", key))
        metadata: dict = {
            "dagster/row_count": rows,
            "union_rows": int(union_rows),
            "rules_enabled": ", ".join(config.rules) or "none",
            "rule_effects": markdown_table(effects_table(effects)),
        }
        for effect in effects:
            metadata[f"removed_by_{effect.rule}"] = effect.removed
            if effect.removed_true is not None:
                metadata[f"true_purchases_removed_by_{effect.rule}"] = effect.removed_true
        customers_n = view.con.execute(
            f"SELECT count(DISTINCT customer_key) FROM read_parquet('{store.asset_path('candidates', key)}')"
        ).fetchall()[0][0]
        metadata["customers"] = int(customers_n)
        metadata["candidates_per_customer_mean"] = round(rows / max(customers_n, 1), 2)
        if view.has_truth:
            truth = view.con.sql("SELECT customer_key, article_id FROM truth").df()
            union = view.con.sql("SELECT customer_key, article_id FROM union_candidates").df()
            kept = pd.read_parquet(store.asset_path("candidates", key), columns=["customer_key", "article_id"])
            metadata["recall_union"] = round(recall(union, truth), 4)
            metadata["recall_after_filters"] = round(recall(kept, truth), 4)
    metadata["seconds"] = watch.seconds
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "sql", "parquet"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY, *feature_assets, candidates],
)
def pair_features(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
    """Features of every surviving (customer, candidate): customer and article features, their
    transaction statistics, the customer's preference shares for the candidate's attributes,
    consistency (price, age, channel) and the retrieval scores and ranks. SQL: sql/pair_features.sql."""
    key = context.partition_key
    with stopwatch() as watch, week_view(context, store) as view:
        register_parquet(view.con, "candidates", store.require("candidates", key))
        relation = view.con.sql(load_sql("pair_features"), params={"cutoff": view.cutoff})
        rows = write_parquet(relation, store.asset_path("pair_features", key))
        columns = view.con.sql(f"DESCRIBE SELECT * FROM read_parquet('{store.asset_path('pair_features', key)}')").df()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "features": len(columns) - 2,
            "columns": dg.MetadataValue.md(", ".join(f"`{c}`" for c in columns["column_name"])),
            "seconds": watch.seconds,
        }
    )


class RankerConfig(dg.Config):
    objective: str = "lambdarank"
    training_weeks: int = 2
    negatives_per_customer: int = 30
    boost_rounds: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    seed: int = 0


def labelled_weeks(store: HMStore, week_key: str, wanted: int) -> list[str]:
    """The most recent earlier weeks (up to ``wanted``) whose pair features and truth both exist."""
    start = parse_week(week_key)
    found = []
    for offset in range(1, MAX_TRAINING_WEEKS + 1):
        earlier = (start - offset * WEEK).isoformat()
        if store.asset_path("pair_features", earlier).exists() and store.asset_path("transactions", earlier).exists():
            found.append(earlier)
        if len(found) == wanted:
            break
    return found


@dg.asset(
    group_name=GROUP,
    kinds={"lightgbm"},
    partitions_def=weekly_partitions_def,
    deps=[
        dg.AssetDep(pair_features, partition_mapping=previous_weeks(MAX_TRAINING_WEEKS)),
        dg.AssetDep("transactions", partition_mapping=previous_weeks(MAX_TRAINING_WEEKS)),
    ],
)
def ranker(context: dg.AssetExecutionContext, store: HMStore, config: RankerConfig) -> dg.MaterializeResult:
    """LightGBM ranker (lambdarank, or binary) trained on the previous weeks: their candidates and
    pair features as of their own cut-offs, labelled with what was bought in those weeks."""
    key = context.partition_key
    weeks = labelled_weeks(store, key, config.training_weeks)
    if len(weeks) < config.training_weeks:
        context.log.warning(f"{len(weeks)} labelled week(s) available of the {config.training_weeks} asked for: {weeks}")
    frames = []
    for week in weeks:
        pairs = pd.read_parquet(store.asset_path("pair_features", week))
        truth = pd.read_parquet(store.asset_path("transactions", week), columns=["customer_key", "article_id"])
        frames.append(ranking.training_rows(pairs, truth, config.negatives_per_customer, config.seed))
    rows = ranking.stack_weeks(frames)
    model_path = store.asset_path("ranker", key, ".txt")
    info_path = store.asset_path("ranker", key, ".json")
    metadata: dict = {"training_weeks": ", ".join(weeks) or "none", "objective": config.objective}
    if rows.empty or rows["label"].sum() == 0:
        context.log.warning("no labelled candidates to learn from: recommendations fall back to retriever agreement")
        model_path.unlink(missing_ok=True)
        with atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps({"trained": False, "weeks": weeks}))
        metadata["trained"] = False
        return dg.MaterializeResult(metadata=metadata)
    settings = ranking.RankerSettings(
        objective=config.objective,
        boost_rounds=config.boost_rounds,
        learning_rate=config.learning_rate,
        num_leaves=config.num_leaves,
        min_data_in_leaf=config.min_data_in_leaf,
        seed=config.seed,
    )
    with stopwatch() as watch:
        booster = ranking.train(rows, settings)
    with atomic_path(model_path) as tmp:
        ranking.save(booster, tmp)
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps({"trained": True, "weeks": weeks, "features": booster.feature_name()}))
    importance = ranking.importances(booster)
    metadata.update(
        {
            "trained": True,
            "training_rows": len(rows),
            "training_queries": int(rows["query"].nunique()),
            "positive_rate": round(float(rows["label"].mean()), 4),
            "features": len(booster.feature_name()),
            "feature_importance": markdown_table(importance.head(25), floatfmt=".3f"),
            "model_path": str(model_path),
            "seconds": watch.seconds,
        }
    )
    return dg.MaterializeResult(metadata=metadata)


def score_pairs(store: HMStore, key: str) -> pd.DataFrame:
    """customer_key, article_id, score for the week's pairs, by the week's ranker (or the fallback)."""
    pairs = pd.read_parquet(store.require("pair_features", key))
    info = json.loads(store.require("ranker", key, ".json").read_text())
    if info.get("trained"):
        scores = ranking.predict(ranking.load(store.require("ranker", key, ".txt")), pairs)
    else:
        scores = ranking.heuristic_score(pairs)
    return pd.DataFrame({"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": scores})


@dg.asset(
    group_name=GROUP,
    kinds={"lightgbm", "parquet", "csv"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY, pair_features, ranker],
)
def recommendations(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
    """Exactly 12 distinct articles for every customer in customers.csv, best first, plus the
    Kaggle submission CSV (customer_id, prediction)."""
    key = context.partition_key
    with stopwatch() as watch, week_view(context, store, with_features=False) as view:
        customers_frame = view.con.sql("SELECT customer_key, customer_id FROM customers").df()
        fallback = last_week_top(view.con, view.cutoff, 24)
    best = ranking.top_k(score_pairs(store, key))
    recs = ranking.fill_to_k(best, customers_frame["customer_key"].to_numpy(), fallback)
    write_parquet(recs, store.asset_path("recommendations", key))
    submission = kaggle_submission(recs, customers_frame)
    submission_path = store.asset_path("submission", key, ".csv")
    with atomic_path(submission_path) as tmp:
        submission.to_csv(tmp, index=False)
    from_ranker = int(recs["score"].notna().sum())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(recs),
            "customers": int(recs["customer_key"].nunique()),
            "share_from_ranker": round(from_ranker / max(len(recs), 1), 4),
            "submission_csv": dg.MetadataValue.path(str(submission_path)),
            "seconds": watch.seconds,
        }
    )


def kaggle_submission(recs: pd.DataFrame, customers_frame: pd.DataFrame) -> pd.DataFrame:
    ordered = recs.sort_values(["customer_key", "rank"], kind="mergesort")
    ordered = ordered.assign(article=ordered["article_id"].map(format_article_id))
    lists = ordered.groupby("customer_key", sort=False)["article"].agg(" ".join)
    out = customers_frame[["customer_key", "customer_id"]].copy()
    out["prediction"] = out["customer_key"].map(lists).fillna("")
    return out[["customer_id", "prediction"]]


ranking_assets = [candidates, pair_features, ranker, recommendations]
