"""Two ranker settings timed alternately in one process: training on one labelled week's kept sample,
then the recommendations path (pair features computed from the stored candidates, prescreen, scoring,
lists) of the first customers of a week. Across sessions this machine's speed drifts by 10% and more;
alternating in one process is how a 5-10% change of the week's scoring can be seen at all.

    HM_DATA_DIR=/tmp/hm_full HM_HOME=/tmp/bench_full HM_FIRST_WEEK=2020-08-12 \\
        python benchmarks/bench_ranker_ab.py --week 2020-09-16 --sample-week 2020-09-09 \\
        --a boost_rounds=400,learning_rate=0.025,keep=24 --b boost_rounds=300,learning_rate=0.0333,keep=20

Settings are ``RankerSettings`` fields plus ``keep`` and ``rounds`` (the prescreen); a field not named
keeps the pipeline's default (``RankerConfig``). The sample is
``--sample-week``'s as the pipeline's ranker reads it (``samples.week_training_rows``: the kept one,
else drawn and kept).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from computed_pairs import computed_pairs

from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.samples import week_training_rows
from hm_assets.pipeline.ranking.stage import recommend_lists_from_batches
from hm_assets.platform.history import stored_history_weeks


def parse(text: str, config: ranker.RankerConfig) -> tuple[ranker.RankerSettings, ranker.Prescreen]:
    """One side's settings: the pipeline's ranker settings with the fields ``text`` names replaced."""
    values = dict(item.split("=", 1) for item in text.split(","))
    screen = ranker.Prescreen(int(values.pop("rounds", config.prescreen_rounds)), int(values.pop("keep", config.prescreen_keep)))
    defaults = config.settings()
    typed = {name: type(getattr(defaults, name))(value) for name, value in values.items()}
    return replace(defaults, **typed), screen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", required=True)
    parser.add_argument("--sample-week", required=True)
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = HMStore()
    config = ranker.RankerConfig()
    rows, kept = week_training_rows(
        store, args.sample_week, stored_history_weeks(store), config.negatives_per_customer, config.seed, config.max_rows_per_week
    )
    print(f"sample of {args.sample_week}: {len(rows):,} rows ({'kept' if kept else 'drawn'})", flush=True)
    sides = {"a": parse(args.a, config), "b": parse(args.b, config)}
    models = {}
    for _ in range(args.repeats):
        for side, (settings, _screen) in sides.items():
            started = time.perf_counter()
            models[side] = ranker.train(rows, settings)
            print(f"training {side} ({settings.boost_rounds} trees): {time.perf_counter() - started:.1f} s", flush=True)
    keys = np.sort(pd.read_parquet(store.require("customers"), columns=["customer_key"])["customer_key"].to_numpy())
    customers = pd.DataFrame({"customer_key": keys[: args.customers]})
    fallback = rows["article_id"].value_counts().index[:12].astype(int).tolist()
    scorers = {side: ranker.PairScorer(models[side], store.scratch_dir() / "compiled", prescreen=screen) for side, (_s, screen) in sides.items()}

    def path(scorer: ranker.PairScorer) -> float:
        started = time.perf_counter()
        with computed_pairs(store, args.week, customers) as source:
            recommend_lists_from_batches(source.scored_batches(scorer.features), scorer, customers["customer_key"].to_numpy(), fallback)
        return time.perf_counter() - started

    for scorer in scorers.values():
        path(scorer)  # compile the model, warm the file cache
    for _ in range(args.repeats):
        for side, scorer in scorers.items():
            print(f"recommendations path {side}, {len(customers):,} customers: {path(scorer):.2f} s", flush=True)


if __name__ == "__main__":
    main()
