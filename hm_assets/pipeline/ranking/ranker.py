"""The LightGBM ranker: learns from earlier weeks which candidates customers actually bought."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

from hm_assets.pipeline.ingest.data_contract import K
from hm_assets.platform.arrays import position_in_runs, run_starts
from hm_assets.platform.progress import Progress
from hm_assets.platform.settings import DEFAULT_TRAINING_WEEKS
from hm_assets.platform.store import HMStore

NON_FEATURES = ("customer_key", "article_id", "label", "query")
# The earliest week a ranker may learn from: this many weeks before its own.
MAX_TRAINING_WEEKS = 8


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NON_FEATURES]


def label(pairs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` = 1 where the customer bought the article in the labelled week."""
    bought = truth[["customer_key", "article_id"]].drop_duplicates().assign(label=np.int8(1))
    labelled = pairs.merge(bought, on=["customer_key", "article_id"], how="left")
    labelled["label"] = labelled["label"].fillna(0).astype(np.int8)
    return labelled


def training_rows(pairs: pd.DataFrame, truth: pd.DataFrame, negatives_per_customer: int, seed: int) -> pd.DataFrame:
    """The week's buyers with at least one bought candidate, and a sample of their other candidates."""
    labelled = label(pairs[pairs["customer_key"].isin(truth["customer_key"].unique())], truth)
    with_positive = labelled.groupby("customer_key")["label"].transform("max") > 0
    labelled = labelled[with_positive]
    if negatives_per_customer > 0 and len(labelled):
        rng = np.random.default_rng(seed)
        order = rng.random(len(labelled))
        labelled = labelled.assign(_order=np.where(labelled["label"] > 0, -1.0, order))
        labelled = labelled.sort_values(["customer_key", "_order"], kind="mergesort")
        positives = labelled.groupby("customer_key")["label"].transform("sum").astype(np.int64)  # label is int8
        keep = labelled.groupby("customer_key").cumcount() < negatives_per_customer + positives
        labelled = labelled[keep].drop(columns="_order")
    return labelled.sort_values(["customer_key", "article_id"], kind="mergesort").reset_index(drop=True)


def training_keys(
    con: duckdb.DuckDBPyConnection,
    candidates_path: Path,
    truth: pd.DataFrame,
    negatives_per_customer: int,
    seed: int,
    max_rows: int = 0,
) -> pd.DataFrame:
    """customer_key, article_id, label of a labelled week's training rows: ``training_rows`` drawn on
    the buyers' stored candidates, in the candidates' order (customer, best rank, article), within
    ``max_rows`` (``within_budget``). Only the chosen pairs' features are then computed
    (``samples.week_pairs``)."""
    con.register("truth_rows", truth[["customer_key", "article_id"]])
    buyers = "SEMI JOIN (SELECT DISTINCT customer_key FROM truth_rows) USING (customer_key)"
    keys = con.sql(
        f"SELECT customer_key, article_id FROM read_parquet('{candidates_path}') {buyers} "
        f"ORDER BY customer_key, best_rank, article_id"
    ).df()
    con.unregister("truth_rows")
    return within_budget(training_rows(keys, truth, negatives_per_customer, seed), max_rows, seed)


