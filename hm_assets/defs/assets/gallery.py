"""The ``gallery`` asset: a week's recommendations as pictures, in a self-contained HTML report.

``HM_HOME/assets/gallery/<week>/index.html`` with the thumbnails beside it (``img/<article>.jpg``),
written as one folder, atomically. The page is rendered by ``hm_assets.serving.gallery``; the cold-start
section comes from the on-demand recommender (``hm_assets.serving.on_demand``), the same code path as
``hm-recs recommend``.
"""

# No `from __future__ import annotations`: Dagster reads the asset's config class from its annotation.

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from hm_assets.defs.assets.ingest import article_images
from hm_assets.defs.assets.ranking import candidates, recommendations
from hm_assets.defs.assets.weekly import HISTORY_AND_TARGET_WEEK
from hm_assets.defs.partitions import weekly_partitions_def
from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.ingest.data_contract import format_article_id
from hm_assets.platform.history import history_files
from hm_assets.platform.store import atomic_path
from hm_assets.platform.weeks import parse_week
from hm_assets.serving.gallery import ColdStartProfile, CustomerPanel, GalleryPage, Tile, render_html
from hm_assets.serving.on_demand import OnDemandRecommender, retriever_names_of, weeks_with

GROUP = "evaluation"


class GalleryConfig(dg.Config):
    customers: int = 12
    seed: int = 0
    # Share of the sample drawn from the customers who bought in the target week (when that is known) ...
    buyers_share: float = 0.5
    # ... and from the customers with the richest history (top tenth by purchases before the cut-off).
    rich_history_share: float = 0.25
    recent_purchases: int = 8
    cold_start_ages: list[int] = [17, 45, 70]
    thumbnail_px: int = 300


@dataclass
class GalleryResult:
    index: Path
    customers: int
    recommendation_tiles: int
    hits: int
    images_copied: int
    placeholders: int
    cold_start_profiles: int
    sample: pd.DataFrame  # customer_key, reason, hits


def sample_customers(
    customer_keys: np.ndarray,
    buyers: np.ndarray,
    history_counts: pd.Series,
    size: int,
    seed: int,
    buyers_share: float,
    rich_history_share: float,
) -> list[tuple[int, str]]:
    """A deterministic sample of ``size`` customers: (customer_key, why chosen), target-week buyers
    first, then customers with a rich history, then anyone."""
    rng = np.random.default_rng(seed)
    pool = np.unique(np.asarray(customer_keys, dtype=np.int64))
    chosen: list[tuple[int, str]] = []
    taken: set[int] = set()

    def draw(candidates: np.ndarray, count: int, reason: str) -> None:
        candidates = np.asarray([c for c in np.unique(candidates) if c not in taken], dtype=np.int64)
        count = min(count, len(candidates), size - len(chosen))
        if count <= 0:
            return
        for key in sorted(rng.choice(candidates, size=count, replace=False).tolist()):
            chosen.append((int(key), reason))
            taken.add(int(key))

    buyers = np.intersect1d(np.asarray(buyers, dtype=np.int64), pool)
    draw(buyers, round(size * buyers_share), "bought in the target week")
    counts = history_counts.reindex(pool).fillna(0)
    if len(counts) and counts.max() > 0:
        threshold = max(float(counts.quantile(0.9)), 1.0)
        draw(counts.index[counts >= threshold].to_numpy(), round(size * rich_history_share), "rich history")
    with_history = counts.index[counts > 0].to_numpy()
    draw(with_history, size - len(chosen), "random customer with history")
    draw(pool, size - len(chosen), "random customer")
    return chosen


