"""The FastAPI application factory: GraphQL at /graphql, run pictures, health and readiness
probes. Everything but the probes needs an API key (`api.auth`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from neo4j import AsyncDriver
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match, Route
from starlette.types import Scope
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from api.auth import (
    CredentialDep,
    KeyLimits,
    PrincipalCache,
    PrincipalDep,
    TokenBuckets,
    WebSocketLimit,
    neo4j_loader,
    requires,
)
from api.deps import DriverDep
from api.documents import JsonRouter
from api.errors import UNAVAILABLE_ERRORS, UNAVAILABLE_MESSAGE
from api.ingest_routes import router as ingest_router
from api.limits import AddressLimit, BodyLimit
from api.mcp_server import app_backend, http_endpoint
from api.metrics import RequestMetrics
from api.pages.routes import render_graphiql
from api.pages.routes import router as pages_router
from api.request import RequestContext
from api.schema import build_schema
from api.segmentation import SegmentationRunner
from api.situation_routes import router as situation_router
from api.tracing import install_tracing
from graph.auth import ANALYSTS
from graph.db import DriverReader, LoopGraph, close_async_driver, create_async_driver
from graph.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PersonaError,
    RateLimited,
    ReadTimedOut,
    Unauthenticated,
    Unavailable,
)
from graph.ingest.metrics import IngestMetrics
from graph.ingest.pipeline import build_writer
from graph.migrate import latest_version
from graph.profile.prefetch import plan_ahead
from graph.profile.status import schema_version
from graph.settings import Settings

log = logging.getLogger(__name__)
PRELOAD_SHUTDOWN_WAIT_S = 5.0


def freeze_startup_objects(_: object) -> None:
    """Move everything the service has loaded by now (schema, drivers, the segmentation model
    and the libraries behind it) out of the garbage collector's sight.

    Those objects live as long as the process, yet each full collection walked all of them:
    pauses every few seconds at 100 requests/s, during which no request was served, and short
    ones once they are frozen (docs/performance.md)."""
    gc.collect()
    gc.freeze()


INGEST_SOURCES = {"/v1/events": "http", "/v1/webhooks/crm": "crm",
                  "/v1/webhooks/context": "context"}
"""Ingest metrics' source of each ingestion route, for refusals before the route runs."""

HTTP_STATUS = {InvalidInput: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404,
               Conflict: 409, LimitExceeded: 413, RateLimited: 429, Unavailable: 503,
               ReadTimedOut: 504}


HTTP_CODES = {400: InvalidInput.code, 401: Unauthenticated.code, 403: Forbidden.code,
              404: NotFound.code, 405: "METHOD_NOT_ALLOWED", 408: "TIMEOUT",
              409: Conflict.code, 413: LimitExceeded.code, 415: "UNSUPPORTED_MEDIA_TYPE",
              422: InvalidInput.code, 429: RateLimited.code}


PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """The methods some route of the app takes on the request's path (RFC 9110's ``Allow``),
    found by asking the routes as the router does. Starlette named only the first route
    matching the path: ``/graphql`` answered ``Allow: GET`` though it takes POST too, and
    strawberry's own 405 named none."""
    routes = request.app.router.routes
    return ", ".join(method for method in PROBED_METHODS
                     if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                            for route in routes))


class LabelledRoute(Route):
    """A plain ASGI route that, like FastAPI's own, puts itself in the scope when it matches,
    so that the access log and ``/metrics`` label its requests by its path (``/mcp`` was
    counted as ``unmatched``, beside unknown paths)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


async def http_refusal(request: Request, exc: Exception) -> JSONResponse:
    """Refusals of the framework's own (an unknown route, a method a route does not take, and
    strawberry's transport refusals: ``documents.JsonRouter``) in the same JSON shape, with a
    code, as every other error of the API; FastAPI's default was ``{"detail": ...}`` and
    strawberry's plain text. A 405 says which methods the path takes."""
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, exc.status_code,
                        headers=headers or None)


async def request_invalid(_: Request, exc: Exception) -> JSONResponse:
    """A request FastAPI could not bind to a route's parameters: 400 ``BAD_USER_INPUT`` with the
    first reason, as for every other bad input (FastAPI's default was a 422 of its own shape)."""
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = next(iter(exc.errors()), {})
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
    return JSONResponse({"error": {"code": InvalidInput.code, "message": message}}, 400)


async def persona_error(_: Request, exc: Exception) -> JSONResponse:
    """Domain errors become JSON with a code; the status follows the error's kind."""
    assert isinstance(exc, PersonaError)
    status = next((s for cls, s in HTTP_STATUS.items() if isinstance(exc, cls)), 500)
    # A 401 must name the scheme the client should use (RFC 9110).
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return JSONResponse({"error": {"code": exc.code, "message": str(exc)}}, status,
                        headers=headers)


