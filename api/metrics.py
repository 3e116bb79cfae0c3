"""Request metrics for Prometheus (`/metrics`), one access-log line per request with latency,
and the number of Cypher round trips of each GraphQL operation.

GraphQL requests are also timed by operation (``personas_graphql_operation_seconds``): its type
and root fields, which validation has checked against the schema, so the series stay bounded.
The process's garbage collections are counted by generation (``python_gc_collections_total``):
a full collection stops the event loop, and at 100 requests/s their rate set the p99
(docs/performance.md). The segmentation gauges are read from the graph when Prometheus scrapes
(at most every ``RUN_STATUS_TTL_S``): runs are written by jobs that come and go, the graph
keeps them.

`/metrics` holds no personal data, but it tells an attacker what the service does and how busy
it is, so it is not public: it needs PERSONAS_METRICS_TOKEN as a bearer token, or, with no
token set, a client on this host. Not an API key: scraping must keep working while Neo4j,
where keys live, is down.

Each app has its own registry (no module-level state), so tests and several apps in one process
do not share counters. Routes are labelled by their template (`/runs/{run_id}/plots/{kind}.png`),
never by the raw path, so the number of series stays bounded.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar

from fastapi import FastAPI, Request, Response
from graphql import FieldNode, get_operation_ast
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from api.auth import credentials
from graph.db import DriverReader
from graph.errors import Forbidden, Unauthenticated
from graph.profile.status import run_status

log = logging.getLogger("api.access")
cypher_log = logging.getLogger("api.cypher")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OPERATION_FIELDS_MAX = 3
"""Root fields named in an operation's label; more are labelled ``several``."""
RUN_STATUS_TTL_S = 10.0
RUN_MEASURES = ("k", "n_users", "silhouette", "stability_ari", "ari_vs_previous",
                "users_moved", "new_personas")
_operations: ContextVar[list[str] | None] = ContextVar("graphql_operations", default=None)
"""The labels of the GraphQL operations the current request ran (set by ``AccessMiddleware``,
filled by ``CypherRoundTrips``)."""


def operation_label(context: ExecutionContext) -> str:
    """``query user`` or ``mutation ingestEvents``: an operation's type and root fields, for a
    bounded label (``invalid`` when it did not parse or validate)."""
    document = context.graphql_document
    if document is None or context.pre_execution_errors:
        return "invalid"
    operation = get_operation_ast(document, context.operation_name)
    if operation is None:
        return "invalid"
    fields = sorted({node.name.value for node in operation.selection_set.selections
                     if isinstance(node, FieldNode)} - {"__typename"})
    names = "+".join(fields) if 0 < len(fields) <= OPERATION_FIELDS_MAX else "several"
    return f"{operation.operation.value} {names}"


class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        GCCollector(registry=self.registry)
        self.requests = Counter("personas_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("personas_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.operations = Histogram(
            "personas_graphql_operation_seconds",
            "GraphQL request latency by operation (type and root fields)", ["operation"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.runs = Gauge("personas_segmentation_runs",
                          "Segmentation runs in the graph, by status", ["status"],
                          registry=self.registry)
        self.last_run = Gauge("personas_segmentation_last_run_timestamp_seconds",
                              "When the latest segmentation run was published",
                              registry=self.registry)
        self.run_measures = Gauge(
            "personas_segmentation_latest_run",
            "The latest run's measures: k, n_users, silhouette, stability_ari (under "
            "resampling), ari_vs_previous, users_moved, new_personas", ["measure"],
            registry=self.registry)
        self._runs_read_at = -RUN_STATUS_TTL_S

    def observe(self, scope: Scope, status: int, elapsed: float) -> None:
        matched = scope.get("route")
        # Routers mounted under a prefix (GraphQL) keep an empty template: their path is the
        # prefix itself, still one series per route.
        route = (getattr(matched, "path", "") or scope["path"]) if matched else "unmatched"
        method = scope["method"]
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(elapsed)
        log.info("%s %s %d %.1f ms", method, route, status, elapsed * 1000,
                 extra={"method": method, "route": route, "status": status,
                        "latency_ms": round(elapsed * 1000, 1)})

    async def refresh_runs(self, reader: DriverReader) -> None:
        """Read the segmentation gauges from the graph, unless read in the last few seconds.
        A failed read keeps the last values (the database's state is ``/readyz``'s to say)."""
        if time.monotonic() - self._runs_read_at < RUN_STATUS_TTL_S:
            return
        self._runs_read_at = time.monotonic()
        try:
            status = await run_status(reader)
        except Exception:  # noqa: BLE001 - metrics must still be served
            log.warning("could not read the segmentation runs for /metrics", exc_info=True)
            return
        self.runs.labels("complete").set(status.complete)
        self.runs.labels("failed").set(status.failed)
        latest = status.latest or {}
        if latest.get("created_at_ms") is not None:
            self.last_run.set(latest["created_at_ms"] / 1000)
        for measure in RUN_MEASURES:
            value = latest.get(measure)
            if value is not None:
                self.run_measures.labels(measure).set(value)

    def install(self, app: FastAPI, token: str | None) -> None:
        """The access middleware, and `/metrics` guarded by ``token`` (``check_scraper``)."""
        app.add_middleware(AccessMiddleware, metrics=self)

        @app.get("/metrics", include_in_schema=False)
        async def metrics(request: Request) -> Response:
            check_scraper(request, token)
            driver = getattr(request.app.state, "driver", None)
            if driver is not None:
                await self.refresh_runs(DriverReader(driver, request.app.state.settings
                                                     .neo4j_database))
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def check_scraper(request: Request, token: str | None) -> None:
    """With a ``token``: the request must present it (``Authorization: Bearer``), from any
    address. Without one: the client must be on this host (a loopback address)."""
    if token is not None:
        given = credentials(request.headers.get("authorization"),
                            request.headers.get("x-api-key"))
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthenticated("/metrics needs the metrics token (PERSONAS_METRICS_TOKEN) "
                                  "as a bearer token")
        return
    host = request.client.host if request.client else ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise Forbidden("/metrics answers only clients on this host unless "
                        "PERSONAS_METRICS_TOKEN is set")


class AccessMiddleware:
    """Times every HTTP request for ``RequestMetrics``. Plain ASGI rather than
    ``@app.middleware("http")``, whose per-request task and streams cost CPU on every request."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        operations: list[str] = []
        token = _operations.set(operations)
        try:
            await self.app(scope, receive, send_status)
        finally:
            _operations.reset(token)
            elapsed = time.perf_counter() - start
            # The router has put the matched route into the (shared) scope by now.
            self.metrics.observe(scope, status, elapsed)
            for label in operations:
                self.metrics.operations.labels(label).observe(elapsed)


class CypherRoundTrips(SchemaExtension):
    """Logs how many Cypher round trips each operation made (logger ``api.cypher``, DEBUG), so a
    resolver that queries once per item shows up at once; and names the operation for its
    latency metric (``AccessMiddleware``)."""

    def on_operation(self) -> Iterator[None]:
        yield
        operations = _operations.get()
        span = trace.get_current_span()
        if operations is not None or span.is_recording():
            label = operation_label(self.execution_context)
            if operations is not None:
                operations.append(label)
            span.set_attribute("graphql.operation", label)
        request = self.execution_context.context
        cypher_log.debug("operation %s: %d Cypher round trips",
                         self.execution_context.operation_name or "-",
                         getattr(request, "round_trips", 0))
