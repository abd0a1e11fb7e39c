"""What the ranker's prescreen costs in MAP@12 and saves in scoring, with each home's stored ranker.

Every customer's pair features of the week, computed from the week's stored candidates, are scored
by the whole model, then for each (rounds, keep) the first ``rounds`` trees pick each customer's
``keep`` best candidates and only those keep their (whole-model) scores: so only the prescreen
changes the lists. Reported per home and setting: the share of pairs the whole model still scores,
the trees evaluated per pair against scoring everything, the share of customers whose 12 are
identical (same articles, same order), and MAP@12 of the week's buyers. Then the recommendations
path itself (the pair features computed from the stored candidates in Arrow batches,
``pair_feature_batches``, scored by ``recommend_lists_from_batches``) is timed with and without the
default prescreen.

    python benchmarks/bench_prescreen.py --week 2026-11-18 --home /tmp/hmq/home-world-loyal-seed0 [--home ...] \\
        [--rounds 20 40 80] [--keep 24 36 48]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from computed_pairs import computed_pairs
from host import machine

from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.evaluation.metrics import map_at_k
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.stage import customer_chunks, recommend_lists_from_batches


def scored_pairs(store: HMStore, week: str, scorer: ranker.PairScorer) -> tuple[pd.DataFrame, np.ndarray]:
    """Every customer's pairs (keys) and their feature matrix, in the pair features' order."""
    keys, articles, matrices = [], [], []
    with computed_pairs(store, week) as source:
        for customer, article, matrix in customer_chunks(source.batches(scorer.features), scorer.features):
            keys.append(customer)
            articles.append(article)
            matrices.append(matrix.copy())  # the chunks share one buffer
    pairs = pd.DataFrame({"customer_key": np.concatenate(keys), "article_id": np.concatenate(articles)})
    return pairs, np.concatenate(matrices)


def lists(pairs: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    kept = ~np.isnan(scores)
    return ranker.top_k(pairs[kept].assign(score=scores[kept]))


def timed_path(store: HMStore, week: str, scorer: ranker.PairScorer, customers: np.ndarray, fallback: list[int]) -> tuple[float, pd.DataFrame]:
    started = time.perf_counter()
    with computed_pairs(store, week) as source:
        recs = recommend_lists_from_batches(source.scored_batches(scorer.features), scorer, customers, fallback)
    seconds = time.perf_counter() - started
    return seconds, recs


def measure(home: str, week: str, rounds: list[int], keeps: list[int]) -> tuple[list[dict], dict]:
    store = HMStore(home=home)
    whole = ranker.stored_scorer(store, week)
    if not isinstance(whole, ranker.PairScorer):
        raise SystemExit(f"{home}: the ranker of {week} is not trained")
    whole = ranker.PairScorer(whole.booster, store.scratch_dir() / "compiled")  # no prescreen
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    buyers = set(truth["customer_key"])
    pairs, matrix = scored_pairs(store, week, whole)
    full = whole.score_matrix(matrix)
    base = lists(pairs, full)
    base_lists = base.groupby("customer_key")["article_id"].agg(tuple)
    base_map = map_at_k(base[base["customer_key"].isin(buyers)], truth)
    trees = whole.booster.current_iteration()
    rows = []
    for first_rounds in rounds:
        first = ranker.compile_model(whole.booster, store.scratch_dir() / "compiled", first_rounds).predict(matrix, n_jobs=2)
        for keep in keeps:
            kept = ranker.best_per_customer(pairs["customer_key"].to_numpy(), pairs["article_id"].to_numpy(), first, keep)
            recs = lists(pairs, np.where(kept, full, np.nan))
            same = (recs.groupby("customer_key")["article_id"].agg(tuple) == base_lists).mean()
            value = map_at_k(recs[recs["customer_key"].isin(buyers)], truth)
            rows.append({
                "home": home.rstrip("/").split("/")[-1], "rounds": first_rounds, "keep": keep,
                "pairs scored whole": round(float(kept.mean()), 3),
                "trees per pair vs all": round(first_rounds / trees + float(kept.mean()), 3),
                "identical 12s": round(float(same), 4),
                "MAP@12 all scored": round(base_map, 5), "MAP@12 prescreen": round(value, 5),
                "difference": round(value - base_map, 5),
            })
    customers = np.unique(pairs["customer_key"].to_numpy())
    fallback = base["article_id"].value_counts().index[:24].tolist()
    default = ranker.RankerConfig().prescreen()
    screened = ranker.PairScorer(whole.booster, store.scratch_dir() / "compiled", prescreen=default)
    timed_path(store, week, screened, customers[:100], fallback)  # warm the file cache
    seconds_whole, _ = timed_path(store, week, whole, customers, fallback)
    seconds_screened, _ = timed_path(store, week, screened, customers, fallback)
    timing = {
        "home": rows[0]["home"], "pairs": len(pairs), "customers": len(customers), "trees": trees,
        "recommendations path, all scored (s)": round(seconds_whole, 1),
        f"with prescreen {default.rounds}/{default.keep} (s)": round(seconds_screened, 1),
    }
    return rows, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", action="append", required=True)
    parser.add_argument("--week", required=True)
    parser.add_argument("--rounds", nargs="+", type=int, default=[20, 40, 80])
    parser.add_argument("--keep", nargs="+", type=int, default=[24, 36, 48])
    args = parser.parse_args()
    print(machine())
    tables, timings = [], []
    for home in args.home:
        rows, timing = measure(home, args.week, args.rounds, args.keep)
        tables.extend(rows)
        timings.append(timing)
    print(pd.DataFrame(tables).to_markdown(index=False))
    print()
    print(pd.DataFrame(timings).to_markdown(index=False))


if __name__ == "__main__":
    main()
