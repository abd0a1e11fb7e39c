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
    """Links to the newest galleries and Kaggle submissions of the store."""
    listed = [("gallery", p, p.parent.name) for p in sorted(store.asset_dir("gallery").glob("*/index.html"), reverse=True)[:8]]
    listed += [("Kaggle submission", p, p.stem) for p in sorted(store.asset_dir("submission").glob("*.csv"), reverse=True)[:8]]
    rows = [f'<li><a href="{escape(store.url(path))}">{escape(label)} {escape(week)}</a></li>' for label, path, week in listed]
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