def within_budget(keys: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` training rows: whole customers (each with its positives and negatives)
    in a seeded random order, as many as fit. 0 = no budget."""
    if max_rows <= 0 or len(keys) <= max_rows:
        return keys
    sizes = keys.groupby("customer_key", sort=True).size()
    order = np.random.default_rng(seed).permutation(len(sizes))
    fits = np.cumsum(sizes.to_numpy()[order]) <= max_rows
    chosen = sizes.index.to_numpy()[order[fits]]
    return keys[keys["customer_key"].isin(chosen)].reset_index(drop=True)


def stack_weeks(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Training rows of several weeks, in week order and within a week by customer and article;
    ``query`` numbers each (week, customer) group, rows grouped by it.

    The weeks' rows come sorted by customer and article (``training_rows``, ``samples.week_training_rows``),
    so they are only concatenated, one copy: sorting the stacked rows took three more copies at full
    scale (4M rows, 1.5 GiB: a 6.4 GiB peak). A week's rows out of that order are sorted first."""
    if not frames:
        return pd.DataFrame()
    frames = [f if _sorted_by(f, ("customer_key", "article_id")) else f.sort_values(["customer_key", "article_id"], kind="mergesort")
              for f in frames]
    stacked = pd.concat(frames, ignore_index=True)
    customer = stacked["customer_key"].to_numpy()
    starts = np.ones(len(customer), dtype=bool)
    starts[1:] = customer[1:] != customer[:-1]
    offsets = np.cumsum([len(f) for f in frames])[:-1]
    starts[offsets[offsets < len(starts)]] = True  # a week's first customer starts a group (an empty week has none)
    stacked["query"] = np.cumsum(starts) - 1
    return stacked


def _sorted_by(frame: pd.DataFrame, columns: tuple[str, str]) -> bool:
    """Whether ``frame``'s rows are in the order of ``columns`` (lexicographic)."""
    if len(frame) < 2:
        return True
    first, second = (frame[c].to_numpy() for c in columns)
    same = first[1:] == first[:-1]
    return bool((first[1:] >= first[:-1]).all() and (second[1:][same] >= second[:-1][same]).all())


def training_matrix(rows: pd.DataFrame, features: list[str]) -> np.ndarray:
    """``features`` of ``rows`` as one matrix for LightGBM, NULL as NaN: float32 where every feature
    holds exactly in it (float32 columns, integers within 2^24, booleans), else float64. Given the
    frame, LightGBM copies the columns (``rows[features]``) and then makes them one float64 matrix:
    twice the rows' size more (4.8 GiB at full scale). LightGBM bins the same values the same way in
    either type: the same model. A categorical or non-numeric feature is an error (the ranker's
    features are numbers; LightGBM would treat a categorical one by its codes)."""
    exact = True
    for name in features:
        column = rows[name]
        kind = column.dtype.kind
        if isinstance(column.dtype, pd.CategoricalDtype) or kind not in "fiub":
            raise TypeError(f"feature {name} is {column.dtype}: the ranker takes numeric features")
        if kind == "f" and column.dtype.itemsize > 4:
            exact = False
        elif kind in "iu" and len(column) and max(abs(float(column.min())), abs(float(column.max()))) > 2**24:
            exact = False
    dtype = np.float32 if exact else np.float64
    matrix = np.empty((len(rows), len(features)), dtype=dtype)
    for j, name in enumerate(features):
        matrix[:, j] = rows[name].to_numpy(dtype=dtype, na_value=np.nan)
    return matrix


@dataclass
class RankerSettings:
    objective: str = "lambdarank"
    boost_rounds: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    seed: int = 0
    threads: int = 2


def train(rows: pd.DataFrame, settings: RankerSettings, log: Callable[[str], None] | None = None) -> lgb.Booster:
    """The ranker on ``rows`` (``stack_weeks``); ``log`` gets progress lines (rounds, rate, time left)."""
    features = feature_columns(rows)
    params = {
        "objective": settings.objective,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "bagging_seed": settings.seed,
        "feature_fraction_seed": settings.seed,
        "seed": settings.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": settings.threads,
        "verbose": -1,
    }
    if settings.objective == "lambdarank":
        params.update({"metric": "map", "eval_at": [K], "lambdarank_truncation_level": 20})
        groups = rows.groupby("query", sort=False).size().to_numpy()
        dataset = lgb.Dataset(training_matrix(rows, features), label=rows["label"], group=groups, feature_name=features, free_raw_data=True)
    elif settings.objective == "binary":
        dataset = lgb.Dataset(training_matrix(rows, features), label=rows["label"], feature_name=features, free_raw_data=True)
    else:
        raise ValueError(f"objective must be 'lambdarank' or 'binary', not {settings.objective!r}")
    progress = Progress("ranker training", settings.boost_rounds, log, unit="rounds")

    def report(_env: lgb.callback.CallbackEnv) -> None:
        progress.advance()

    booster = lgb.train(params, dataset, num_boost_round=settings.boost_rounds, callbacks=[report])
    progress.finish()
    return booster


def save(booster: lgb.Booster, path: Path) -> None:
    booster.save_model(str(path))


def load(path: Path) -> lgb.Booster:
    return lgb.Booster(model_file=str(path))


def predict(booster: lgb.Booster, pairs: pd.DataFrame, threads: int = 2) -> np.ndarray:
    return booster.predict(pairs[booster.feature_name()], num_threads=threads)


PARALLEL_ROWS = 10_000  # fewer pairs are scored on the calling thread


@dataclass(frozen=True)
class Prescreen:
    """Two-stage scoring of a customer's candidates. The model's first ``rounds`` trees score all of
    them; the whole model then scores only the customer's ``keep`` best by that score, and the rest
    stay unscored (NaN; the lists drop them). A kept pair's score is the whole model's, to the bit.

    At full scale scoring is the largest single cost of a week (about 150M pairs through the model's
    trees). With a 400-tree model, 40 trees and 24 of ~115 candidates evaluate 0.31 of the trees; on
    every world, with the stored rankers, MAP@12 moved by -0.00016 to +0.00031 against scoring
    everything (40 and 36: +0.00008 to +0.00017 with 0.42 of the trees) and 82-89% of the lists are
    identical, the rest differing mostly at their lower places; keeping 20 moved it by -0.00042 to
    +0.00020 (``benchmarks/bench_prescreen.py``, RESULTS.md)."""

    rounds: int = 40
    keep: int = 20

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.keep < K:
            raise ValueError(f"a prescreen needs rounds >= 1 and keep >= {K}, got rounds={self.rounds}, keep={self.keep}")

    def as_dict(self) -> dict[str, int]:
        return {"rounds": self.rounds, "keep": self.keep}

    @classmethod
    def from_dict(cls, spec: dict | None) -> Prescreen | None:
        return cls(int(spec["rounds"]), int(spec["keep"])) if spec else None


def best_per_customer(customer: np.ndarray, article: np.ndarray, score: np.ndarray, keep: int) -> np.ndarray:
    """Mask of the rows of each customer's ``keep`` articles of highest ``score`` (ties by article
    id; an article in several rows counts once, at its best, and keeps all its rows), rows in any
    order; ``score`` has no NaN. Rows sorted by customer (a shard's pairs) take a cheaper path."""
    if len(customer) and (np.diff(customer) >= 0).all():
        kept = _best_in_sorted_runs(customer, article, score, keep)
        if kept is not None:
            return kept
    order = np.lexsort((-score, article, customer))
    best = run_starts(customer[order], article[order])  # each (customer, article)'s best row
    pair_of_row = np.cumsum(best) - 1
    rows = order[best]
    by_score = np.lexsort((article[rows], -score[rows], customer[rows]))
    place = np.empty(len(rows), np.int64)
    place[by_score] = position_in_runs(customer[rows][by_score])
    kept = np.empty(len(customer), dtype=bool)
    kept[order] = (place < keep)[pair_of_row]
    return kept


def _best_in_sorted_runs(customer: np.ndarray, article: np.ndarray, score: np.ndarray, keep: int) -> np.ndarray | None:
    """``best_per_customer`` of rows sorted by customer, with one sort of integer keys instead of
    two lexsorts: each customer's ``keep``-th best score by partition, every row above it, then the
    rows at it by article id; None where a customer has an article twice (the general path counts
    it once)."""
    starts = np.flatnonzero(run_starts(customer))
    lengths = np.diff(np.append(starts, len(customer)))
    run = np.repeat(np.arange(len(starts)), lengths)
    pair = np.sort(run * (int(article.max()) + 1) + article)
    if (pair[1:] == pair[:-1]).any():
        return None
    position = np.arange(len(customer)) - starts[run]
    width = int(lengths.max())
    if width <= keep:
        kept = np.ones(len(customer), dtype=bool)
    else:
        padded = np.full((len(starts), width), -np.inf)
        padded[run, position] = score
        threshold = -np.partition(-padded, keep - 1, axis=1)[:, keep - 1]  # each customer's keep-th best
        above = score > threshold[run]
        kept = above.copy()
        at = np.flatnonzero(score == threshold[run])
        if len(at):  # the rows at the threshold fill what is left, lowest article ids first
            left = keep - np.bincount(run[above], minlength=len(starts))
            at = at[np.lexsort((article[at], run[at]))]
            kept[at[position_in_runs(run[at]) < left[run[at]]]] = True
    return kept


class PairScorer:
    """A trained ranker as a function of pair features.

    Scoring every customer's candidates is the largest single cost of a week at full scale (about
    150M pairs). The model is compiled to native code with lleaves (LLVM), about 3x faster than
    LightGBM's own predict with the same scores (to 1e-14); the compiled object is cached per
    model and CPU under ``cache_dir``. Where compilation is not available, LightGBM predicts.
    Candidate lists are scored through ``score_lists`` (with the model's ``Prescreen``, if any);
    every consumer (recommendations, on-demand, ablation) scores through this class, so they agree.
    """

    def __init__(self, booster: lgb.Booster, cache_dir: Path, threads: int = 2, prescreen: Prescreen | None = None) -> None:
        self.booster = booster
        self.features = booster.feature_name()
        self.threads = threads
        self.compiled = compile_model(booster, cache_dir)
        # a prescreen as long as the model would only add work
        self.prescreen = prescreen if prescreen is not None and prescreen.rounds < booster.current_iteration() else None
        # The first rounds as a model of their own, compiled or else a booster of their own (a booster
        # keeps the rounds of its last predict, and the service predicts from threads).
        self.first_trees = None
        if self.prescreen is not None:
            rounds = self.prescreen.rounds
            self.first_trees = compile_model(booster, cache_dir, rounds) or lgb.Booster(
                model_str=booster.model_to_string(num_iteration=rounds)
            )

    def __call__(self, pairs: pd.DataFrame, at_least: int = K) -> np.ndarray:
        matrix = pairs[self.features].to_numpy(np.float64, na_value=np.nan)
        return self.score_lists(matrix, pairs["customer_key"].to_numpy(), pairs["article_id"].to_numpy(), at_least=at_least)

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """The whole model's scores of float64 rows whose columns are ``features`` in order (NaN: missing)."""
        return self._predict(self.compiled or self.booster, matrix)

    def score_lists(
        self, matrix: np.ndarray, customer: np.ndarray, article: np.ndarray, scratch: np.ndarray | None = None,
        at_least: int = K,
    ) -> np.ndarray:
        """Scores of customers' candidate lists (``score_matrix``'s rows, each customer's rows all
        present, in any order); with a prescreen, the rows outside each customer's best (the
        prescreen's ``keep``, or ``at_least`` for a longer list) stay NaN. ``scratch``: a float64
        buffer of at least ``matrix``'s shape to gather the kept rows in."""
        if self.prescreen is None or len(matrix) == 0:
            return self.score_matrix(matrix)
        first = self._predict(self.first_trees, matrix)
        kept = best_per_customer(customer, article, first, max(self.prescreen.keep, at_least))
        if kept.all():
            return self.score_matrix(matrix)
        rows = np.flatnonzero(kept)
        if scratch is not None and len(scratch) >= len(rows):
            gathered = np.take(matrix, rows, axis=0, out=scratch[: len(rows)])
        else:
            gathered = matrix[rows]
        scores = np.full(len(matrix), np.nan)
        scores[rows] = self.score_matrix(gathered)
        return scores

    def _predict(self, model, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix`` by a LightGBM booster or an lleaves model."""
        if isinstance(model, lgb.Booster):
            return model.predict(matrix, num_threads=self.threads)
        # a pool of threads per call costs more than scoring one customer's candidates
        return model.predict(matrix, n_jobs=self.threads if len(matrix) >= PARALLEL_ROWS else 1)


def compile_model(booster: lgb.Booster, cache_dir: Path, rounds: int | None = None):
    """The booster (its first ``rounds`` trees, or all) compiled by lleaves (loaded from the cache
    when compiled before), or None."""
    try:
        import lleaves
        import llvmlite.binding as llvm
    except ImportError:
        return None
    from importlib.metadata import version

    text = booster.model_to_string() if rounds is None else booster.model_to_string(num_iteration=rounds)
    build = f"lleaves {version('lleaves')}, llvmlite {llvm.llvm_version_info}, {platform.machine()} {llvm.get_host_cpu_name()}"
    key = hashlib.sha256(f"{text}|{build}".encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_file = cache_dir / f"ranker-{key}.txt"
    compiled_file = cache_dir / f"ranker-{key}.o"
    if not model_file.exists():
        temporary = model_file.with_name(f".{model_file.name}.tmp-{os.getpid()}")
        temporary.write_text(text)
        os.replace(temporary, model_file)
    model = lleaves.Model(model_file=str(model_file))
    if compiled_file.exists():
        model.compile(cache=str(compiled_file))
    else:  # compile beside, then rename: concurrent shard processes never read half an object file
        temporary = compiled_file.with_name(f".{compiled_file.name}.tmp-{os.getpid()}")
        model.compile(cache=str(temporary))
        os.replace(temporary, compiled_file)
    return model


HEURISTIC_FEATURES = ("n_retrievers", "best_rank")


class HeuristicScorer:
    """The score used when no labelled week exists yet: agreement between retrievers, then best
    rank; ``PairScorer``'s interface."""

    features = list(HEURISTIC_FEATURES)

    def __call__(self, pairs: pd.DataFrame, at_least: int = K) -> np.ndarray:
        return self.score_matrix(pairs[self.features].to_numpy(np.float64))

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return matrix[:, 0] - matrix[:, 1] / 1000.0

    def score_lists(
        self, matrix: np.ndarray, customer: np.ndarray, article: np.ndarray, scratch: np.ndarray | None = None,
        at_least: int = K,
    ) -> np.ndarray:
        return self.score_matrix(matrix)


HEURISTIC = HeuristicScorer()


def stored_scorer(store: HMStore, week: str) -> PairScorer | HeuristicScorer:
    """The week's ranker as a function of pair features (with the prescreen recorded beside the model),
    or the fallback when it has no model."""
    info = json.loads(store.require("ranker", week, ".json").read_text())
    if info.get("trained"):
        return PairScorer(
            load(store.require("ranker", week, ".txt")), store.scratch_dir() / "compiled",
            prescreen=Prescreen.from_dict(info.get("prescreen")),
        )
    return HEURISTIC


def importances(booster: lgb.Booster) -> pd.DataFrame:
    gain = booster.feature_importance(importance_type="gain")
    frame = pd.DataFrame({"feature": booster.feature_name(), "gain": gain})
    frame["share"] = frame["gain"] / max(frame["gain"].sum(), 1e-12)
    return frame.sort_values("gain", ascending=False).reset_index(drop=True)


def _first_rows(customer: np.ndarray, article: np.ndarray) -> np.ndarray:
    """Of rows already in order: the first of each (customer, article), as a mask (pandas'
    ``drop_duplicates(keep="first")``)."""
    n = len(customer)
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    grouped = np.lexsort((np.arange(n), article, customer))
    keep[grouped[run_starts(customer[grouped], article[grouped])]] = True
    return keep


def top_k(scored: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """customer_key, article_id, score -> the best k per customer with rank 1..k (ties by article id,
    an article proposed twice at its best score, NaN scores last), in customer then rank order."""
    customer = scored["customer_key"].to_numpy()
    article = scored["article_id"].to_numpy()
    score = scored["score"].to_numpy(np.float64)
    missing = np.isnan(score)
    order = np.lexsort((article, -np.where(missing, 0.0, score), missing, customer))
    order = order[_first_rows(customer[order], article[order])]
    rank = position_in_runs(customer[order]) + 1
    out = scored.iloc[order[rank <= k]].reset_index(drop=True)
    out["rank"] = rank[rank <= k]
    return out


def fill_to_k(recommendations: pd.DataFrame, customer_keys: np.ndarray, fallback: list[int], k: int = K) -> pd.DataFrame:
    """Every customer gets exactly k distinct articles: their own list first, then ``fallback`` in order."""
    if len(set(fallback)) < k:
        raise ValueError(f"the fallback list needs at least {k} distinct articles, has {len(set(fallback))}")
    fallback = np.asarray(list(dict.fromkeys(fallback))[: k * 2], dtype=np.int64)
    customer_keys = np.asarray(customer_keys)
    have = recommendations[recommendations["customer_key"].isin(customer_keys)]
    customer = np.concatenate([have["customer_key"].to_numpy(np.int64), np.repeat(customer_keys.astype(np.int64), len(fallback))])
    article = np.concatenate([have["article_id"].to_numpy(np.int64), np.tile(fallback, len(customer_keys))])
    score = np.concatenate([have["score"].to_numpy(np.float64), np.full(len(fallback) * len(customer_keys), np.nan)])
    rank = np.concatenate([have["rank"].to_numpy(np.int64), np.tile(np.arange(len(fallback)) + 1000, len(customer_keys))])
    order = np.lexsort((rank, customer))
    order = order[_first_rows(customer[order], article[order])]
    new_rank = position_in_runs(customer[order]) + 1
    order, new_rank = order[new_rank <= k], new_rank[new_rank <= k]
    return pd.DataFrame({
        "customer_key": customer[order].astype(np.int64),
        "article_id": article[order].astype(np.int32),
        "score": score[order].astype(np.float32),
        "rank": new_rank.astype(np.int8),
    })


class RankerConfig(dg.Config):
    # binary and 80 negatives beat lambdarank and 30 on both seeds of world-loyal (as binary did for
    # several top H&M teams); see the README's quality section
    objective: str = "binary"
    # Fewer labelled weeks than this is an error, not a smaller model: 0 asks for the fallback scorer.
    training_weeks: int = DEFAULT_TRAINING_WEEKS
    negatives_per_customer: int = 80
    # Rows read per labelled week at most (whole customers sampled beyond it): keeps the ranker's
    # time and memory flat at full scale (~60k buyers a week, ~5M rows). The 16k-customer worlds read
    # ~170k; at full scale 500k a week trains in half the time of 1M for -0.00067 MAP@12 (RESULTS.md).
    max_rows_per_week: int = 500_000
    # Scoring the week's candidates: the first trees pick each customer's best, the model scores
    # those (``Prescreen``); prescreen_rounds 0 scores every candidate with the whole model. Keeping 20
    # rather than 24 moved the four worlds by -0.00030 to +0.00006 (mean -0.00009) for a tenth fewer trees.
    prescreen_rounds: int = Prescreen.rounds
    prescreen_keep: int = Prescreen.keep
    # 300 trees at 0.0333 (the shrinkage of 400 at 0.025): the four worlds over two ranker seeds moved by
    # -0.00079 to +0.00104, mean -0.00003, for a quarter fewer trees to train and to score; RESULTS.md
    boost_rounds: int = 300
    learning_rate: float = 0.0333
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    # the share of the features each tree may split on
    feature_fraction: float = 0.8
    seed: int = 0

    def settings(self, seed: int | None = None) -> RankerSettings:
        """The LightGBM settings (with another seed for an ablation's repeats)."""
        return RankerSettings(
            objective=self.objective,
            boost_rounds=self.boost_rounds,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf,
            feature_fraction=self.feature_fraction,
            seed=self.seed if seed is None else seed,
        )

    def prescreen(self) -> Prescreen | None:
        """The prescreen asked for; none where it would be as long as the model (nothing to save)."""
        if self.prescreen_rounds <= 0 or self.prescreen_rounds >= self.boost_rounds:
            return None
        return Prescreen(self.prescreen_rounds, self.prescreen_keep)
