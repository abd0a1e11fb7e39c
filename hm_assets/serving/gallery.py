"""The recommendation gallery: a self-contained HTML page (pure rendering, no I/O).

The page shows, for a sample of customers, their recent purchases and their 12 recommendations as
pictures, with the article names, which retrievers proposed each one and the ranker's score;
articles the customer actually bought in the target week (when known) carry the CSS class ``hit``.
A cold-start section shows what new customers of different ages are recommended.

Structure the tests rely on: each customer is a ``section.customer`` (``data-customer-key``,
``data-hits``); its recommendations are ``figure.tile.rec`` (``data-article``, ``data-rank``,
class ``hit`` when bought), its purchases ``figure.tile.purchase``; cold-start profiles are
``div.cold-profile`` with ``figure.tile.cold`` tiles. A tile's picture is an ``<img>`` when the
article has an image, else a ``div.placeholder`` (never a broken image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from hm_assets.pipeline.ingest.data_contract import format_article_id


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
