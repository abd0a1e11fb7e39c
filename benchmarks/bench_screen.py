"""Would a learned screen before the pair features keep fewer candidates at no cost? Measured with
each home's stored ranker held fixed.

The cap keeps each customer's 120 candidates in a calibrated order (hit rate per retriever and rank
band, ``CAP_ORDER``). A learned screen would instead order them by a small LightGBM model on what is
cheap to compute before the pair features: the candidates' own columns (every retriever's score and
rank), the single-key feature tables' columns, and, as a third variant, the two taste dot products.
Each screen is trained on the previous week's buyers' pairs (their pair features computed from the
stored candidates; label: bought that week) and applied to the week's buyers' pairs; for each
``keep`` the stored ranker then scores only each customer's ``keep`` best by that order. Reported:
MAP@12 of the week's buyers against every candidate scored, for the calibrated order and each
screen. The pairs saved are ``1 - keep / 120`` of the capped candidates (the customers with fewer
keep all of theirs).

Nothing in the pipeline uses such a screen yet: this measures whether one would pay.

    python benchmarks/bench_screen.py --week 2026-11-18 --home /tmp/hmq/home-world-loyal-seed0 [--home ...] \\
        [--keep 30 40 60 80 100]
"""

from __future__ import annotations

import argparse
import time

import lightgbm as lgb
import pandas as pd

from bench_lapsed_cap import buyers_scored
from computed_pairs import computed_pairs
from host import machine

from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.evaluation.metrics import map_at_k
from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.ranking.ranker import label, top_k
from hm_assets.platform.weeks import WEEK, parse_week

# Pair features computed from single-key tables alone (no history join): cheap before the pair features.
DERIVED = ["trend_1w_vs_prev", "price_vs_customer_median", "price_vs_customer_max", "age_vs_buyers_mean",
           "age_gap_to_buyers", "channel_gap"]
TASTE = ["taste_long", "taste_recent"]


def cheap_columns(store: HMStore, week: str) -> list[str]:
    """The candidates' columns, then those of the week's single-key feature tables, as the pair features name them."""
    nobody = pd.DataFrame({"customer_key": pd.Series(dtype="int64")})
    with computed_pairs(store, week, nobody) as source:
        pairs = source.columns()
        tables = set()
        for table in FEATURE_TABLES:
            tables |= set(source.con.sql(f"SELECT * FROM {table} LIMIT 0").columns)
    own = [c for c in pairs if c.startswith(("score_", "rank_")) or c in ("n_retrievers", "best_rank")]
    return own + [c for c in pairs if c in tables and c not in ("customer_key", "article_id")] + DERIVED


def buyers_pairs(store: HMStore, week: str, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The week's buyers' pairs, computed from the stored candidates, with ``columns`` (as FLOAT) and
    ``label``, and the week's purchases."""
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    frames = []
    with computed_pairs(store, week, truth) as source:
        for batch in source.batches(columns):
            frames.append(batch.to_pandas().astype({c: "float32" for c in columns}))
    return label(pd.concat(frames, ignore_index=True), truth), truth


def screens(store: HMStore, week: str) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Each variant's screen score of the week's buyers' pairs (trained on the previous week)."""
    previous = (parse_week(week) - WEEK).isoformat()
    cheap = cheap_columns(store, week)
    own = [c for c in cheap if c.startswith(("score_", "rank_")) or c in ("n_retrievers", "best_rank")]
    variants = {"candidates' columns": own, "+ single-key tables": cheap, "+ taste": cheap + TASTE}
    train, _ = buyers_pairs(store, previous, cheap + TASTE)
    test, _ = buyers_pairs(store, week, cheap + TASTE)
    out = {}
    for name, columns in variants.items():
        model = lgb.train(
            {"objective": "binary", "learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 50, "verbose": -1,
             "num_threads": 2, "seed": 0, "deterministic": True},
            lgb.Dataset(train[columns], train["label"]), 60,
        )
        out[name] = test[["customer_key", "article_id"]].assign(screen=model.predict(test[columns]))
    return out, cheap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", action="append", required=True)
    parser.add_argument("--week", required=True)
    parser.add_argument("--keep", nargs="+", type=int, default=[30, 40, 60, 80, 100])
    args = parser.parse_args()
    print(machine())
    rows = []
    for home in args.home:
        started = time.perf_counter()
        store = HMStore(home=home)
        truth = pd.read_parquet(store.require("transactions", args.week), columns=["customer_key", "article_id"])
        pairs = buyers_scored(store, args.week, truth)
        base = map_at_k(top_k(pairs[["customer_key", "article_id", "score"]]), truth)
        scored, cheap = screens(store, args.week)
        orders = {"calibrated cap order": pairs["priority_rank"]}
        for name, screen in scored.items():
            merged = pairs[["customer_key", "article_id"]].merge(screen, on=["customer_key", "article_id"], how="left")
            orders[name] = merged.groupby("customer_key")["screen"].rank(ascending=False, method="first").to_numpy()
        for keep in args.keep:
            row = {"home": home.rstrip("/").rsplit("/", 1)[-1], "keep": keep, "every candidate": round(base, 5)}
            for name, order in orders.items():
                kept = pairs.loc[order <= keep, ["customer_key", "article_id", "score"]]
                row[name] = f"{map_at_k(top_k(kept), truth) - base:+.5f}"
            rows.append(row)
        print(f"{home}: {pairs['customer_key'].nunique():,} buyers, {len(pairs):,} pairs, {len(cheap)} cheap columns, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
