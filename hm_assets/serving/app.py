"""The http service over a store: real-time recommendations of the served week, and the
materialized files the UI links to (galleries, submissions, plots).

Answers that need no computing (a stored list, a list computed before and kept) come from the event
loop; computations (purchases, on-demand lists, explanations) run on a pool of ``--threads`` threads,
by default one per core: each is CPU-bound Python and DuckDB, so more at once only share the cores
and the interpreter lock (measured: 8 concurrent clients, 10% purchases, 90 requests/s with 40
threads, 129 with 2 on 2 cores); files are served from anyio's own pool.

    hm-recs serve [--home HM_HOME] [--host 127.0.0.1] [--port 8000] [--week W] [--reload-seconds 30] [--threads N] [--workers N]

With ``--workers N`` uvicorn runs N processes of this app on the port (``worker_app``, built from the
configuration the parent process wrote; ``hm_assets/serving/workers.py`` says what they share).

Recommendations (JSON; see ``hm_assets/serving/service.py`` for which list a customer gets):

* ``GET  /customers/{id}/recommendations?k=12[&age=…&postal_code=…&club_member_status=…&fashion_news_frequency=…&fn=…&active=…]``
* ``POST /customers/{id}/purchases`` ``{"articles": ["0108775015", …], "event_id": …, "price": …, "sales_channel_id": …}``
* ``GET  /customers/{id}/recommendations/{article_id}/why``
* ``GET  /customers/{id}/history``, ``GET /examples``, ``GET /images/{article_id}``
* ``GET  /healthz``, ``GET /metrics`` (Prometheus), ``POST /admin/reload[?week=…]``

``GET /`` is a page to try it in a browser; ``GET /store`` lists the newest galleries and submissions;
``GET /files/<path under HM_HOME>`` serves a file of the store's ``assets/`` folder (fetched from the
object store first when one is configured).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from html import escape
from importlib import resources
from pathlib import Path

import os
from functools import partial

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hm_assets.platform.store import HMStore
from hm_assets.serving.metrics import MetricsMiddleware, ServiceMetrics
from hm_assets.serving.on_demand import MAX_K
from hm_assets.serving.service import ATTRIBUTES, COMPUTED_LISTS, K, RecommendationService, ServiceError
from hm_assets.serving.workers import ServeConfig, WorkerGroup

SERVED_FOLDER = "assets"
STATIC = resources.files("hm_assets.serving") / "static"


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


def store_page(store: HMStore) -> str:
    """Links to the newest galleries and Kaggle submissions of the store."""
    listed = [("gallery", p, p.parent.name) for p in sorted(store.asset_dir("gallery").glob("*/index.html"), reverse=True)[:8]]
    listed += [("Kaggle submission", p, p.stem) for p in sorted(store.asset_dir("submission").glob("*.csv"), reverse=True)[:8]]
    rows = [f'<li><a href="{escape(store.url(path))}">{escape(label)} {escape(week)}</a></li>' for label, path, week in listed]
    body = "\n".join(rows) or "<li>nothing materialized yet</li>"
    return (
        f"<!doctype html><title>hm-recs store</title><h1>hm-recs store</h1><p>Store: {escape(str(store.root))}</p>"
        f'<ul>{body}</ul><p><a href="/">Recommendations</a></p>'
    )


class Purchase(BaseModel):
    """A purchase made just now: ``articles`` (or one ``article``), 10-digit ids as in the Kaggle files."""

    model_config = ConfigDict(extra="forbid")
    articles: list[str | int] | None = None
    article: str | int | None = None
    event_id: str | None = Field(None, min_length=1, max_length=128, description="idempotency key")
    price: float | None = Field(None, ge=0)
    sales_channel_id: int | None = Field(None, ge=1, le=2)

    def article_ids(self) -> list[str | int]:
        if self.articles is not None and self.article is not None:
            raise ServiceError(422, "give either 'articles' or 'article', not both")
        return list(self.articles or ([] if self.article is None else [self.article]))


def attribute_query(*extra: str) -> Callable[..., dict]:
    """A dependency: the customer attributes given as query parameters (overrides for a known
    customer, the profile of a new one); any other parameter than these and ``extra`` is an error."""
    allowed = (*extra, *ATTRIBUTES)

    async def overrides(  # async: no blocking work, so no hop to the thread pool
        request: Request,
        age: float | None = Query(None, ge=0, le=130),
        postal_code: str | None = Query(None, min_length=1, max_length=128),
        club_member_status: str | None = Query(None, min_length=1, max_length=32),
        fashion_news_frequency: str | None = Query(None, min_length=1, max_length=32),
        fn: int | None = Query(None, ge=0, le=1),
        active: int | None = Query(None, ge=0, le=1),
    ) -> dict:
        unknown = sorted(set(request.query_params) - set(allowed))
        if unknown:
            raise ServiceError(422, f"unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
        given = {"age": age, "postal_code": postal_code, "club_member_status": club_member_status,
                 "fashion_news_frequency": fashion_news_frequency, "fn": fn, "active": active}
        return {name: value for name, value in given.items() if value is not None}

    return overrides


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for error in errors:
        where, *path = error.get("loc", ("request",))
        name = ".".join(str(p) for p in path) or "(whole)"
        parts.append(f"{where} {'parameter ' if where in ('query', 'path') else ''}{name}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(
    store: HMStore, week: str | None = None, reload_seconds: float = 0.0, threads: int | None = None,
    computed_lists: int = COMPUTED_LISTS, group: WorkerGroup | None = None,
) -> FastAPI:
    """The service over ``store``. The week is loaded at start-up (the app's lifespan; uvicorn and
    ``with TestClient(app)`` run it): until then, and on a store without recommendations, only the
    files are served. ``threads``: how many computations run at once (default: one per core, shared
    out among the workers). ``group``: the workers of a multi-worker server this app is one of."""
    metrics = ServiceMetrics(group.metrics_dir if group is not None else None)
    workers = group.count if group is not None else 1
    compute_threads = threads or -(-(os.cpu_count() or 2) // workers)
    limiter: dict[str, anyio.CapacityLimiter] = {}

    async def compute(function: Callable, *args, **kwargs):
        """``function`` on the computation pool (created on the event loop, at first use)."""
        if "pool" not in limiter:
            limiter["pool"] = anyio.CapacityLimiter(compute_threads)
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs), limiter=limiter["pool"])

    service = RecommendationService(
        store, week=week, reload_seconds=reload_seconds, metrics=metrics, computed_lists=computed_lists, group=group
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)
            metrics.process_exited()

    app = FastAPI(title="hm-recs", description="Real-time recommendations and the files of the hm-recs store.",
                  lifespan=lifespan)
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse({"detail": _validation_message(errors), "errors": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and request.url.path.startswith("/customers//"):
            return JSONResponse({"detail": "customer id is empty: /customers/{customer_id}/…"}, status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    # ---- pages and files -------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/static/app.js")
    def script() -> Response:
        return Response((STATIC / "app.js").read_text(), media_type="text/javascript")

    @app.get("/store", response_class=HTMLResponse)
    def listing() -> str:
        return store_page(store)

    @app.get("/files/{relative:path}")
    def files(relative: str) -> FileResponse:
        return FileResponse(served_file(store, relative))

    @app.get("/images/{article_id}")
    def image(article_id: str) -> FileResponse:
        return FileResponse(service.image(article_id), media_type="image/jpeg",
                            headers={"Cache-Control": "public, max-age=86400"})

    # ---- operations ------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict:
        return service.health()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.post("/admin/reload")
    def reload(week: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$")) -> dict:
        """Serve ``week`` now (and stay on it), or without it the newest week (and follow new ones)."""
        return service.choose(week)

    # ---- recommendations -------------------------------------------------------------------

    @app.get("/customers/{customer_id}/recommendations")
    async def recommendations(
        customer_id: str,
        k: int = Query(K, ge=1, le=MAX_K),
        bought: str | None = Query(None, description="what if: comma-separated article ids imagined bought (nothing is recorded)"),
        overrides: dict = Depends(attribute_query("k", "bought")),
    ) -> JSONResponse:
        what_if = [a for a in (bought or "").split(",") if a.strip()]
        # A stored or kept list is a lookup: answered here, on the event loop, so that it never
        # queues behind computations.
        answer = None if what_if else service.ready_recommendations(customer_id, k, overrides)
        if answer is None:
            answer = await compute(service.recommendations, customer_id, k, overrides, what_if)
        return JSONResponse(answer)

    @app.post("/customers/{customer_id}/purchases")
    async def purchases(
        customer_id: str, body: Purchase, k: int = Query(K, ge=1, le=MAX_K), overrides: dict = Depends(attribute_query("k"))
    ) -> JSONResponse:
        return JSONResponse(await compute(
            service.purchase, customer_id, body.article_ids(), event_id=body.event_id, price=body.price,
            sales_channel_id=body.sales_channel_id, k=k, overrides=overrides,
        ))

    @app.get("/customers/{customer_id}/recommendations/{article_id}/why")
    async def why(customer_id: str, article_id: str, overrides: dict = Depends(attribute_query())) -> JSONResponse:
        return JSONResponse(await compute(service.why, customer_id, article_id, overrides))

    @app.get("/customers/{customer_id}/history")
    def history(customer_id: str, overrides: dict = Depends(attribute_query())) -> JSONResponse:
        # The page passes a new customer's attributes along; the history does not depend on them.
        return JSONResponse(service.history(customer_id))

    @app.get("/examples")
    async def examples() -> dict:
        return service.examples()

    return app


def worker_app() -> FastAPI:
    """The app of one worker of ``hm-recs serve --workers N`` (uvicorn's factory, called in each worker
    process), from the configuration its parent wrote (``HM_SERVE_CONFIG``)."""
    config = ServeConfig.from_environment()
    return create_app(
        HMStore(home=config.home), week=config.week, reload_seconds=config.reload_seconds, threads=config.threads,
        computed_lists=COMPUTED_LISTS if config.computed_lists is None else config.computed_lists, group=config.group,
    )
