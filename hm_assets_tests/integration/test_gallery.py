"""The gallery of a tiny run, opened in headless Chromium: every picture loads, and the customers,
recommendation tiles and highlighted hits on the page match the stored data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hm_assets.platform.settings import hm_serve_url
from hm_assets_tests.chromium import headless_chromium, missing_reason
from hm_assets_tests.servers import serving
from hm_assets_tests.tiny_run import TinyRun


def _gallery_dir(run: TinyRun) -> Path:
    return run.home / "assets" / "gallery" / run.week


def test_gallery_asset_metadata_and_files(recs_run):
    metadata = recs_run.gallery_metadata
    index = _gallery_dir(recs_run) / "index.html"
    assert index.is_file()
    # paths relative to HM_HOME, the link over http (hm-recs serve), not the machine's file://
    assert metadata["gallery"] == f"assets/gallery/{recs_run.week}/index.html"
    assert metadata["gallery_url"] == f"{hm_serve_url()}/files/{metadata['gallery']}"
    assert metadata["customers_shown"] == 12 and metadata["recommendation_tiles"] == 12 * 12
    assert metadata["cold_start_profiles"] == 3
    images = sorted((_gallery_dir(recs_run) / "img").glob("*.jpg"))
    assert len(images) == metadata["images_copied"] > 0
    # Written as one folder: no temporary siblings left behind.
    assert [p.name for p in _gallery_dir(recs_run).parent.iterdir()] == [recs_run.week]


def test_sample_is_deterministic_and_prefers_buyers():
    from hm_assets.serving.gallery import sample_customers

    keys = np.arange(1, 201, dtype=np.int64)
    counts = pd.Series(np.arange(200) % 17, index=keys)
    buyers = keys[::10]
    first = sample_customers(keys, buyers, counts, 10, seed=3, buyers_share=0.5, rich_history_share=0.3)
    assert first == sample_customers(keys, buyers, counts, 10, seed=3, buyers_share=0.5, rich_history_share=0.3)
    assert len({k for k, _ in first}) == 10
    reasons = [r for _, r in first]
    assert reasons.count("bought in the target week") == 5 and reasons.count("rich history") == 3
    assert all(k in set(buyers) for k, r in first if r == "bought in the target week")
    assert sample_customers(keys, buyers, counts, 10, seed=4, buyers_share=0.5, rich_history_share=0.3) != first


def test_placeholder_for_articles_without_image():
    from hm_assets.serving.gallery import Tile, render_tile

    html = render_tile(Tile(108775015, "Strap top", "Vest top · Black", image=None, rank=1, score=0.5), "rec")
    assert "<img" not in html and 'class="placeholder"' in html and 'data-article="0108775015"' in html
    assert "&lt;b&gt;" in render_tile(Tile(1, "<b>bold</b>"), "purchase")  # names are escaped


def test_gallery_in_headless_chromium(recs_run, tmp_path):
    reason = missing_reason()
    if reason and os.environ.get("HM_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (make test installs it: scripts/system-packages)")
    if reason:
        pytest.skip(reason)
    home, week = recs_run.home / "assets", recs_run.week
    recs = pd.read_parquet(home / "recommendations" / f"{week}.parquet")
    truth = pd.read_parquet(home / "transactions" / f"{week}.parquet", columns=["customer_key", "article_id"])
    images = pd.read_parquet(home / "article_images.parquet")
    with_image = set(images.loc[images["exists"] & images["readable"], "article_id"].astype(int))

    from hm_assets.platform.store import HMStore
    from hm_assets.serving.app import create_app

    app = create_app(HMStore(home=str(recs_run.home)))
    with serving(app) as base, headless_chromium(tmp_path / "chromium-profile") as browser:
        browser.get(f"{base}/files/{recs_run.gallery_metadata['gallery']}")  # as the asset page's link opens it
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        page = browser.execute_script(
            """
            const tiles = (root, kind) => Array.from(root.querySelectorAll('figure.tile.' + kind)).map(f => ({
                article: f.dataset.article, rank: f.dataset.rank ? Number(f.dataset.rank) : null,
                hit: f.classList.contains('hit'), img: !!f.querySelector('img'),
                placeholder: !!f.querySelector('.placeholder')}));
            return {
              images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                             width: i.naturalWidth})),
              customers: Array.from(document.querySelectorAll('section.customer')).map(s => ({
                  key: s.dataset.customerKey, hits: Number(s.dataset.hits),
                  recs: tiles(s, 'rec'), purchases: tiles(s, 'purchase')})),
              cold: Array.from(document.querySelectorAll('.cold-profile')).map(p => ({
                  age: p.dataset.age, tiles: tiles(p, 'cold')})),
              hits: document.querySelectorAll('figure.rec.hit').length,
              broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
            };
            """
        )

    assert page["images"], "the gallery shows no pictures"
    assert page["broken"] == 0, [i for i in page["images"] if not i["complete"] or i["width"] == 0][:5]
    assert len(page["customers"]) == recs_run.gallery_metadata["customers_shown"] == 12
    assert page["hits"] == recs_run.gallery_metadata["hits"]
    bought = set(zip(truth["customer_key"].astype(int), truth["article_id"].astype(int)))
    expected_hits = 0
    for customer in page["customers"]:
        key = int(customer["key"])
        mine = recs[recs["customer_key"] == key].sort_values("rank")
        assert [int(t["article"]) for t in customer["recs"]] == mine["article_id"].tolist()
        assert [t["rank"] for t in customer["recs"]] == list(range(1, 13))
        hits = [(key, int(t["article"])) in bought for t in customer["recs"]]
        assert [t["hit"] for t in customer["recs"]] == hits
        assert customer["hits"] == sum(hits)
        expected_hits += sum(hits)
        for tile in customer["recs"] + customer["purchases"]:
            assert tile["img"] == (int(tile["article"]) in with_image) != tile["placeholder"]
    assert page["hits"] == expected_hits > 0
    assert [p["age"] for p in page["cold"]] == ["17", "45", "70"]
    assert all(len(p["tiles"]) == 12 for p in page["cold"])
    assert [t["article"] for t in page["cold"][0]["tiles"]] != [t["article"] for t in page["cold"][2]["tiles"]]
    reasons_with_truth = sum(1 for c in page["customers"] if int(c["key"]) in set(truth["customer_key"]))
    assert reasons_with_truth >= 6  # half the sample bought in the target week
