"""Evaluation of each week with known truth, and the cross-week backtest summary."""


import json

import dagster as dg
import pandas as pd

from hm_assets.defs.assets.weekly import history_and_target_week, week_view
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.pipeline.evaluation.evaluation import ORACLE_FILE, buyers_rows, evaluate_week, load_oracle, plot_png, png_markdown, quality_table
from hm_assets.pipeline.retrieval.registry import retriever_names
from hm_assets.platform.metadata import markdown_table, stopwatch

GROUP = "evaluation"
ORACLE_METADATA = ("map12_oracle", "ranker_vs_oracle", "oracle_vs_trending", "oracle_recall_union",
                   "oracle_recall_after_filters", "oracle_recall_ranker")


def build_evaluation_asset(weeks: WeekPartitions) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"python", "json"},
        partitions_def=weeks.weekly,
        deps=[history_and_target_week(weeks), "recommendations", "candidates", *retriever_names()],
    )
    def evaluation(context: dg.AssetExecutionContext, store: HMStore, dataset: HMDataset) -> dg.MaterializeResult:
        """MAP@12 of the ranker next to the baselines (last week's top-12, trending), each retriever's
        recall, unique recall and MAP@12 alone, and the recall of the union before and after filters.
        Where the data set ships an oracle (hm-synth's ``oracle.csv``: its own model's expected top-12),
        also the oracle's MAP@12, ``ranker / oracle`` and the share of the oracle's 12 each stage keeps."""
        return evaluate_week_asset(context, store, dataset, weeks)

    return evaluation


def evaluate_week_asset(
    context: dg.AssetExecutionContext, store: HMStore, dataset: HMDataset, weeks: WeekPartitions
) -> dg.MaterializeResult:
    key = context.partition_key
    target = store.asset_path("evaluation", key, ".json")
    with stopwatch() as watch, week_view(context, store, weeks, with_truth=True, with_features=False) as view:
        if not view.has_truth:
            with store.atomic_path(target) as tmp:
                tmp.write_text(json.dumps({"week": key, "has_truth": False}))
            return dg.MaterializeResult(metadata={"has_truth": False, "note": "live week: no purchases observed yet"})
        truth = view.con.sql("SELECT customer_key, article_id FROM truth").df()
        recs = buyers_rows(view.con, store.require("recommendations", key))
        oracle = load_oracle(view.con, dataset.root / ORACLE_FILE, key)
        metrics = evaluate_week(
            view.con,
            view.cutoff,
            truth,
            recs,
            {name: store.require(name, key) for name in retriever_names()},
            store.require("candidates", key),
            oracle,
        )
    metrics.update({"week": key, "has_truth": True})
    with store.atomic_path(target) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    table = quality_table(metrics, retriever_names())
    context.log.info("\n" + table.to_string(index=False))
    return dg.MaterializeResult(
        metadata={
            "has_truth": True,
            "map12_ranker": metrics["map12_ranker"],
            "map12_trending": metrics["map12_trending"],
            "map12_last_week_top12": metrics["map12_last_week_top12"],
            "ranker_vs_trending": metrics["ranker_vs_trending"],
            **{name: metrics[name] for name in ORACLE_METADATA if name in metrics},
            "recall_union": metrics["recall_union"],
            "recall_after_filters": metrics["recall_after_filters"],
            "buyers": metrics["buyers"],
            "quality": markdown_table(table),
            "seconds": watch.seconds,
        }
    )


def load_evaluations(store: HMStore) -> pd.DataFrame:
    rows = []
    for week in store.partitions("evaluation", ".json"):
        record = json.loads(store.require("evaluation", week, ".json").read_text())
        if record.get("has_truth"):
            rows.append(record)
    return pd.DataFrame(rows)


@dg.asset(group_name=GROUP, kinds={"python", "matplotlib"}, deps=["evaluation"])
def backtest_summary(store: HMStore) -> dg.MaterializeResult:
    """MAP@12 per evaluated week: the ranker against the baselines, as a table and a plot."""
    summary = load_evaluations(store)
    if summary.empty:
        return dg.MaterializeResult(metadata={"weeks": 0, "note": "no evaluated week yet"})
    columns = ["week", "map12_ranker", "map12_trending", "map12_last_week_top12", "ranker_vs_trending", "recall_after_filters"]
    columns += [c for c in ("map12_oracle", "ranker_vs_oracle", "oracle_recall_after_filters") if c in summary]
    summary = summary.sort_values("week")[columns]
    png = plot_png(summary)
    plot_path = store.asset_path("backtest_summary", None, ".png")
    with store.atomic_path(plot_path) as tmp:
        tmp.write_bytes(png)
    with store.atomic_path(store.asset_path("backtest_summary", None, ".csv")) as tmp:
        summary.to_csv(tmp, index=False)
    return dg.MaterializeResult(
        metadata={
            "weeks": len(summary),
            "mean_map12_ranker": round(float(summary["map12_ranker"].mean()), 6),
            "mean_map12_trending": round(float(summary["map12_trending"].mean()), 6),
            "min_ranker_vs_trending": round(float(summary["ranker_vs_trending"].min()), 3),
            **({"mean_ranker_vs_oracle": round(float(summary["ranker_vs_oracle"].mean()), 3)}
               if "ranker_vs_oracle" in summary and summary["ranker_vs_oracle"].notna().any() else {}),
            "per_week": markdown_table(summary),
            "plot": dg.MetadataValue.md(png_markdown(png, "MAP@12 per week")),
            "plot_path": dg.MetadataValue.path(store.relative(plot_path)),
        }
    )

