"""Filtered union of candidates -> pair features -> LightGBM ranker -> 12 recommendations each."""


import json

import dagster as dg
import pandas as pd

from hm_assets import ranker as ranking
from hm_assets.assets.features import feature_assets
from hm_assets.assets.retrieval import candidate_assets
from hm_assets.assets.weekly import HISTORY, previous_weeks, week_view
from hm_assets.baselines import last_week_top
from hm_assets.candidates import add_effects, apply_rules, build_union, effects_table, filtered_candidates, found_true_pairs
from hm_assets.data_contract import format_article_id
from hm_assets.filters import RULE_NAMES, rules_by_name
from hm_assets.metadata import markdown_table, stopwatch
from hm_assets.partitions import weekly_partitions_def
from hm_assets.resources import HMStore
from hm_assets.retrievers.registry import retriever_names
from hm_assets.sql import load_sql
from hm_assets.shards import customer_shards
from hm_assets.store import atomic_path, parquet_appender
from hm_assets.weeks import WEEK, parse_week

GROUP = "ranking"
MAX_TRAINING_WEEKS = 8


class CandidateFilterConfig(dg.Config):
    rules: list[str] = list(RULE_NAMES)
    max_per_customer: int = 120
    # Empty: every registered retriever. A subset serves ablations and cheaper runs; the ranker
    # must then be trained on weeks built with the same subset.
    retrievers: list[str] = []


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "parquet"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY, *feature_assets, *candidate_assets],
)
def candidates(context: dg.AssetExecutionContext, store: HMStore, config: CandidateFilterConfig) -> dg.MaterializeResult:
    """Union of every retriever's candidates (their scores and ranks as columns), minus the
    business rules (each named and switchable), capped per customer by best retriever rank.
    Computed one customer shard at a time."""
    key = context.partition_key
    names = config.retrievers or retriever_names()
    unknown = sorted(set(names) - set(retriever_names()))
    if unknown:
        raise ValueError(f"unknown retriever(s) {unknown}; registered: {retriever_names()}")
    sources = {name: store.require(name, key) for name in names}
    rules = rules_by_name(config.rules)
    union_rows = customers_n = found_union = found_kept = 0
    effects: list = []
    with stopwatch() as watch, week_view(context, store, with_truth=True) as view:
        shards = customer_shards(view.con, store.customers_per_shard)
        with parquet_appender(store.asset_path("candidates", key)) as output:
            for shard in shards:
                union_rows += build_union(view.con, sources, shard.where())
                effects = add_effects(effects, apply_rules(view.con, rules, view.cutoff, view.has_truth))
                view.con.execute(
                    f"CREATE OR REPLACE TEMP TABLE kept AS {filtered_candidates(view.con, config.max_per_customer).sql_query()}"
                )
                output.append(view.con.sql("SELECT * FROM kept"))
                customers_n += view.con.execute("SELECT count(DISTINCT customer_key) FROM kept").fetchall()[0][0]
                if view.has_truth:
                    found_union += found_true_pairs(view.con, "union_candidates")
                    found_kept += found_true_pairs(view.con, "kept")
        rows = output.rows
        metadata: dict = {
            "dagster/row_count": rows,
            "union_rows": int(union_rows),
            "customer_shards": len(shards),
            "customers": int(customers_n),
            "candidates_per_customer_mean": round(rows / max(customers_n, 1), 2),
            "rules_enabled": ", ".join(config.rules) or "none",
            "rule_effects": markdown_table(effects_table(effects)),
        }
        for effect in effects:
            metadata[f"removed_by_{effect.rule}"] = effect.removed
            if effect.removed_true is not None:
                metadata[f"true_purchases_removed_by_{effect.rule}"] = effect.removed_true
        if view.has_truth:
            purchases = view.con.execute("SELECT count(*) FROM (SELECT DISTINCT customer_key, article_id FROM truth)").fetchall()[0][0]
            metadata["recall_union"] = round(found_union / max(purchases, 1), 4)
            metadata["recall_after_filters"] = round(found_kept / max(purchases, 1), 4)
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
    consistency (price, age, channel) and the retrieval scores and ranks. SQL: sql/pair_features.sql.
    Computed one customer shard at a time."""
    key = context.partition_key
    source = store.require("candidates", key)
    target = store.asset_path("pair_features", key)
    with stopwatch() as watch, week_view(context, store) as view:
        shards = customer_shards(view.con, store.customers_per_shard)
        with parquet_appender(target) as output:
            for shard in shards:
                view.con.execute(
                    f"CREATE OR REPLACE TEMP TABLE candidates AS SELECT * FROM read_parquet('{source}') WHERE {shard.where()}"
                )
                output.append(view.con.sql(load_sql("pair_features"), params={"cutoff": view.cutoff}))
        columns = view.con.sql(f"DESCRIBE SELECT * FROM read_parquet('{target}')").df()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": output.rows,
            "customer_shards": len(shards),
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
    con = store.connect()
    for week in weeks:
        truth = pd.read_parquet(store.asset_path("transactions", week), columns=["customer_key", "article_id"])
        pairs = con.sql(
            f"SELECT * FROM read_parquet('{store.asset_path('pair_features', week)}') "
            f"SEMI JOIN (SELECT DISTINCT customer_key FROM read_parquet('{store.asset_path('transactions', week)}')) "
            f"USING (customer_key)"
        ).df()
        frames.append(ranking.training_rows(pairs, truth, config.negatives_per_customer, config.seed))
    con.close()
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


def pair_scorer(store: HMStore, key: str):
    """The week's ranker as a function of pair features (or the fallback when it has no model),
    and the feature columns it reads."""
    info = json.loads(store.require("ranker", key, ".json").read_text())
    if info.get("trained"):
        booster = ranking.load(store.require("ranker", key, ".txt"))
        return (lambda pairs: ranking.predict(booster, pairs)), booster.feature_name()
    return ranking.heuristic_score, list(ranking.HEURISTIC_FEATURES)


@dg.asset(
    group_name=GROUP,
    kinds={"lightgbm", "parquet", "csv"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY, pair_features, ranker],
)
def recommendations(context: dg.AssetExecutionContext, store: HMStore) -> dg.MaterializeResult:
    """Exactly 12 distinct articles for every customer in customers.csv, best first, plus the
    Kaggle submission CSV (customer_id, prediction). Scored one customer shard at a time."""
    key = context.partition_key
    pairs_path = store.require("pair_features", key)
    score, features = pair_scorer(store, key)
    columns = ", ".join(["customer_key", "article_id", *features])
    submission_path = store.asset_path("submission", key, ".csv")
    from_ranker = 0
    with stopwatch() as watch, week_view(context, store, with_features=False) as view:
        fallback = last_week_top(view.con, view.cutoff, 24)
        # Scoring holds a shard's pair features in pandas: a quarter of the usual shard size.
        shards = customer_shards(view.con, max(1, store.customers_per_shard // 4))
        with parquet_appender(store.asset_path("recommendations", key)) as output, atomic_path(submission_path) as csv:
            for shard in shards:
                customers_frame = view.con.sql(
                    f"SELECT customer_key, customer_id FROM customers WHERE {shard.where()} ORDER BY customer_key"
                ).df()
                pairs = view.con.sql(f"SELECT {columns} FROM read_parquet('{pairs_path}') WHERE {shard.where()}").df()
                scored = pd.DataFrame(
                    {"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": score(pairs)}
                )
                del pairs
                recs = ranking.fill_to_k(ranking.top_k(scored), customers_frame["customer_key"].to_numpy(), fallback)
                from_ranker += int(recs["score"].notna().sum())
                output.append(recs)
                kaggle_submission(recs, customers_frame).to_csv(csv, mode="a", header=shard.index == 0, index=False)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": output.rows,
            "customers": output.rows // ranking.K,
            "customer_shards": len(shards),
            "share_from_ranker": round(from_ranker / max(output.rows, 1), 4),
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
