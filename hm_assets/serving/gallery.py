"""The recommendation gallery: a self-contained HTML page, and the week's data behind it.

The page shows, for a sample of customers, their recent purchases and their 12 recommendations as
pictures, with the article names, which retrievers proposed each one and the ranker's score;
articles the customer actually bought in the target week (when known) carry the CSS class ``hit``.
A cold-start section shows what new customers of different ages are recommended.

Structure the tests rely on: each customer is a ``section.customer`` (``data-customer-key``,
``data-hits``); its recommendations are ``figure.tile.rec`` (``data-article``, ``data-rank``,
class ``hit`` when bought), its purchases ``figure.tile.purchase``; cold-start profiles are
``div.cold-profile`` with ``figure.tile.cold`` tiles. A tile's picture is an ``<img>`` when the
article has an image, else a ``div.placeholder`` (never a broken image).

Rendering (``render_html``) is pure; ``build_gallery`` reads the week's outputs, samples the
customers, writes the thumbnails and the page (the ``gallery`` asset calls it).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hm_assets.pipeline.ingest.data_contract import format_article_id
from hm_assets.platform.history import history_files, stored_history_weeks
from hm_assets.platform.store import HMStore
from hm_assets.platform.weeks import parse_week
from hm_assets.serving.on_demand import OnDemandRecommender, retriever_names_of


@dataclass
class Tile:
    article_id: int
    name: str
    detail: str = ""  # product type · colour
    image: str | None = None  # src relative to index.html; None -> placeholder
    rank: int | None = None
    score: float | None = None  # None/NaN: not from the ranker (fallback fill)
    retrievers: list[str] = field(default_factory=list)
    hit: bool = False
    when: str | None = None  # purchase date


@dataclass
class CustomerPanel:
    customer_key: int
    customer_id: str
    reason: str  # why this customer is in the sample
    attributes: dict = field(default_factory=dict)
    history_size: int = 0
    purchases: list[Tile] = field(default_factory=list)
    recommendations: list[Tile] = field(default_factory=list)
    bought_in_week: int | None = None  # distinct articles bought in the target week (None: unknown)

    @property
    def hits(self) -> int:
        return sum(t.hit for t in self.recommendations)


@dataclass
class ColdStartProfile:
    label: str
    attributes: dict
    tiles: list[Tile]


@dataclass
class GalleryPage:
    week: str
    cutoff: str
    has_truth: bool
    customers: list[CustomerPanel]
    cold_start: list[ColdStartProfile] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # label -> value, shown in the header
    notes: list[str] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return sum(c.hits for c in self.customers)


CSS = """
:root { --ink:#1d1d1f; --muted:#6b6b70; --line:#e3e3e6; --card:#fff; --bg:#f5f5f7; --hit:#1a7f37;
        --accent:#c8102e; --chip:#eef0f4; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color:var(--ink);
       background:var(--bg); }
