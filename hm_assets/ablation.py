"""Retriever ablation: MAP@12 of the whole ranking stage with and without each retriever.

For a target week with known truth, the stored retriever outputs of that week and of its
training weeks are re-combined without the retriever under test: filtered union, pair features
and a freshly trained ranker, exactly as the assets do it, restricted to the customers who bought
in each week (the only ones MAP@12 and the ranker's training data look at).

    python -m hm_assets.ablation --week 2026-11-18 [--week ...] [--training-weeks 2] [--home HM_HOME]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from hm_assets import ranker as ranking
from hm_assets.assets.weekly import FEATURE_TABLES
from hm_assets.candidates import apply_rules, build_union, filtered_candidates
from hm_assets.filters import RULES
from hm_assets.history import open_week, register_parquet
from hm_assets.metrics import map_at_k
from hm_assets.sql import load_sql
from hm_assets.store import HMStore
from hm_assets.weeks import WEEK, parse_week


def buyers_pairs(store: HMStore, week: str, retrievers: list[str], week_keys: list[str], max_per_customer: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pair features of the week's buyers built from ``retrievers`` only, and the week's truth."""
    with open_week(store, week, week_keys, with_truth=True) as view:
        for table in FEATURE_TABLES:
            register_parquet(view.con, table, store.require(table, week))
        buyers = "customer_key IN (SELECT customer_key FROM truth)"
        build_union(view.con, {name: store.require(name, week) for name in retrievers}, buyers)
        apply_rules(view.con, list(RULES), view.cutoff, has_truth=False)
        view.con.execute(f"CREATE OR REPLACE TEMP TABLE candidates AS {filtered_candidates(view.con, max_per_customer).sql_query()}")
        pairs = view.con.sql(load_sql("pair_features"), params={"cutoff": view.cutoff}).df()
        truth = view.con.sql("SELECT customer_key, article_id FROM truth").df()
    return pairs, truth


def map_with(store: HMStore, week: str, retrievers: list[str], training_weeks: int, week_keys: list[str], max_per_customer: int = 120) -> float:
    start = parse_week(week)
    frames = []
    for offset in range(1, training_weeks + 1):
        earlier = (start - offset * WEEK).isoformat()
        pairs, truth = buyers_pairs(store, earlier, retrievers, week_keys, max_per_customer)
        frames.append(ranking.training_rows(pairs, truth, 30, 0))
    booster = ranking.train(ranking.stack_weeks(frames), ranking.RankerSettings())
    pairs, truth = buyers_pairs(store, week, retrievers, week_keys, max_per_customer)
    scored = pd.DataFrame({"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": ranking.predict(booster, pairs)})
    return map_at_k(ranking.top_k(scored), truth)


def ablation(store: HMStore, week: str, retrievers: list[str], training_weeks: int, week_keys: list[str]) -> pd.DataFrame:
    evaluation = json.loads(store.require("evaluation", week, ".json").read_text())
    full = map_with(store, week, retrievers, training_weeks, week_keys)
    rows = []
    for name in retrievers:
        without = map_with(store, week, [r for r in retrievers if r != name], training_weeks, week_keys)
        rows.append(
            {
                "week": week,
                "retriever": name,
                "recall": evaluation.get(f"recall_{name}"),
                "unique_recall": evaluation.get(f"unique_recall_{name}"),
                "map12_all": full,
                "map12_without": without,
                "map12_delta": full - without,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week", action="append", required=True)
    parser.add_argument("--training-weeks", type=int, default=2)
    parser.add_argument("--home", default=os.environ.get("HM_HOME", ""))
    parser.add_argument("--out", help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    from hm_assets.partitions import weekly_partitions_def
    from hm_assets.retrievers.registry import retriever_names

    store = HMStore(home=args.home)
    keys = weekly_partitions_def.get_partition_keys()
    table = pd.concat([ablation(store, w, retriever_names(), args.training_weeks, keys) for w in args.week])
    text = table.to_markdown(index=False, floatfmt=".5f")
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
