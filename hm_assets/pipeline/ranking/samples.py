"""The ranker's training samples: each labelled week's buyers, their bought candidates and a sample
of the others, with the pair features those pairs had as of the week's cut-off.

Pair features are not stored for every candidate: the recommendations compute a shard's in memory
and score them (``stage.pair_feature_batches``), and a labelled week's sample computes them for its
chosen pairs only (a few percent of the week's candidates) from the week's stored candidates,
feature tables and taste: the same statement, so the same values. Every ranker of the weeks that
follow learns from the same sample, which is kept under the ranker's folder and read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.features.taste import ArticleTaste, read_article_taste
from hm_assets.pipeline.ranking import ranker
from hm_assets.pipeline.ranking.stage import load_candidates, pair_features_frame, pair_features_version
from hm_assets.platform.history import WeekView, open_week, register_parquet
from hm_assets.platform.metadata import stopwatch
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import WEEK, parse_week

# A week's partitions that its pair features are computed from, besides its history and the catalogue.
PAIR_FEATURE_INPUTS = ("candidates", *FEATURE_TABLES, "article_taste")
# What a labelled week's sample is computed from: those and its purchases (the labels).
SAMPLE_INPUTS = (*PAIR_FEATURE_INPUTS, "transactions")
# Part of a kept training sample's name (``week_training_rows``): raised when the sampling code
# changes what a sample holds, so that samples kept before are drawn again.
SAMPLE_FORMAT = 2


def labelled_weeks(store: HMStore, week_key: str, wanted: int) -> list[str]:
    """The most recent earlier weeks (up to ``wanted``) whose sample's inputs all exist."""
    start = parse_week(week_key)
    found: list[str] = []
    if wanted <= 0:
        return found
    for offset in range(1, ranker.MAX_TRAINING_WEEKS + 1):
        earlier = (start - offset * WEEK).isoformat()
        if all(store.exists(name, earlier) for name in SAMPLE_INPUTS):
            found.append(earlier)
        if len(found) == wanted:
            break
    return found


def _keys_of(only: pd.DataFrame) -> list[str]:
    """What ``only`` selects by: pairs where it has article_id, else whole customers."""
    return ["customer_key", "article_id"] if "article_id" in only.columns else ["customer_key"]


@contextmanager
def week_candidates(
    store: HMStore, week: str, week_keys: Iterable[str], only: pd.DataFrame | None = None, where: str = "true"
) -> Iterator[tuple[WeekView, ArticleTaste]]:
    """The week's view with its feature tables, its stored candidates matching ``where`` as the temp
    table ``candidates`` (all, or those of ``only``: its ``customer_key`` column alone for those
    customers' whole lists, or with ``article_id`` for those pairs), and the week's article taste:
    what ``sql/pair_features.sql`` reads (``stage.pair_features``, ``stage.pair_feature_batches``)."""
    with open_week(store, week, week_keys) as view:
        for table in FEATURE_TABLES:
            register_parquet(view.con, table, store.require(table, week))
        candidates = store.require("candidates", week)
        if only is None:
            load_candidates(view.con, candidates, where)
        else:
            on = _keys_of(only)
            view.con.register("only_rows", only[on].drop_duplicates())
            load_candidates(view.con, candidates, where, only="only_rows", on=on)
            view.con.unregister("only_rows")
        yield view, read_article_taste(store.require("article_taste", week))


def week_pairs(store: HMStore, week: str, week_keys: Iterable[str], only: pd.DataFrame) -> pd.DataFrame:
    """``sql/pair_features.sql`` over the week's stored candidates, restricted to ``only``: its
    ``customer_key`` column alone (those customers' whole lists) or with ``article_id`` (those
    pairs). ``only``'s other columns (a label) are carried over. In the statement's order
    (customer, best rank, article)."""
    on = _keys_of(only)
    with week_candidates(store, week, week_keys, only) as (view, taste):
        pairs = pair_features_frame(view.con, view.cutoff, taste)
    carried = [c for c in only.columns if c not in on]
    if carried:
        pairs = pairs.merge(only[[*on, *carried]], on=on, how="left", validate="many_to_one" if len(on) == 1 else "one_to_one")
    return pairs


