"""Prometheus metrics of the recommendation service, in a registry the app owns (``GET /metrics``).

The process-wide default registry of ``prometheus_client`` is not used: two apps in one process (the
tests build many) keep separate counts.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# From 1 ms (a stored list) to 2 s (an on-demand list on a cold recommender).
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class ServiceMetrics:
    """The service's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
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
        self.week = Info("hm_served_week", "The week whose artefacts the service answers from", registry=self.registry)
        self.week_loaded = Gauge(
            "hm_served_week_loaded_timestamp_seconds", "When the served week was loaded (Unix time)", registry=self.registry
        )
        self.computed_lists = Counter(
            "hm_computed_list_lookups",
            "Lookups of a computed (online or cold-start) list in the week's cache, by result (hit: answered "
            "without computing)",
            ["result"], registry=self.registry,
        )
        self.online_customers = Gauge(
            "hm_online_customers", "Customers with online purchases since the served week's cut-off", registry=self.registry
        )

    def served(self, week: str, online_customers: int) -> None:
        self.week.info({"week": week})
        self.week_loaded.set(time.time())
        self.online_customers.set(online_customers)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
