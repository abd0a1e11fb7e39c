"""The http service over a store: the files the UI's links point to, and nothing else (the
recommendations it serves too: test_service.py)."""

from __future__ import annotations

import os

from fastapi.testclient import TestClient

from hm_assets.platform.store import HMStore
from hm_assets.serving.app import create_app


def test_store_files_are_served_over_http_and_nothing_outside_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("HM_SERVE_URL", "http://recs.example:8000")
    store = HMStore(home=str(tmp_path / "home"))
    gallery = store.asset_dir("gallery") / "2026-11-25" / "index.html"
    gallery.parent.mkdir(parents=True)
    gallery.write_text("<html>the week's gallery</html>")
    submission = store.asset_path("submission", "2026-11-25", ".csv")
    submission.parent.mkdir(parents=True)
    submission.write_text("customer_id,prediction\n")
    (store.root / "dagster").mkdir()
    (store.root / "dagster" / "dagster.yaml").write_text("secret: 1")
    (tmp_path / "outside.txt").write_text("not served")

    assert store.relative(gallery) == "assets/gallery/2026-11-25/index.html"  # what metadata shows
    assert store.url(gallery) == "http://recs.example:8000/files/assets/gallery/2026-11-25/index.html"
    client = TestClient(create_app(store))
    answer = client.get("/files/assets/gallery/2026-11-25/index.html")
    assert answer.status_code == 200 and "the week's gallery" in answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert client.get("/files/assets/submission/2026-11-25.csv").text == "customer_id,prediction\n"
    for outside in ("dagster/dagster.yaml", "assets/../dagster/dagster.yaml", "../outside.txt", "assets/gallery/nope.html"):
        assert client.get(f"/files/{outside}").status_code == 404, outside
    page = client.get("/store").text  # the page with the links; / is the recommendations page
    assert store.url(gallery) in page and store.url(submission) in page
    assert store.url(gallery) not in client.get("/").text
    assert client.get("/healthz").json() == {
        "status": "ok", "store": str(store.root), "week": None, "cutoff": None, "loaded_at": None,
        "worker": os.getpid(), "workers": 1,
    }
