"""Retriever ablation: MAP@12 of the whole ranking stage with and without each retriever.

For a target week with known truth, the stored retriever outputs of that week and of its
training weeks are re-combined without the retriever under test: filtered union, pair features
and a freshly trained ranker, exactly as the assets do it, restricted to the customers who bought
in each week (the only ones MAP@12 and the ranker's training data look at).

    python -m hm_assets.pipeline.evaluation.ablation --week 2026-11-18 [--week ...] [--training-weeks 2] [--seeds 3] \
        [--group content=image_similar,text_similar,attribute_similar] [--home HM_HOME]

Pair features the same way, from the ranker's kept training samples and the week's buyers' pair
features computed from its stored candidates (only the ranker is retrained, with the pipeline's
default settings):

    python -m hm_assets.pipeline.evaluation.ablation --week 2026-11-18 --features taste=taste_long,taste_recent [--seeds 3]

The ranker's training settings the same way (each variant against the defaults, on the same samples;
a variant of the sampling settings, e.g. a smaller row budget, on its own sample of the same weeks):

    python -m hm_assets.pipeline.evaluation.ablation --week 2026-11-18 --settings ff05=feature_fraction:0.5 [--seeds 3]
    python -m hm_assets.pipeline.evaluation.ablation --week 2020-09-16 --settings rows500k=max_rows_per_week:500000 --seeds 2

The ranker's own randomness (negative sampling, bagging) moves MAP@12 by about 0.001 between
seeds on the small preset, as much as a weak retriever adds: ``--seeds`` averages it out and
reports the spread of the paired differences.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.evaluation.metrics import map_at_k
from hm_assets.pipeline.features.taste import read_article_taste
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.candidates import DEFAULT_CAP, CandidateCap, previous_week_calibration
from hm_assets.pipeline.ranking.filters import RULES
from hm_assets.pipeline.ranking.samples import SAMPLE_INPUTS, labelled_weeks, training_sample, week_pairs
from hm_assets.pipeline.ranking.stage import pair_features_frame, select_candidates
from hm_assets.platform.history import open_week, register_parquet, stored_history_weeks
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import WEEK, parse_week

# The pipeline's ranker as configured by default: the ablations retrain it with and without a part.
RANKER = ranker.RankerConfig()


def buyers_pairs(
    store: HMStore, week: str, retrievers: list[str], week_keys: list[str], cap: CandidateCap, calibrated: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pair features of the week's buyers built from ``retrievers`` only, and the week's truth."""
    calibration = previous_week_calibration(store, week, retrievers) if calibrated else None
    with open_week(store, week, week_keys, with_truth=True) as view:
        for table in FEATURE_TABLES:
            register_parquet(view.con, table, store.require(table, week))
        buyers = "customer_key IN (SELECT customer_key FROM truth)"
        sources = {name: store.require(name, week) for name in retrievers}
        select_candidates(view.con, sources, list(RULES), view.cutoff, cap, calibration, buyers)
        pairs = pair_features_frame(view.con, view.cutoff, read_article_taste(store.require("article_taste", week)))
        truth = view.con.sql("SELECT customer_key, article_id FROM truth").df()
    return pairs, truth


def map_with(
    store: HMStore,
    week: str,
    retrievers: list[str],
    training_weeks: int,
    week_keys: list[str],
    cap: CandidateCap = DEFAULT_CAP,
    calibrated: bool = True,
    seeds: Sequence[int] = (0,),
) -> list[float]:
    """MAP@12 of ``week`` with a ranker trained per seed (negative sampling and LightGBM) on the
    ``training_weeks`` before it, everything built from ``retrievers`` only."""
    start = parse_week(week)
    labelled = [
        buyers_pairs(store, (start - offset * WEEK).isoformat(), retrievers, week_keys, cap, calibrated)
        for offset in range(1, training_weeks + 1)
    ]
    pairs, truth = buyers_pairs(store, week, retrievers, week_keys, cap, calibrated)
    maps = []
    for seed in seeds:
        rows = ranker.stack_weeks(
            [
                ranker.within_budget(ranker.training_rows(p, t, RANKER.negatives_per_customer, seed), RANKER.max_rows_per_week, seed)
                for p, t in labelled
            ]
        )
        booster = ranker.train(rows, RANKER.settings(seed))
        scored = pd.DataFrame(
            {
                "customer_key": pairs["customer_key"],
                "article_id": pairs["article_id"],
                "score": ranker.PairScorer(booster, store.scratch_dir() / "compiled", prescreen=RANKER.prescreen())(pairs),
            }
        )
        maps.append(map_at_k(ranker.top_k(scored), truth))
    return maps