def _thumbnail(source: Path, target: Path, max_px: int) -> bool:
    """Copy (small JPEGs) or shrink an image to ``target`` (JPEG); False when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            if image.format == "JPEG" and max(image.size) <= max_px * 1.5:
                shutil.copyfile(source, target)
                return True
            image = image.convert("RGB")
            image.thumbnail((max_px, int(max_px * 1.5)))
            image.save(target, "JPEG", quality=85)
            return True
    except Exception:  # a missing or corrupt file becomes a placeholder, never a broken <img>
        target.unlink(missing_ok=True)
        return False


class _Images:
    """Thumbnails of the shown articles, written once each into the gallery folder."""

    def __init__(self, catalogue: pd.DataFrame | None, folder: Path, max_px: int):
        self.paths: dict[int, str] = {}
        if catalogue is not None:
            usable = catalogue[catalogue["exists"] & catalogue["readable"]]
            self.paths = dict(zip(usable["article_id"].astype(int), usable["path"]))
        self.folder = folder
        self.max_px = max_px
        self.done: dict[int, str | None] = {}

    def src(self, article_id: int) -> str | None:
        article_id = int(article_id)
        if article_id not in self.done:
            source = self.paths.get(article_id)
            name = f"img/{format_article_id(article_id)}.jpg"
            ok = source is not None and _thumbnail(Path(source), self.folder / name, self.max_px)
            self.done[article_id] = name if ok else None
        return self.done[article_id]

    @property
    def copied(self) -> int:
        return sum(v is not None for v in self.done.values())

    @property
    def placeholders(self) -> int:
        return sum(v is None for v in self.done.values())


def _articles(store: HMStore) -> pd.DataFrame:
    columns = ["article_id", "prod_name", "product_type_name", "colour_group_name"]
    return pd.read_parquet(store.require("articles"), columns=columns).set_index("article_id")


def _detail(articles: pd.DataFrame, article_id: int) -> tuple[str, str]:
    if article_id not in articles.index:
        return format_article_id(article_id), ""
    row = articles.loc[article_id]
    detail = " · ".join(str(v) for v in (row["product_type_name"], row["colour_group_name"]) if isinstance(v, str) and v)
    return str(row["prod_name"]), detail


def build_gallery(
    store: HMStore,
    week: str,
    config: GalleryConfig | None = None,
    recommender: OnDemandRecommender | None = None,
) -> GalleryResult:
    """Render the week's gallery into ``HM_HOME/assets/gallery/<week>/`` (atomically)."""
    config = config or GalleryConfig()
    cutoff = parse_week(week)
    recs = pd.read_parquet(store.require("recommendations", week))
    files = history_files(store, weeks_with(store, "transactions"), cutoff)
    con = duckdb.connect()
    try:
        if files:
            listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
            con.execute(f"CREATE VIEW history AS SELECT * FROM read_parquet({listing}) WHERE t_dat < DATE '{cutoff}'")
        else:
            con.execute("CREATE VIEW history AS SELECT CAST(NULL AS DATE) t_dat, 0::BIGINT customer_key, 0 article_id WHERE false")
        counts = con.sql("SELECT customer_key, count(*) AS n FROM history GROUP BY 1").df().set_index("customer_key")["n"]
        truth_path = store.optional("transactions", week)
        truth = pd.read_parquet(truth_path, columns=["customer_key", "article_id"]) if truth_path else None
        has_truth = truth is not None and len(truth) > 0
        buyers = truth["customer_key"].unique() if has_truth else np.zeros(0, dtype=np.int64)
        sample = sample_customers(
            recs["customer_key"].unique(), buyers, counts, config.customers, config.seed,
            config.buyers_share, config.rich_history_share,
        )
        keys = [k for k, _ in sample]
        con.register("sample_keys", pd.DataFrame({"customer_key": np.asarray(keys, dtype=np.int64)}))
        purchases = con.execute(
            """
            SELECT customer_key, article_id, max(t_dat) AS last_day
            FROM history SEMI JOIN sample_keys USING (customer_key)
            GROUP BY customer_key, article_id
            QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY max(t_dat) DESC, article_id) <= $n
            ORDER BY customer_key, last_day DESC, article_id
            """,
            {"n": config.recent_purchases},
        ).df()
        candidates_path = store.optional("candidates", week)
        if candidates_path:
            cands = con.execute(
                f"SELECT * FROM read_parquet('{candidates_path}') SEMI JOIN sample_keys USING (customer_key)"
            ).df()
        else:
            cands = pd.DataFrame(columns=["customer_key", "article_id"])
    finally:
        con.close()
    cands = cands.assign(retrievers=retriever_names_of(cands))
    proposed = {(int(k), int(a)): r for k, a, r in zip(cands["customer_key"], cands["article_id"], cands["retrievers"])}
    bought = set()
    if has_truth:
        bought = set(zip(truth["customer_key"].astype(int), truth["article_id"].astype(int)))
        bought_counts = truth.drop_duplicates(["customer_key", "article_id"]).groupby("customer_key").size()
    customers = pd.read_parquet(store.require("customers")).set_index("customer_key")
    articles = _articles(store)
    images_path = store.optional("article_images")
    catalogue = pd.read_parquet(images_path) if images_path else None

    target = store.asset_dir("gallery") / week
    with atomic_path(target) as folder:
        (folder / "img").mkdir(parents=True)
        images = _Images(catalogue, folder, config.thumbnail_px)
        panels = []
        for key, reason in sample:
            own = purchases[purchases["customer_key"] == key]
            mine = recs[recs["customer_key"] == key].sort_values("rank")
            person = customers.loc[key] if key in customers.index else None
            panel = CustomerPanel(
                customer_key=key,
                customer_id=str(person["customer_id"]) if person is not None else str(key),
                reason=reason,
                attributes={
                    "age": person["age"] if person is not None else None,
                    "club": person["club_member_status"] if person is not None else None,
                    "news": person["fashion_news_frequency"] if person is not None else None,
                },
                history_size=int(counts.get(key, 0)),
                bought_in_week=int(bought_counts.get(key, 0)) if has_truth else None,
            )
            for article_id, day in zip(own["article_id"], own["last_day"]):
                name, detail = _detail(articles, int(article_id))
                panel.purchases.append(
                    Tile(int(article_id), name, detail, images.src(article_id), when=str(pd.Timestamp(day).date()))
                )
            for article_id, rank, score in zip(mine["article_id"], mine["rank"], mine["score"]):
                name, detail = _detail(articles, int(article_id))
                chips = proposed.get((key, int(article_id)), "")
                panel.recommendations.append(
                    Tile(
                        int(article_id), name, detail, images.src(article_id), rank=int(rank),
                        score=None if pd.isna(score) else float(score),
                        retrievers=[c for c in chips.split(", ") if c],
                        hit=(key, int(article_id)) in bought,
                    )
                )
            panels.append(panel)

        cold = []
        if config.cold_start_ages:
            own_recommender = recommender is None
            recommender = recommender or OnDemandRecommender(store, week)
            try:
                for age in config.cold_start_ages:
                    listed = recommender.recommend(f"new-customer-age-{age}", age=age)
                    tiles = []
                    for row in listed.itertuples():
                        name, detail = _detail(articles, int(row.article_id))
                        tiles.append(
                            Tile(
                                int(row.article_id), name, detail, images.src(row.article_id), rank=int(row.rank),
                                score=None if pd.isna(row.score) else float(row.score),
                                retrievers=[c for c in row.retrievers.split(", ") if c],
                            )
                        )
                    who = recommender.customer(f"new-customer-age-{age}", age=age).attributes
                    shown = {"age": age, "club": who.get("club_member_status"), "news": who.get("fashion_news_frequency")}
                    cold.append(ColdStartProfile(f"New customer, age {age}", shown, tiles))
            finally:
                if own_recommender:
                    recommender.close()

        summary = {"customers shown": len(panels)}
        if has_truth:
            shown_recs = sum(len(p.recommendations) for p in panels)
            summary["hits shown"] = f"{sum(p.hits for p in panels)} of {shown_recs}"
        evaluation_path = store.optional("evaluation", week, ".json")
        if evaluation_path:
            metrics = json.loads(evaluation_path.read_text())
            if metrics.get("has_truth"):
                summary["MAP@12 ranker"] = f"{metrics['map12_ranker']:.4f}"
                summary["MAP@12 trending"] = f"{metrics['map12_trending']:.4f}"
                summary["buyers in week"] = metrics.get("buyers", "")
        summary["customers with recommendations"] = int(recs["customer_key"].nunique())
        notes = []
        if catalogue is None:
            notes.append("article_images has not been materialized: every picture is a placeholder.")
        page = GalleryPage(
            week=week, cutoff=str(cutoff), has_truth=has_truth, customers=panels, cold_start=cold,
            summary=summary, notes=notes,
        )
        (folder / "index.html").write_text(render_html(page), encoding="utf-8")
        copied, placeholders = images.copied, images.placeholders
    return GalleryResult(
        index=target / "index.html",
        customers=len(panels),
        recommendation_tiles=sum(len(p.recommendations) for p in panels),
        hits=page.hits,
        images_copied=copied,
        placeholders=placeholders,
        cold_start_profiles=len(cold),
        sample=pd.DataFrame(
            {"customer_key": [p.customer_key for p in panels], "reason": [p.reason for p in panels],
             "hits": [p.hits for p in panels]}
        ),
    )


