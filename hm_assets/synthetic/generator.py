"""The built-in synthetic H&M data set: presets and ``generate``.

Writes exactly the Kaggle "H&M Personalized Fashion Recommendations" layout into ``out_dir``::

    articles.csv  customers.csv  transactions_train.csv  images/<3 digits>/<article_id>.jpg

calibrated to aggregates of the real data (see ``hm_assets/synthetic/data``), with the latent
structure a retrieval-ranking recommender feeds on (customer taste clusters tied to age, article
life cycles and seasons, outfits bought together, re-bought basics, colour variants, price bands,
channel habits, heavy-tailed activity, newcomers). Deterministic: the same preset, seed and end date
give byte-identical files (images included) with the same numpy / Pillow versions. Writing is
atomic: everything goes into a temporary sibling folder that is renamed into place at the end.

Validate a data set against the real aggregates with ``python -m hm_assets.synthetic.validate``;
the package data is derived by ``hm_assets/synthetic/build_vocab.py`` (a developer tool; the
generator never reads the reference material).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .catalogue import Catalogue, build_catalogue, season_matrix
from .images import write_images
from .people import Customers, build_customers
from .timeline import Timeline, last_tuesday_before, make_timeline, parse_end_date
from .transactions import BehaviourParams, History, RowEncoder, calibrate, oracle_top_k, plan_sessions, simulate
from .vocab import COLOUR_RGB, INDEX_GROUPS, load_vocab

ORACLE_FILE = "oracle.csv"
OUTPUT_NAMES = {"articles.csv", "customers.csv", "transactions_train.csv", "images", ORACLE_FILE}


@dataclass(frozen=True)
class Preset:
    """Sizes and knobs of a synthetic data set. Any field can be overridden in ``generate``."""

    name: str
    n_customers: int
    n_articles: int
    n_transactions: int
    weeks: int
    days: int | None = None              # overrides weeks * 7 (full: the real 734 days)
    default_end: date | None = None      # None: the most recent Tuesday before today
    n_clusters: int = 24                 # latent style clusters
    existing_customer_share: float = 0.6  # customers already shopping before the first day
    never_bought_share: float = 0.007    # customers in customers.csv with no transaction
    image_missing_share: float = 0.01
    image_width: int = 64
    image_height: int = 96
    image_quality: int = 85
    image_process_min_articles: int = 5_000  # draw images in a second process from this size on
    legacy_weeks: int = 52               # products may have been launched up to this long before day 1
    popularity_sigma: float = 0.7        # log-sd of products' latent popularity (long tail)
    half_life_weeks: float = 6.0         # median half-life of a new product's sales (trend speed)
    activity_sigma: float = 1.0          # log-sd of customers' shopping rates (heavy tail)
    churn_share: float = 0.25            # customers who stop shopping at some point
    oracle_weeks: int = 4                # the last weeks the oracle (oracle.csv) is written for
    oracle_replicas: int = 48            # replays of each such week that estimate its expected purchases
    behaviour: BehaviourParams = field(default_factory=BehaviourParams)

    @property
    def n_days(self) -> int:
        return self.days if self.days is not None else self.weeks * 7


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", n_customers=1_500, n_articles=600, n_transactions=30_000, weeks=16, n_clusters=8,
                   existing_customer_share=0.85, activity_sigma=0.7,
                   behaviour=BehaviourParams(p_history=0.1, p_history_follow=0.35)),
    "small": Preset("small", n_customers=50_000, n_articles=12_000, n_transactions=1_500_000, weeks=40,
                    n_clusters=24, existing_customer_share=0.8, activity_sigma=1.1, churn_share=0.35,
                    behaviour=BehaviourParams(p_history=0.12, p_history_follow=0.7)),
    "full": Preset("full", n_customers=1_371_980, n_articles=105_542, n_transactions=31_788_324, weeks=105,
                   days=734, default_end=date(2020, 9, 22), n_clusters=32, existing_customer_share=0.55,
                   popularity_sigma=0.55, activity_sigma=0.6, churn_share=0.15,
                   behaviour=BehaviourParams(p_history=0.35, p_history_follow=0.9, p_follow=0.35, tau_basic=60.0,
                                             tau_sibling=30.0, p_same_article=0.5)),
}


# Worlds: data sets of one size that differ in structure, so that a configuration is judged on
# more than the world it was tuned on (benchmarks/bench_quality.py runs every one). Each stays
# inside the real data's aggregates that hm_assets.synthetic.validate checks.
WORLD_SIZE = dict(n_customers=16_000, n_articles=4_000, n_transactions=400_000, weeks=24, existing_customer_share=0.8)
WORLDS: dict[str, Preset] = {
    # loyal customers: strong re-buying of basics and recent items, tastes concentrated on few clusters
    "world-loyal": Preset("world-loyal", **WORLD_SIZE, n_clusters=16, activity_sigma=1.0, churn_share=0.2,
                          behaviour=BehaviourParams(p_history=0.3, p_history_follow=0.85, tau_basic=50.0,
                                                    p_same_article=0.75, p_session_cluster=0.9)),
    # fast fashion: short life cycles, concentrated popularity, weak personal style and little re-buying
    "world-trends": Preset("world-trends", **WORLD_SIZE, n_clusters=16, popularity_sigma=1.1, half_life_weeks=2.5,
                           activity_sigma=1.1, churn_share=0.35,
                           behaviour=BehaviourParams(p_history=0.05, p_history_follow=0.3, p_session_cluster=0.5,
                                                     beta_type=0.6, beta_colour=0.6, p_type_focus=0.2)),
    # long tail: many style clusters and flat popularity, strong personal types and colours, bigger baskets
    "world-longtail": Preset("world-longtail", **WORLD_SIZE, n_clusters=40, popularity_sigma=0.35, half_life_weeks=10.0,
                             activity_sigma=1.0, churn_share=0.3,
                             behaviour=BehaviourParams(p_history=0.12, p_history_follow=0.6, beta_type=2.5,
                                                       beta_colour=2.0, p_type_focus=0.6, basket_extra_online=2.4,
                                                       basket_extra_store=1.5, p_outfit=0.35)),
    # newcomers: a third of the buyers arrive during the data, many shop once; outfits bought together
    "world-newcomers": Preset("world-newcomers", **{**WORLD_SIZE, "existing_customer_share": 0.35}, n_clusters=24,
                              activity_sigma=1.3, churn_share=0.5,
                              behaviour=BehaviourParams(p_history=0.1, p_history_follow=0.5, p_outfit=0.3,
                                                        p_follow=0.2)),
}
PRESETS.update(WORLDS)


def resolve_preset(preset: str | Preset = "small", **overrides) -> Preset:
    """A preset by name (or as given) with field overrides; BehaviourParams fields may be given flat."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset] if isinstance(preset, str) else preset
    behaviour_fields = {f.name for f in dataclasses.fields(BehaviourParams)}
    preset_fields = {f.name for f in dataclasses.fields(Preset)}
    flat = {k: overrides.pop(k) for k in list(overrides) if k in behaviour_fields and k not in preset_fields}
    unknown = set(overrides) - preset_fields
    if unknown:
        raise TypeError(f"unknown preset field(s): {sorted(unknown)}")
    cfg = dataclasses.replace(base, **overrides)
    if flat:
        cfg = dataclasses.replace(cfg, behaviour=dataclasses.replace(cfg.behaviour, **flat))
    if min(cfg.n_customers, cfg.n_articles, cfg.n_transactions, cfg.n_days) <= 0:
        raise ValueError("preset sizes must be positive")
    if cfg.n_articles < 2 * cfg.n_clusters:
        cfg = dataclasses.replace(cfg, n_clusters=max(5, cfg.n_articles // 2))
    return cfg


def default_end_date(preset: str | Preset = "small", today: date | None = None) -> date:
    cfg = resolve_preset(preset)
    return cfg.default_end or last_tuesday_before(today)


# --------------------------------------------------------------------------------------------


def generate(out_dir: str | os.PathLike, preset: str | Preset = "small", seed: int = 0,
             end_date: str | date | None = None, *, truth_dir: str | os.PathLike | None = None,
             images: bool = True, oracle: bool = True, overwrite: bool = True, progress: Callable[[str], None] | None = None,
             **overrides) -> dict:
    """Generate a synthetic data set into ``out_dir``; returns a summary dict.

    ``overrides`` replace preset fields (``n_customers=300``) or behaviour fields (``p_outfit=0.3``).
    ``truth_dir``, if given, receives the latent structure (clusters, outfits, basics, launch
    weeks, customers' tastes) for validation; it is never written inside ``out_dir``.
    ``oracle``: also write ``oracle.csv``, the latent model's expected top-12 of each buyer in the
    last ``oracle_weeks`` weeks (see ``write_oracle``); the other files are the same bytes without it.
    ``overwrite``: replace an existing data set folder (only one that holds nothing but the
    generator's outputs); otherwise an existing non-empty ``out_dir`` is an error.
    """
    t0 = time.perf_counter()
    cfg = resolve_preset(preset, **overrides)
    end = parse_end_date(end_date) or cfg.default_end or last_tuesday_before()
    timeline = make_timeline(end, cfg.n_days)
    out = Path(out_dir).expanduser().resolve()
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        summary = _generate_into(tmp, cfg, int(seed), timeline, images, oracle, progress,
                                 Path(truth_dir).expanduser().resolve() if truth_dir else None)
        _swap_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["out_dir"] = str(out)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    if not overwrite:
        raise FileExistsError(f"{out} is not empty (pass overwrite=True / --force to replace a data set)")
    if not names <= OUTPUT_NAMES:
        raise FileExistsError(f"{out} holds files that are not a generated data set ({sorted(names - OUTPUT_NAMES)[:5]}); "
                              "refusing to replace it")


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary folders left by killed runs (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(p, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    old = None
    if out.exists():
        _check_target(out, overwrite)
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _say(progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _generate_into(tmp: Path, cfg: Preset, seed: int, timeline: Timeline, with_images: bool, with_oracle: bool,
                   progress, truth_dir: Path | None) -> dict:
    vocab = load_vocab()
    bp = cfg.behaviour
    streams = np.random.SeedSequence([seed, 0x48_4D]).spawn(6)
    # the sixth stream is the oracle's: drawing from it never moves the others
    rng_cat, rng_cust, rng_sess, rng_cal, rng_sim, rng_oracle = (np.random.default_rng(s) for s in streams)
    t = time.perf_counter()
    day_weight, day_price = timeline.real_curves()
    real_avg = vocab.daily["avg_price"].to_numpy(float)
    ref = np.percentile(real_avg, 90)
    sale_prob = np.clip((ref - day_price) / ref * 1.5, 0.0, 0.4)

    # ---- catalogue
    cat = build_catalogue(rng_cat, vocab, timeline, cfg.n_articles, cfg.n_clusters, cfg.image_missing_share,
                          legacy_weeks=cfg.legacy_weeks, popularity_sigma=cfg.popularity_sigma,
                          half_life_weeks=cfg.half_life_weeks)
    _say(progress, f"catalogue: {cat.n} articles, {len(cat.product_count)} products ({time.perf_counter() - t:.1f}s)")

    # ---- images (a second process for big catalogues, so they overlap the transactions)
    image_proc = None
    jobs = []
    if with_images:
        ids = cat.articles["article_id"].to_numpy()
        colour_names = cat.articles["colour_group_name"].to_numpy()
        for i in np.flatnonzero(cat.has_image):
            jobs.append((int(i), ids[i], cat.silhouette[i], cat.pattern[i], COLOUR_RGB.get(colour_names[i], (128, 128, 128))))
        if cat.n >= cfg.image_process_min_articles:
            ctx = multiprocessing.get_context("spawn")
            image_proc = ctx.Process(target=write_images, args=(str(tmp / "images"), jobs, seed, cfg.image_width,
                                                               cfg.image_height, cfg.image_quality, os.getpid()),
                                     daemon=True)
            image_proc.start()
    try:
        return _transactions_and_rest(tmp, cfg, seed, timeline, vocab, bp, cat, day_weight, sale_prob, rng_cust,
                                      rng_sess, rng_cal, rng_sim, rng_oracle if with_oracle else None, with_images, jobs,
                                      image_proc, progress, truth_dir)
    finally:
        if image_proc is not None and image_proc.is_alive():
            image_proc.terminate()
            image_proc.join()


def _transactions_and_rest(tmp, cfg, seed, timeline, vocab, bp, cat, day_weight, sale_prob, rng_cust, rng_sess,
                           rng_cal, rng_sim, rng_oracle, with_images, jobs, image_proc, progress, truth_dir) -> dict:

    # ---- customers and sessions
    t = time.perf_counter()
    cust = build_customers(rng_cust, vocab, cat.clusters, cfg.n_customers, seed, timeline.n_days, day_weight,
                           cfg.existing_customer_share, cfg.never_bought_share, cfg.activity_sigma, cfg.churn_share)
    n_sessions = int(round(cfg.n_transactions / bp.rows_per_session))
    sess_day, sess_cust, sess_follow = plan_sessions(rng_sess, cust, timeline.n_days, day_weight, n_sessions, bp.p_follow,
                                        bp.follow_p)
    _say(progress, f"customers: {cust.n}, sessions: {len(sess_day)} ({time.perf_counter() - t:.1f}s)")

    # ---- calibration of transaction shares
    t = time.perf_counter()
    pt = vocab.product_types
    type_names = pt["product_type_name"].to_numpy()
    colour_names_v = vocab.colours["colour_group_name"].to_numpy()
    season = season_matrix(type_names, timeline.week_day_of_year())
    targets = {
        "type_txn": dict(zip(type_names, pt["txn_share"].astype(float))),
        "colour_txn": dict(zip(colour_names_v, vocab.colours["txn_share"].astype(float))),
        "ig_txn": vocab.targets["index_group_txn_share"],
        "mean_price": float(vocab.targets["summary"]["avg_price"]),
    }
    cal = calibrate(rng_cal, cat, cust, timeline, sess_day, sess_cust, targets, type_names, colour_names_v, bp, season,
                    sale_prob)
    base_weight = cat.popularity * cal["m_type"][cat.type_idx] * cal["m_colour"][cat.colour_idx]
    _say(progress, f"calibrated (pilot error type/colour/index group {cal['pilot_error'][-1]}) "
                   f"({time.perf_counter() - t:.1f}s)")

    # ---- articles.csv, customers.csv
    cat.articles.to_csv(tmp / "articles.csv", index=False)
    cust.frame.to_csv(tmp / "customers.csv", index=False)

    # ---- transactions
    t = time.perf_counter()
    max_k = int(max(cat.price_k.max(), cat.markdown_k.max())) + 2
    encoder = RowEncoder(cust.id_bytes, list(cat.articles["article_id"]), [d.isoformat() for d in timeline.dates()], max_k)

    def day_progress(done, total, rows):
        _say(progress, f"transactions: day {done}/{total}, {rows:,} rows ({time.perf_counter() - t:.0f}s)")

    last_week = int(timeline.week_of_day(timeline.n_days - 1))
    oracle_weeks = list(range(last_week - cfg.oracle_weeks + 1, last_week + 1)) if rng_oracle is not None else []
    with open(tmp / "transactions_train.csv", "wb", buffering=16 << 20) as fh:
        stats, kept = simulate(rng_sim, cat, cust, timeline, sess_day, sess_cust, sess_follow, base_weight, season,
                               day_weight, sale_prob, cfg.n_transactions, bp, fh, encoder,
                               progress=day_progress if progress else None, oracle_weeks=oracle_weeks)
    del encoder

    # ---- the oracle
    if rng_oracle is not None:
        t = time.perf_counter()
        n_oracle = write_oracle(tmp / ORACLE_FILE, rng_oracle, cat, cust, timeline, base_weight, season, sess_day,
                                sess_cust, sess_follow, bp, kept, cfg.oracle_replicas, progress)
        _say(progress, f"oracle: {n_oracle:,} buyers in {len(kept)} weeks, {cfg.oracle_replicas} replays each "
                       f"({time.perf_counter() - t:.1f}s)")

    # ---- images
    n_images = 0
    if with_images:
        t = time.perf_counter()
        if image_proc is None:
            n_images = write_images(tmp / "images", jobs, seed, cfg.image_width, cfg.image_height, cfg.image_quality)
        else:
            image_proc.join()
            if image_proc.exitcode != 0:
                raise RuntimeError(f"image process failed with exit code {image_proc.exitcode}")
            n_images = len(jobs)
        _say(progress, f"images: {n_images} ({time.perf_counter() - t:.1f}s after transactions)")

    if truth_dir is not None:
        write_truth(truth_dir, cat, cust, timeline)

    return {
        "preset": cfg.name,
        "seed": seed,
        "start_date": timeline.start.isoformat(),
        "end_date": timeline.end.isoformat(),
        "days": timeline.n_days,
        "rows": {"articles": cat.n, "customers": cust.n, "transactions": stats.rows},
        "images": n_images,
        "sessions": stats.sessions,
        "mean_price": round(stats.price_sum / max(stats.rows, 1), 6),
        "channel_2_share": round(stats.online_rows / max(stats.rows, 1), 4),
        "items_from_history": stats.from_history,
        "outfit_extras": stats.outfit_extras,
        "variant_extras": stats.variant_extras,
    }


def write_oracle(path: Path, rng: np.random.Generator, cat: Catalogue, cust: Customers, timeline: Timeline,
                 base_weight: np.ndarray, season: np.ndarray, sess_day: np.ndarray, sess_cust: np.ndarray,
                 sess_follow: np.ndarray, bp, kept: list, replicas: int, progress=None) -> int:
    """``oracle.csv``: week (its Wednesday), customer_id, prediction (12 article ids, most likely
    first), for every buyer of each kept week: what the generator's own model expects them to buy
    that week. The upper reference a recommender is measured against on this data."""
    history = History.empty(cust.n, bp.hist_slots)
    ids = cust.id_bytes.view("S64").ravel().astype(str)
    articles = cat.articles["article_id"].to_numpy()
    frames = []
    started = time.perf_counter()
    for done, week in enumerate(kept, start=1):
        c, a = oracle_top_k(rng, cat, cust, timeline, base_weight, season, sess_day, sess_cust, sess_follow, bp, week,
                            history, replicas)
        wednesday = timeline.start + timedelta(days=7 * week.week - timeline.week0_offset)
        elapsed = time.perf_counter() - started
        _say(progress, f"oracle: week {done} of {len(kept)} ({wednesday}) replayed {replicas} times in {elapsed:.0f}s, "
                       f"about {elapsed / done * (len(kept) - done):.0f}s left")
        if not len(c):
            continue
        frame = pd.DataFrame({"customer_id": ids[c], "article_id": articles[a]})
        lists = frame.groupby("customer_id", sort=True)["article_id"].agg(" ".join).reset_index(name="prediction")
        lists.insert(0, "week", wednesday.isoformat())
        frames.append(lists)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["week", "customer_id", "prediction"])
    out.to_csv(path, index=False)
    return len(out)


def write_truth(truth_dir: Path, cat: Catalogue, cust: Customers, timeline: Timeline) -> None:
    """The latent structure, for validation and tests (not part of the Kaggle layout)."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "article_id": cat.articles["article_id"],
        "product_code": cat.articles["product_code"],
        "cluster": cat.cluster,
        "index_group": [INDEX_GROUPS[g] for g in cat.clusters.index_group[cat.cluster]],
        "outfit": cat.outfit,
        "basic": cat.basic.astype(int),
        "launch_week": cat.launch_week,
        "half_life_weeks": np.round(cat.half_life, 2),
        "has_image": cat.has_image.astype(int),
        "silhouette": cat.silhouette,
        "pattern": cat.pattern,
    }).to_csv(truth_dir / "articles_truth.csv", index=False)
    ids = cust.id_bytes.view("S64").ravel().astype(str)
    pd.DataFrame({
        "customer_id": ids,
        "cluster_1": cust.clusters[:, 0], "cluster_2": cust.clusters[:, 1], "cluster_3": cust.clusters[:, 2],
        "weight_1": np.round(cust.weights[:, 0], 4), "weight_2": np.round(cust.weights[:, 1], 4),
        "weight_3": np.round(cust.weights[:, 2], 4),
        "activity": np.round(cust.activity, 4),
        "join_date": (np.datetime64(timeline.start.isoformat()) + cust.join_day.astype("timedelta64[D]")).astype(str),
        "never_buys": cust.never_buys.astype(int),
        "p_online": np.round(cust.p_online, 3),
    }).to_csv(truth_dir / "customers_truth.csv", index=False)
