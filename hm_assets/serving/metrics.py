"""Prometheus metrics of the recommendation service, in a registry the app owns (``GET /metrics``).

The process-wide default registry of ``prometheus_client`` is not used: two apps in one process (the
tests build many) keep separate counts.

The workers of ``hm-recs serve --workers N`` count in prometheus_client's multiprocess mode: each
worker's values go to files in a folder the server's parent process creates (and removes at exit),
and ``/metrics`` of any worker adds up every worker's files. prometheus_client picks its mode when it
is imported, from ``PROMETHEUS_MULTIPROC_DIR``, so that variable must name the folder in every worker
before anything imports it (the parent sets it before it starts them). Gauges then say how the
workers' values combine (``multiprocess_mode``); an ``Info`` is not supported there, so the served
week is a gauge with the week as label (1: served, 0: served before).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# From 1 ms (a stored list) to 2 s (an on-demand list on a cold recommender).
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class ServiceMetrics:
    """The service's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        """``multiprocess_dir``: the folder of a multi-worker server's counts (None: this process's only)."""
        if multiprocess_dir is not None and os.environ.get(MULTIPROCESS_VARIABLE) != str(multiprocess_dir):
            raise RuntimeError(f"{MULTIPROCESS_VARIABLE} must be {multiprocess_dir} in this process before "
                               f"prometheus_client is imported (it is {os.environ.get(MULTIPROCESS_VARIABLE)!r})")
        self.multiprocess_dir = multiprocess_dir
        self._week: str | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hm_http_requests", "HTTP requests answered, by endpoint (route template) and status code",
            ["endpoint", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "hm_http_request_duration_seconds", "Time to answer a request, by endpoint (route template)",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.recommendations = Counter(
            "hm_recommendation_lists", "Recommendation lists answered, by source (stored, online, cold_start)",
            ["source"], registry=self.registry,
        )
        self.purchases = Counter(
            "hm_purchase_events_accepted", "Purchase events appended to the event log", registry=self.registry
        )
        self.duplicates = Counter(
            "hm_purchase_events_duplicate", "Purchase requests whose event_id was already in the log (not appended)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "hm_reloads", "Week reloads, by outcome (loaded, failed)", ["outcome"], registry=self.registry
        )
        self.week = Gauge(
            "hm_served_week_info", "The week whose artefacts the service answers from (1; 0: a week served before)",
            ["week"], multiprocess_mode="livemax", registry=self.registry,
        )
        self.week_loaded = Gauge(
            "hm_served_week_loaded_timestamp_seconds", "When the served week was loaded (Unix time; the newest of the workers')",
            multiprocess_mode="livemax", registry=self.registry,
        )
        self.computed_lists = Counter(
            "hm_computed_list_lookups",
            "Lookups of a computed (online or cold-start) list in the week's cache, by result (hit: answered "
            "without computing)",
            ["result"], registry=self.registry,
        )
        self.online_customers = Gauge(
            "hm_online_customers", "Customers with online purchases since the served week's cut-off",
            multiprocess_mode="livemax", registry=self.registry,
        )

    def served(self, week: str, online_customers: int) -> None:
        if self._week is not None and self._week != week:
            self.week.labels(self._week).set(0)
        self._week = week
        self.week.labels(week).set(1)
        self.week_loaded.set(time.time())
        self.online_customers.set(online_customers)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=str(self.multiprocess_dir))
        return generate_latest(everyone)

    def process_exited(self) -> None:
        """This worker's gauges stop counting (its counters' files stay: what it counted still counts)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiprocess_dir))


class MetricsMiddleware:
    """Counts and times every http request by the route it matched (``/customers/{customer_id}/...``,
    not the concrete path, so that the label set stays small)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered with a 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by the router on the same scope
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
