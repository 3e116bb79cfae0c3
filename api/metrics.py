"""Request metrics for Prometheus (`/metrics`), one access-log line per request with latency,
and the number of Cypher round trips of each GraphQL operation.

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

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from api.auth import credentials
from graph.errors import Forbidden, Unauthenticated

log = logging.getLogger("api.access")
cypher_log = logging.getLogger("api.cypher")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("personas_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("personas_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)

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

    def install(self, app: FastAPI, token: str | None) -> None:
        """The access middleware, and `/metrics` guarded by ``token`` (``check_scraper``)."""
        app.add_middleware(AccessMiddleware, metrics=self)

        @app.get("/metrics", include_in_schema=False)
        async def metrics(request: Request) -> Response:
            check_scraper(request, token)
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
    ``@app.middleware("http")``, whose per-request task and streams cost about 1 ms of CPU."""

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

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router has put the matched route into the (shared) scope by now.
            self.metrics.observe(scope, status, time.perf_counter() - start)


class CypherRoundTrips(SchemaExtension):
    """Logs how many Cypher round trips each operation made (logger ``api.cypher``, DEBUG), so a
    resolver that queries once per item shows up at once."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        cypher_log.debug("operation %s: %d Cypher round trips",
                         self.execution_context.operation_name or "-",
                         getattr(context, "round_trips", 0))