header.page { background:#111; color:#fff; padding:20px 28px; }
header.page h1 { margin:0 0 4px; font-size:22px; letter-spacing:.2px; }
header.page h1 span { color:var(--accent); }
header.page p { margin:2px 0; color:#c9c9cf; }
dl.summary { display:flex; flex-wrap:wrap; gap:10px 24px; margin:12px 0 0; }
dl.summary div { background:#222; border-radius:8px; padding:6px 12px; }
dl.summary dt { font-size:11px; text-transform:uppercase; color:#9a9aa2; }
dl.summary dd { margin:0; font-size:16px; font-weight:600; }
nav.toc { padding:10px 28px; background:#fff; border-bottom:1px solid var(--line); font-size:13px; }
nav.toc a { color:var(--ink); margin-right:14px; text-decoration:none; border-bottom:1px dotted var(--muted); }
main { padding:8px 28px 40px; }
.legend { color:var(--muted); margin:12px 0; }
.legend .swatch { display:inline-block; width:12px; height:12px; border-radius:3px; vertical-align:-1px;
                  border:3px solid var(--hit); margin:0 4px 0 10px; }
section.customer, section.cold-start { background:var(--card); border:1px solid var(--line); border-radius:12px;
                  padding:16px 18px; margin:18px 0; box-shadow:0 1px 2px rgba(0,0,0,.04); }
section h2 { margin:0; font-size:16px; }
section h2 code { font-size:12px; color:var(--muted); font-weight:normal; }
.facts { color:var(--muted); margin:4px 0 10px; }
.facts b.hits { color:var(--hit); }
.reason { display:inline-block; background:var(--chip); border-radius:10px; padding:1px 8px; font-size:12px;
          color:var(--ink); margin-left:6px; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); margin:12px 0 6px; }
.row { display:grid; grid-template-columns:repeat(auto-fill, minmax(86px, 1fr)); gap:10px; }
figure.tile { margin:0; background:#fafafa; border:1px solid var(--line); border-radius:8px; overflow:hidden;
              position:relative; display:flex; flex-direction:column; }
figure.tile img, figure.tile .placeholder { width:100%; aspect-ratio:2/3; object-fit:contain; background:#fff;
              display:block; }
figure.tile .placeholder { display:flex; align-items:center; justify-content:center; color:#9a9aa2;
              font-size:11px; text-transform:uppercase; letter-spacing:.5px;
              background:repeating-linear-gradient(45deg,#f1f1f3,#f1f1f3 8px,#e9e9ec 8px,#e9e9ec 16px); }
figure.tile figcaption { padding:6px 7px 7px; font-size:12px; }
figure.tile .name { font-weight:600; display:block; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
figure.tile .detail, figure.tile .when { color:var(--muted); display:block; font-size:11px; }
figure.tile .id { color:var(--muted); font-size:10px; font-family:ui-monospace, monospace; }
figure.tile .rank { position:absolute; top:6px; left:6px; background:rgba(17,17,17,.82); color:#fff;
              border-radius:10px; padding:0 7px; font-size:11px; font-weight:600; }
figure.tile .idline { display:flex; justify-content:space-between; gap:4px; flex-wrap:wrap; }
figure.tile .score { font-family:ui-monospace, monospace; font-size:11px; color:var(--ink); }
figure.tile .score.fallback { color:var(--muted); font-style:italic; font-family:inherit; }
ul.retrievers { list-style:none; margin:4px 0 0; padding:0; display:flex; flex-wrap:wrap; gap:3px; }
ul.retrievers li { background:var(--chip); border-radius:6px; padding:0 4px; font-size:9.5px; line-height:1.35; }
figure.tile.hit { border-color:var(--hit); box-shadow:0 0 0 2px var(--hit); background:#eefaf1; }
figure.tile.hit::after { content:"bought"; position:absolute; top:6px; right:6px; background:var(--hit); color:#fff;
              border-radius:10px; padding:0 7px; font-size:11px; font-weight:600; }
.cold-profile { margin-top:10px; }
.cold-profile h3 span { text-transform:none; letter-spacing:0; color:var(--ink); }
.notes { color:var(--muted); font-size:12px; }
footer { color:var(--muted); font-size:12px; padding:0 28px 30px; }
"""


def _text(value) -> str:
    return escape(str(value), quote=True)


def _is_number(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def render_tile(tile: Tile, kind: str) -> str:
    classes = ["tile", kind] + (["hit"] if tile.hit else [])
    article = format_article_id(tile.article_id)
    attrs = f' data-article="{article}"'
    if tile.rank is not None:
        attrs += f' data-rank="{int(tile.rank)}"'
    label = _text(tile.name or article)
    if tile.image:
        picture = f'<img src="{_text(tile.image)}" alt="{label}" title="{label}" decoding="async">'
    else:
        picture = f'<div class="placeholder" role="img" aria-label="no image: {label}">no image</div>'
    parts = [f'<figure class="{" ".join(classes)}"{attrs}>', picture]
    if tile.rank is not None:
        parts.append(f'<span class="rank">{int(tile.rank)}</span>')
    caption = [f'<span class="name" title="{label}">{label}</span>']
    if tile.detail:
        caption.append(f'<span class="detail">{_text(tile.detail)}</span>')
    if tile.when:
        caption.append(f'<span class="when">bought {_text(tile.when)}</span>')
    line = f'<span class="id">{article}</span>'
    if kind in ("rec", "cold"):
        if _is_number(tile.score):
            line += f'<span class="score" title="ranker score">{tile.score:.3f}</span>'
        else:
            line += '<span class="score fallback" title="filled from last week\'s best sellers">fallback</span>'
    caption.append(f'<span class="idline">{line}</span>')
    if tile.retrievers:
        chips = "".join(f"<li>{_text(r.replace('_', ' '))}</li>" for r in tile.retrievers)
        caption.append(f'<ul class="retrievers" title="proposed by">{chips}</ul>')
    parts.append(f"<figcaption>{''.join(caption)}</figcaption></figure>")
    return "".join(parts)


def _attributes_text(attributes: dict) -> str:
    shown = []
    for key, value in attributes.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        shown.append(f"{key.replace('_', ' ')} {value}")
    return " · ".join(_text(s) for s in shown)


def render_customer(panel: CustomerPanel, index: int) -> str:
    facts = [_attributes_text(panel.attributes)] if panel.attributes else []
    facts.append(f"{panel.history_size} purchases before the cut-off")
    if panel.bought_in_week is not None:
        facts.append(
            f'bought {panel.bought_in_week} article(s) in the target week; '
            f'<b class="hits">{panel.hits} of {len(panel.recommendations)} recommendations bought</b>'
        )
    purchases = "".join(render_tile(t, "purchase") for t in panel.purchases) or '<p class="notes">no purchases yet</p>'
    recs = "".join(render_tile(t, "rec") for t in panel.recommendations)
    return (
        f'<section class="customer" id="customer-{index}" data-customer-key="{panel.customer_key}" '
        f'data-hits="{panel.hits}">'
        f'<h2>Customer {index} <code>{_text(panel.customer_id)}</code>'
        f'<span class="reason">{_text(panel.reason)}</span></h2>'
        f'<p class="facts">{" · ".join(facts)}</p>'
        f'<h3>Recent purchases (newest first)</h3><div class="row purchases">{purchases}</div>'
        f'<h3>Recommendations</h3><div class="row recommendations">{recs}</div>'
        "</section>"
    )


def render_cold_start(profiles: list[ColdStartProfile]) -> str:
    if not profiles:
        return ""
    blocks = []
    for profile in profiles:
        tiles = "".join(render_tile(t, "cold") for t in profile.tiles)
        age = profile.attributes.get("age")
        data_age = f' data-age="{int(age)}"' if _is_number(age) else ""
        blocks.append(
            f'<div class="cold-profile"{data_age}><h3>{_text(profile.label)} '
            f'<span>({_attributes_text(profile.attributes)})</span></h3><div class="row">{tiles}</div></div>'
        )
    return (
        '<section class="cold-start" id="cold-start"><h2>Cold start: new customers, no history</h2>'
        '<p class="facts">What a customer who has never bought anything is recommended, by age: the '
        "popularity model picks, from last week's best sellers, what customers with these attributes buy "
        "(computed on demand, as <code>hm-recs recommend NEW-ID --age N</code>).</p>"
        + "".join(blocks)
        + "</section>"
    )


def render_html(page: GalleryPage) -> str:
    summary = "".join(f"<div><dt>{_text(k)}</dt><dd>{_text(v)}</dd></div>" for k, v in page.summary.items())
    truth = (
        "Purchases of the target week are known: recommendations that were bought are outlined in green."
        if page.has_truth
        else "Live week: its purchases are not known yet, so nothing is highlighted."
    )
    toc = "".join(f'<a href="#customer-{i}">{i}</a>' for i in range(1, len(page.customers) + 1))
    if page.cold_start:
        toc += '<a href="#cold-start">cold start</a>'
    customers = "".join(render_customer(c, i) for i, c in enumerate(page.customers, start=1))
    notes = "".join(f"<p class='notes'>{_text(n)}</p>" for n in page.notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hm-recs gallery · week {_text(page.week)}</title>
<style>{CSS}</style>
</head>
<body>
<header class="page">
<h1>hm-recs <span>gallery</span> · week {_text(page.week)}</h1>
<p>Recommendations for the week starting {_text(page.week)}, from what was known before {_text(page.cutoff)}.</p>
<dl class="summary">{summary}</dl>
</header>
<nav class="toc">Customers: {toc}</nav>
<main>
<p class="legend">{_text(truth)} <span class="swatch"></span>bought in the target week.
Chips under a recommendation name the retrievers that proposed it; the number is the ranker's score
("fallback": filled from last week's best sellers).</p>
{customers}
{render_cold_start(page.cold_start)}
{notes}
</main>
<footer>Generated by the hm-recs <code>gallery</code> asset.</footer>
</body>
</html>
"""


# ---- the week's data: sample, thumbnails, the page ----------------------------------------------


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


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of customer keys: a hash table, then a sort of the distinct keys (numpy's own took
    0.4 s for the full preset's 1.37M keys, this 0.05 s)."""
    return np.sort(pd.unique(np.asarray(keys, dtype=np.int64)))


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
    pool = _sorted_unique(customer_keys)
    chosen: list[tuple[int, str]] = []

    def draw(candidates: np.ndarray, count: int, reason: str) -> None:
        """``candidates``: a part of ``pool`` in its order (sorted, unique)."""
        count = min(count, size - len(chosen))
        if count <= 0:
            return
        candidates = candidates[~np.isin(candidates, [key for key, _ in chosen])]
        count = min(count, len(candidates))
        if count <= 0:
            return
        for key in sorted(rng.choice(candidates, size=count, replace=False).tolist()):
            chosen.append((int(key), reason))

    buyers = pool[np.isin(pool, _sorted_unique(buyers), assume_unique=True)]
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
    recs_path = store.require("recommendations", week)
    # Every customer with a list, and their purchases before the cut-off (the week's customer_features
    # count them): the sample's pool, read as two columns instead of the week's lists and history.
    pool = pd.unique(pq.read_table(recs_path, columns=["customer_key"]).column(0).to_numpy())
    lifetime = pq.read_table(store.require("customer_features", week), columns=["customer_key", "lifetime_txn_count"])
    counts = pd.Series(lifetime.column(1).to_numpy(), index=lifetime.column(0).to_numpy(), name="n")
    counts = counts[counts > 0]
    files = history_files(store, stored_history_weeks(store), cutoff)
    con = duckdb.connect()
    try:
        if files:
            listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
            con.execute(f"CREATE VIEW history AS SELECT * FROM read_parquet({listing}) WHERE t_dat < DATE '{cutoff}'")
        else:
            con.execute("CREATE VIEW history AS SELECT CAST(NULL AS DATE) t_dat, 0::BIGINT customer_key, 0 article_id WHERE false")
        truth_path = store.optional("transactions", week)
        truth = pd.read_parquet(truth_path, columns=["customer_key", "article_id"]) if truth_path else None
        has_truth = truth is not None and len(truth) > 0
        buyers = truth["customer_key"].unique() if has_truth else np.zeros(0, dtype=np.int64)
        sample = sample_customers(
            pool, buyers, counts, config.customers, config.seed, config.buyers_share, config.rich_history_share,
        )
        keys = [k for k, _ in sample]
        con.register("sample_keys", pd.DataFrame({"customer_key": np.asarray(keys, dtype=np.int64)}))
        recs = con.execute(f"SELECT * FROM read_parquet('{recs_path}') SEMI JOIN sample_keys USING (customer_key)").df()
        customers = con.execute(
            f"SELECT * FROM read_parquet('{store.require('customers')}') SEMI JOIN sample_keys USING (customer_key)"
        ).df().set_index("customer_key")
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
    articles = _articles(store)
    images_path = store.optional("article_images")
    catalogue = pd.read_parquet(images_path) if images_path else None

    target = store.asset_dir("gallery") / week
    with store.atomic_path(target) as folder:
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
            recommender = recommender or OnDemandRecommender(store, week, history_in_memory=False)
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
        summary["customers with recommendations"] = int(len(pool))
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