@dg.asset(
    name="gallery",
    group_name=GROUP,
    kinds={"html"},
    partitions_def=weekly_partitions_def,
    deps=[HISTORY_AND_TARGET_WEEK, recommendations, candidates, article_images],
)
def gallery(context: dg.AssetExecutionContext, store: HMStore, config: GalleryConfig) -> dg.MaterializeResult:
    """A self-contained HTML report of the week: a deterministic sample of customers (target-week
    buyers first when known, some with a rich history), each with their recent purchases and their
    12 recommendations as pictures (name, proposing retrievers, ranker score; bought ones
    highlighted), and cold-start lists for new customers of different ages (on-demand recommender)."""
    started = time.perf_counter()
    result = build_gallery(store, context.partition_key, config)
    context.log.info(f"gallery written to {result.index}")
    return dg.MaterializeResult(
        metadata={
            "gallery": dg.MetadataValue.path(store.relative(result.index)),
            "gallery_url": dg.MetadataValue.url(store.url(result.index)),
            "customers_shown": result.customers,
            "recommendation_tiles": result.recommendation_tiles,
            "hits": result.hits,
            "images_copied": result.images_copied,
            "image_placeholders": result.placeholders,
            "cold_start_profiles": result.cold_start_profiles,
            "sample": dg.MetadataValue.md(result.sample.to_markdown(index=False)),
            "seconds": round(time.perf_counter() - started, 2),
        }
    )


gallery_assets = [gallery]