@dataclass(frozen=True)
class TrainingRows:
    """The labelled weeks' training rows, stacked (``ranker.stack_weeks``), and the weeks whose
    sample was read back as kept (``week_training_rows``) rather than drawn again."""

    rows: pd.DataFrame
    reused: list[str]


def training_sample(
    store: HMStore,
    weeks: list[str],
    week_keys: Iterable[str],
    config: ranker.RankerConfig,
    seed: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainingRows:
    """The labelled weeks' training rows (buyers' positives and sampled negatives) as ``config``
    samples them (with another ``seed`` for an ablation's repeats), stacked; each week's sample is
    kept and read back by the next rankers that learn from it (``week_training_rows``)."""
    seed = config.seed if seed is None else seed
    week_keys = list(week_keys)
    frames, reused = [], []
    for week in weeks:
        with stopwatch() as watch:
            rows, kept = week_training_rows(
                store, week, week_keys, config.negatives_per_customer, seed, config.max_rows_per_week
            )
        frames.append(rows)
        if kept:
            reused.append(week)
        if log is not None:
            how = "read back as kept" if kept else "drawn from the stored candidates, their pair features computed"
            log(f"training sample of {week}: {len(rows):,} rows, {how} ({watch.seconds:.1f} s)")
    return TrainingRows(ranker.stack_weeks(frames), reused)


def draw_week_sample(
    store: HMStore,
    week: str,
    week_keys: Iterable[str],
    truth: pd.DataFrame,
    negatives_per_customer: int,
    seed: int,
    max_rows: int,
) -> pd.DataFrame:
    """A labelled week's training rows for the purchases ``truth`` (customer_key, article_id):
    ``ranker.training_keys`` on the week's stored candidates, with their ``week_pairs``, sorted by
    customer and article."""
    con = store.connect()
    try:
        chosen = ranker.training_keys(con, store.require("candidates", week), truth, negatives_per_customer, seed, max_rows)
    finally:
        con.close()
    rows = week_pairs(store, week, week_keys, chosen)
    return rows.sort_values(["customer_key", "article_id"], kind="mergesort").reset_index(drop=True)


def week_training_rows(
    store: HMStore,
    week: str,
    week_keys: Iterable[str],
    negatives_per_customer: int,
    seed: int,
    max_rows: int,
    features_version: str | None = None,
) -> tuple[pd.DataFrame, bool]:
    """One labelled week's training rows (``draw_week_sample`` of its purchases), and whether they
    were read back as kept.

    The sample is kept under the ranker's folder, named by the sampling settings, the versions of
    its inputs (``HMStore.version``) and of the code that computes the pair features
    (``features_version``, by default ``stage.pair_features_version``): re-materialized candidates,
    feature tables, taste or purchases, or changed pair features, draw a new sample, and the stale
    one is removed."""
    inputs = [store.require(name, week) for name in SAMPLE_INPUTS]
    stamps = [store.version(path) for path in inputs] + [features_version or pair_features_version()]
    versions = hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]
    settings = f"{week}-v{SAMPLE_FORMAT}-negatives{negatives_per_customer}-seed{seed}-max{max_rows}"
    path = store.asset_dir("ranker") / "samples" / f"{settings}-{versions}.parquet"
    if store.fetch(path).exists():
        return pd.read_parquet(path), True
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    rows = draw_week_sample(store, week, week_keys, truth, negatives_per_customer, seed, max_rows)
    for name in store.names(path.parent):
        if name.startswith(f"{settings}-") and name != path.name:
            store.remove(path.parent / name)
    store.write_parquet(rows, path)
    return rows, False