RETRY_AFTER_S = 5


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """Neo4j down or restarting, past the driver's retries: 503, to be retried, never a 500."""
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse({"error": {"code": "UNAVAILABLE", "message": UNAVAILABLE_MESSAGE}}, 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


class Router(JsonRouter):
    """GraphQL over HTTP, answering 503 when the database was unavailable to any field (the
    error itself carries ``UNAVAILABLE``; ``api.errors``), so that clients and load balancers
    retry as they do for every other route."""

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        answers = response_data if isinstance(response_data, list) else [response_data]
        if any((e.get("extensions") or {}).get("code") == "UNAVAILABLE"
               for answer in answers for e in answer.get("errors") or ()):
            sub_response.status_code = 503
            sub_response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return super().create_response(response_data, sub_response)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # GraphiQL on the API's own copy of its scripts (api.pages): no CDN.
        return render_graphiql(request.app.state.settings)


async def get_context(request: HTTPConnection, principal: PrincipalDep,
                      key: CredentialDep) -> RequestContext:
    # The app's shared services straight from its state, not as one dependency each: FastAPI
    # solves each dependency anew on every request, a visible share of the API's CPU per
    # chatbot request (docs/performance.md). ``api.deps`` reads the same state for routes.
    state = request.app.state
    return RequestContext(state.driver, state.settings, principal, state.segmentation,
                          state.writer, key=key, principals=state.principals,
                          key_limits=state.key_limits)


def create_served_app() -> FastAPI:
    """The factory `personas serve` gives uvicorn: the app in a process of its own, which may
    therefore also set that process's garbage collector (``freeze_startup_objects``)."""
    return create_app(served=True)


async def warm_chatbot_plan(driver: AsyncDriver, settings: Settings) -> None:
    """Have Neo4j plan the chatbot's queries (``USER_PROFILE`` and ``_BY_IDENTIFIER``, every
    part) before the first chatbot asks: on a freshly started server planning that query takes
    seconds, so the first request would. A request that comes while they are being made still
    waits (figures: docs/performance.md)."""
    try:
        await plan_ahead(DriverReader(driver, settings.neo4j_database), settings,
                         datetime.now(UTC))
    except Exception:  # noqa: BLE001 - only an optimization; /readyz reports the database
        log.warning("could not plan the chatbot query ahead", exc_info=True)


def create_app(settings: Settings | None = None, *, served: bool = False) -> FastAPI:
    """Build the service. The Neo4j driver is opened in the lifespan and closed at shutdown.

    ``served``: the app runs in a process of its own (``personas serve``). It then plans the
    chatbot query at start, and once the segmentation model is loaded (or failed to) it freezes
    what the process holds out of the garbage collector's sight."""
    settings = settings or Settings()
    settings.require_pseudonym_key()  # outside demo mode, no API without a real key
    settings.require_neo4j_password()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Bounded retries: a request answers 503 within seconds while Neo4j is down, instead
        # of after the driver's 30 s of retries (twice over for an event batch, which reads
        # first).
        app.state.driver = create_async_driver(settings,
                                               retry_s=settings.api_unavailable_wait_s)
        app.state.principals = PrincipalCache(
            neo4j_loader(app.state.driver, settings.neo4j_database, demo=settings.demo_mode),
            ttl=settings.api_key_cache_seconds)
        # Every write (events, webhooks, erasure, situation pushes, runs) goes through the write
        # code every other source uses, on this one driver (``LoopGraph``).
        graph = LoopGraph(app.state.driver, settings.neo4j_database, asyncio.get_running_loop())
        # Made here, not at import: one lock per running app, on the loop that serves it.
        app.state.segmentation = SegmentationRunner(settings, graph)
        app.state.writer = build_writer(graph, settings, app.state.ingest_metrics)
        # Like the Kafka consumer, ready newcomer assignment before the first batch needs it;
        # in the background, so that serving reads does not wait for a model to load.
        preload = asyncio.create_task(asyncio.to_thread(app.state.writer.prepare_assignment))
        warm = None
        if served:
            preload.add_done_callback(freeze_startup_objects)
            warm = asyncio.create_task(warm_chatbot_plan(app.state.driver, settings))
        try:
            async with app.state.mcp.running():  # the MCP endpoint's session manager
                yield
        finally:
            # Its thread uses the driver closed below; a preload still waiting on an unreachable
            # server (the driver retries for 30 s) must not hold up the shutdown: closing the
            # driver ends it, and prepare_assignment logs that.
            if warm is not None:  # the plan warm-up: nothing to keep
                warm.cancel()
                await asyncio.gather(warm, return_exceptions=True)
            _, pending = await asyncio.wait({preload}, timeout=PRELOAD_SHUTDOWN_WAIT_S)
            if pending:
                log.warning("segment assignment was still loading at shutdown; stopping it")
            await close_async_driver(app.state.driver)

    # The newest migration this code ships with, when its folder is at hand (a checkout, or
    # PERSONAS_MIGRATIONS_DIR).
    expected_version = latest_version(settings.migrations_dir)
    # No redirect for a trailing slash: Starlette builds its Location from the client's Host
    # header, so a forged Host would send the client elsewhere; such a path is a 404.
    # No Swagger UI or ReDoc pages (`/docs`, `/redoc`): FastAPI builds them on scripts, styles
    # and fonts from public CDNs, run on the API's own origin, where GraphiQL keeps the key a
    # user typed (in the browser's storage). The OpenAPI document stays (`/openapi.json`): the
    # routes are public, as the SDL is.
    app = FastAPI(title="persona-graph", version="0.1.0", lifespan=lifespan,
                  redirect_slashes=False, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.key_limits = KeyLimits(settings.api_key_rate_per_second,
                                     settings.api_key_rate_burst,
                                     settings.api_max_streams_per_key)
    app.add_exception_handler(PersonaError, persona_error)
    app.add_exception_handler(StarletteHTTPException, http_refusal)
    app.add_exception_handler(RequestValidationError, request_invalid)
    request_metrics = RequestMetrics()
    app.state.ingest_metrics = IngestMetrics(request_metrics.registry)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, database_unavailable)

    def body_refused(path: str) -> None:
        source = INGEST_SOURCES.get(path)
        if source is not None:
            app.state.ingest_metrics.reject(source, "too_large")

    # Inside the access middleware, so that refusals are timed and counted like any answer.
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes, on_refused=body_refused,
                       timeout_s=settings.api_body_timeout_s)
    app.add_middleware(WebSocketLimit)
    # Outside the key look-ups and the body read: the first thing a request without a live
    # key meets.
    app.add_middleware(AddressLimit, buckets=TokenBuckets(settings.api_address_rate_per_second,
                                                         settings.api_address_rate_burst),
                       max_header_bytes=settings.api_max_header_bytes)
    token = settings.metrics_token
    request_metrics.install(app, token.get_secret_value() if token is not None else None)
    install_tracing(settings)
    graphql = Router(
        build_schema(settings), context_getter=get_context, graphql_ide="graphiql",
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    app.include_router(graphql, prefix="/graphql")
    app.include_router(ingest_router)
    app.include_router(situation_router)
    # The MCP tools over streamable HTTP (api.mcp_server), behind the same keys and limits.
    app.state.mcp = http_endpoint(app_backend(app.state))
    # POST only: the endpoint is stateless (no session to DELETE) and sends nothing unasked,
    # so a GET stream carried nothing and stayed open for ever, outside the per-key cap on
    # streams (the SDK's client takes the 405 as "no stream", as the protocol allows).
    app.router.routes.append(LabelledRoute("/mcp", app.state.mcp.app, methods=["POST"]))
    app.include_router(pages_router)  # GraphiQL's assets and the persona explorer (api.pages)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(driver: DriverDep) -> JSONResponse:
        try:
            version = await schema_version(DriverReader(driver, settings.neo4j_database))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__,
                                 "detail": "Neo4j did not answer; see the API's log"}, 503)
        if version is None:
            return JSONResponse({"status": "unmigrated"}, 503)
        if expected_version is not None and version < expected_version:
            # The API writes too (ingestion, webhooks, runs): not ready on an old schema.
            return JSONResponse({"status": "schema_behind", "schema_version": version,
                                 "expected_version": expected_version}, 503)
        return JSONResponse({"status": "ready", "schema_version": version})

    @app.get("/runs/{run_id}/plots/{kind}.png", response_class=FileResponse,
             dependencies=[Depends(requires(ANALYSTS))])
    def run_plot(run_id: str, kind: str) -> FileResponse:
        """A picture of a segmentation run, drawn once from its saved artifacts and kept.

        A plain (threadpool) route: drawing is CPU work that must not block the event loop.
        """
        from graph.segments.artifacts import load, run_dir
        from graph.segments.plots import check_kind, render

        check_kind(kind)
        path = run_dir(settings.resolved_runs_dir, run_id) / f"{kind}.png"
        if not path.exists():
            try:
                artifacts = load(settings.resolved_runs_dir, run_id)
            except NotFound:
                # Without the runs folder's path, which the CLI's message names.
                raise NotFound(f"no saved artifacts for run {run_id!r} on this server"
                               ) from None
            render(kind, artifacts, path)
        return FileResponse(path, media_type="image/png")

    return app