def ablation(
    store: HMStore,
    week: str,
    retrievers: list[str],
    training_weeks: int,
    week_keys: list[str],
    groups: dict[str, list[str]] | None = None,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Per retriever (and per named group of retrievers): MAP@12 with everything and without it,
    averaged over the ranker seeds, with the spread of the paired differences."""
    evaluation = json.loads(store.require("evaluation", week, ".json").read_text())
    full = np.array(map_with(store, week, retrievers, training_weeks, week_keys, seeds=seeds))
    removals = {name: [name] for name in retrievers} | (groups or {})
    rows = []
    for label, removed in removals.items():
        kept = [r for r in retrievers if r not in removed]
        without = np.array(map_with(store, week, kept, training_weeks, week_keys, seeds=seeds))
        rows.append(
            {
                "week": week,
                "without": label,
                "recall": evaluation.get(f"recall_{label}"),
                "unique_recall": evaluation.get(f"unique_recall_{label}"),
                **compared(full, without),
            }
        )
    return pd.DataFrame(rows)


def compared(full: np.ndarray, without: np.ndarray) -> dict:
    """MAP@12 with everything and without a part (one value per ranker seed), and their paired difference."""
    delta = full - without
    return {
        "map12_all": full.mean(),
        "map12_without": without.mean(),
        "map12_delta": delta.mean(),
        "delta_sd": delta.std(ddof=1) if len(delta) > 1 else float("nan"),
        "seeds": len(full),
    }


def feature_ablation(
    store: HMStore,
    week: str,
    groups: dict[str, list[str]],
    week_keys: list[str],
    seeds: Sequence[int] = (0,),
    training_weeks: int | None = None,
) -> pd.DataFrame:
    """Per named group of pair features: MAP@12 of ``week`` with the ranker retrained (per seed) on
    the training samples of its labelled weeks (default: the pipeline's number) with and without
    those columns. Reads the pipeline's outputs only; nothing upstream of the ranker is rebuilt."""
    configurations = {"nothing": ([], RANKER), **{label: (dropped, RANKER) for label, dropped in groups.items()}}
    results = retrained(store, week, configurations, week_keys, seeds, training_weeks)
    full = np.array(results["nothing"].maps)
    return pd.DataFrame(
        [
            {"week": week, "without": label, "features": ", ".join(dropped), **compared(full, np.array(results[label].maps))}
            for label, dropped in groups.items()
        ]
    )


# The training settings a comparison may change on the pipeline's sample of the labelled weeks.
TRAINING_SETTINGS = ("objective", "boost_rounds", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
                     "prescreen_rounds", "prescreen_keep")
# The sampling settings a comparison may change: such a variant learns from its own sample (kept as
# the pipeline keeps its own), drawn with the same seed.
SAMPLE_SETTINGS = ("negatives_per_customer", "max_rows_per_week")


def settings_ablation(
    store: HMStore,
    week: str,
    variants: dict[str, dict],
    week_keys: list[str],
    seeds: Sequence[int] = (0,),
    training_weeks: int | None = None,
) -> pd.DataFrame:
    """Per named variant of the ranker's training or sampling settings (``TRAINING_SETTINGS``,
    ``SAMPLE_SETTINGS`` -> value): MAP@12 of ``week``, the training rows and the training's seconds,
    against the pipeline's defaults, each retrained per seed on the kept training samples."""
    allowed = (*TRAINING_SETTINGS, *SAMPLE_SETTINGS)
    for label, changes in variants.items():
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise ValueError(f"variant {label!r}: {unknown} are not training or sampling settings; choose from {allowed}")
    configurations = {"defaults": ([], RANKER)} | {
        label: ([], RANKER.model_copy(update=changes)) for label, changes in variants.items()
    }
    results = retrained(store, week, configurations, week_keys, seeds, training_weeks)
    base = results["defaults"]
    return pd.DataFrame(
        [
            {
                "week": week,
                "variant": label,
                "settings": ", ".join(f"{k}={v}" for k, v in changes.items()),
                **compared(np.array(results[label].maps), np.array(base.maps)),
                "training_rows_defaults": np.mean(base.rows),
                "training_rows": np.mean(results[label].rows),
                "train_seconds_defaults": np.mean(base.seconds),
                "train_seconds": np.mean(results[label].seconds),
            }
            for label, changes in variants.items()
        ]
    ).rename(columns={"map12_all": "map12_variant", "map12_without": "map12_defaults"})


@dataclass
class Retrained:
    maps: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


def retrained(
    store: HMStore,
    week: str,
    configurations: dict[str, tuple[list[str], ranker.RankerConfig]],
    week_keys: list[str],
    seeds: Sequence[int],
    training_weeks: int | None,
) -> dict[str, Retrained]:
    """MAP@12 of ``week``'s buyers, training rows and seconds per configuration (label -> pair
    features left out, ranker config) and seed, each ranker retrained on the kept samples of the
    labelled weeks (``training_weeks`` of them, default the pipeline's number) that its config's
    sampling settings draw: the pipeline's, unless a configuration changes them."""
    wanted = training_weeks or RANKER.training_weeks
    weeks = labelled_weeks(store, week, wanted)
    if len(weeks) < wanted:
        raise ValueError(f"{week} needs {', '.join(SAMPLE_INPUTS)} of {wanted} earlier weeks; found {weeks}")
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    pairs = week_pairs(store, week, week_keys, truth[["customer_key"]])
    results = {label: Retrained() for label in configurations}
    for seed in seeds:
        samples: dict[tuple, pd.DataFrame] = {}
        for label, (dropped, config) in configurations.items():
            sampling = tuple(getattr(config, name) for name in SAMPLE_SETTINGS)
            if sampling not in samples:
                samples[sampling] = training_sample(store, weeks, week_keys, config, seed).rows
            rows = samples[sampling]
            results[label].rows.append(len(rows))
            unknown = sorted(set(dropped) - set(ranker.feature_columns(rows)))
            if unknown:
                raise ValueError(f"no such pair feature(s) {unknown}; see the ranker's feature_columns")
            started = time.perf_counter()
            booster = ranker.train(rows.drop(columns=dropped), config.settings(seed))
            results[label].seconds.append(time.perf_counter() - started)
            scorer = ranker.PairScorer(booster, store.scratch_dir() / "compiled", prescreen=config.prescreen())
            scored = pd.DataFrame({"customer_key": pairs["customer_key"], "article_id": pairs["article_id"], "score": scorer(pairs)})
            results[label].maps.append(map_at_k(ranker.top_k(scored), truth))
    return results


def setting_value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week", action="append", required=True)
    parser.add_argument("--training-weeks", type=int, default=None,
                        help="labelled weeks before each --week the rankers learn from (default: 2 for retrievers, "
                             "the pipeline's number for --features and --settings)")
    parser.add_argument("--home", default=os.environ.get("HM_HOME", ""))
    parser.add_argument("--seeds", type=int, default=1, help="ranker seeds per configuration (MAP averaged)")
    parser.add_argument(
        "--group", action="append", default=[], metavar="NAME=R1,R2", help="also remove these retrievers together"
    )
    parser.add_argument(
        "--features",
        action="append",
        default=[],
        metavar="NAME=F1,F2",
        help="instead of retrievers, remove these pair features from the ranker (retrained on its kept training samples)",
    )
    parser.add_argument(
        "--settings",
        action="append",
        default=[],
        metavar="NAME=KEY:VALUE,KEY:VALUE",
        help="instead of retrievers, compare the ranker retrained with these training settings (e.g. "
             "ff05=feature_fraction:0.5) against the defaults, on its kept training samples",
    )
    parser.add_argument("--out", help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    from hm_assets.pipeline.retrieval.registry import retriever_names

    store = HMStore(home=args.home)
    keys = stored_history_weeks(store)
    groups = {label: members.split(",") for label, members in (g.split("=", 1) for g in args.group)}
    seeds = list(range(args.seeds))
    if args.settings:
        variants = {
            label: {key: setting_value(value) for key, value in (pair.split(":", 1) for pair in members.split(","))}
            for label, members in (g.split("=", 1) for g in args.settings)
        }
        table = pd.concat([settings_ablation(store, w, variants, keys, seeds, args.training_weeks) for w in args.week])
    elif args.features:
        feature_groups = {label: members.split(",") for label, members in (g.split("=", 1) for g in args.features)}
        table = pd.concat([feature_ablation(store, w, feature_groups, keys, seeds, args.training_weeks) for w in args.week])
    else:
        training_weeks = args.training_weeks or 2
        table = pd.concat([ablation(store, w, retriever_names(), training_weeks, keys, groups, seeds) for w in args.week])
    text = table.to_markdown(index=False, floatfmt=".5f")
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
