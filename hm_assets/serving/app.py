"""The http service over a store: the materialized files the UI links to (galleries, submissions,
plots), so that a link in an asset's metadata opens in a browser, on this machine or a remote one.

    hm-recs serve [--home HM_HOME] [--host 127.0.0.1] [--port 8000]

``GET /files/<path under HM_HOME>`` serves a file of the store's ``assets/`` folder (fetched from the
object store first when one is configured); ``GET /`` lists the newest galleries and submissions;
``GET /healthz`` answers ``ok``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

from hm_assets.store import HMStore

SERVED_FOLDER = "assets"


def served_file(store: HMStore, relative: str) -> Path:
    """The file a ``/files/`` path names, if it lies inside the store's assets folder."""
    root = (store.root / SERVED_FOLDER).resolve()
    candidate = (store.root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise HTTPException(status_code=404, detail=f"{relative} is not a file of the store's {SERVED_FOLDER}/ folder")
    store.fetch(candidate)
    if not candidate.is_file():
        raise HTTPException(status_code=404, detail=f"{relative} does not exist (materialize it first)")
    return candidate


def index_page(store: HMStore) -> str:
    rows = []
    for asset, suffix, label in (("gallery", "/index.html", "gallery"), ("submission", ".csv", "Kaggle submission")):
        folder = store.asset_dir(asset)
        names = sorted((p.name for p in folder.iterdir()), reverse=True) if folder.is_dir() else []
        for name in names[:8]:
            path = folder / name / "index.html" if suffix == "/index.html" else folder / name
            if path.is_file() and (suffix != ".csv" or name.endswith(".csv")):
                week = name.removesuffix(".csv")
                rows.append(f'<li><a href="{escape(store.url(path))}">{escape(label)} {escape(week)}</a></li>')
    body = "\n".join(rows) or "<li>nothing materialized yet</li>"
    return f"<!doctype html><title>hm-recs</title><h1>hm-recs</h1><p>Store: {escape(str(store.root))}</p><ul>{body}</ul>"


def create_app(store: HMStore) -> FastAPI:
    app = FastAPI(title="hm-recs", description="Files of the hm-recs store over http.")

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return index_page(store)

    @app.get("/files/{relative:path}")
    def files(relative: str) -> FileResponse:
        return FileResponse(served_file(store, relative))

    return app
