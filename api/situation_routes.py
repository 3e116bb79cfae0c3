"""``POST /v1/webhooks/context``: weather observations and local events pushed by a provider,
validated as a whole (a bad record refuses the push, naming each bad record) and written in one
transaction. Writer and admin keys only."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import requires
from graph import strictjson
from graph.auth import WRITERS
from graph.db import Graph
from graph.errors import InvalidInput, InvalidRecords, LimitExceeded
from graph.ingest.metrics import IngestMetrics
from graph.settings import Settings
from graph.situation.models import parse_situation
from graph.situation.store import write_situation

MAX_PUSH_BYTES = 5_000_000
MAX_PUSH_RECORDS = 10_000
SOURCE = "context"
"""The ingest metrics' source family of these pushes."""

router = APIRouter()


def _graph(request: Request) -> Graph:
    """The app's synchronous graph, shared with its event writer (call it from a thread)."""
    graph: Graph = request.app.state.writer.graph
    return graph


@router.post("/v1/webhooks/context", dependencies=[Depends(requires(WRITERS))])
async def push_context(request: Request) -> JSONResponse:
    """Write the pushed context (the format of a context file) and answer with counts; 400
    BAD_USER_INPUT with every bad record's reason and nothing written otherwise."""
    settings: Settings = request.app.state.settings
    metrics: IngestMetrics = request.app.state.ingest_metrics
    raw = await request.body()  # within PERSONAS_API_MAX_BODY_BYTES (api.limits.BodyLimit)
    if len(raw) > MAX_PUSH_BYTES:
        raise LimitExceeded(f"body of {len(raw)} bytes; at most {MAX_PUSH_BYTES}")
    try:
        # orjson: deep nesting and huge numbers are decoding errors (the standard library
        # raised RecursionError and ValueError, a 500).
        data = strictjson.loads(raw)
    except strictjson.JSONDecodeError as exc:
        metrics.reject(SOURCE, "malformed")
        raise InvalidInput(f"body is not valid JSON ({exc})") from None
    try:
        batch = parse_situation(data, origin="body", max_records=MAX_PUSH_RECORDS)
    except InvalidRecords as exc:
        metrics.reject(SOURCE, "invalid", len(exc.problems))
        return JSONResponse({"error": {
            "code": exc.code, "message": str(exc),
            "records": [{"record": where, "reason": why} for where, why in exc.problems]}},
            400)
    except InvalidInput:
        metrics.reject(SOURCE, "invalid")
        raise
    metrics.received.labels(SOURCE).inc(batch.size)
    started = time.perf_counter()
    counts = await run_in_threadpool(write_situation, _graph(request), batch,
                                     valid_hours=settings.weather_valid_hours)
    new = counts.new_weather + counts.new_local_events
    metrics.batch(SOURCE, time.perf_counter() - started, new,
                  counts.weather + counts.local_events - new)
    return JSONResponse(counts.as_dict())
