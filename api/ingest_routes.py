"""Ingestion over HTTP: ``POST /v1/events`` (writer and admin keys) and the signed CRM webhook
``POST /v1/webhooks/crm``. The work is done by ``graph.ingest.batch`` and ``graph.crm``; the
routes check the caller and translate the outcome (bodies are read within their byte limit by
``api.limits.BodyLimit`` before any route runs).

The routes are plain ``def`` functions, so the synchronous writer runs in the threadpool; the
body is read (within its limit) by an async dependency first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.requests import HTTPConnection

from api.auth import requires
from api.deps import SettingsDep, WriterDep
from graph import consistency, strictjson
from graph.auth import WRITERS
from graph.crm import webhook
from graph.crm.mapping import FieldMapping, load_mapping
from graph.errors import InvalidInput, LimitExceeded, PersonaError, Unavailable
from graph.ingest.batch import count, ingest_records
from graph.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["ingestion"])
HTTP_SOURCE = "http"


@dataclass(frozen=True)
class Received:
    body: bytes
    at: float
    """``time.monotonic()`` when the request reached the route (for the freshness metric)."""


def _count_refusal(request: HTTPConnection, source: str, reason: str, n: int = 1) -> None:
    metrics = getattr(request.app.state, "ingest_metrics", None)
    if metrics is not None:
        metrics.reject(source, reason, n)


async def received_body(request: Request) -> Received:
    """The body, already read within PERSONAS_API_MAX_BODY_BYTES by ``api.limits.BodyLimit``."""
    at = time.monotonic()
    return Received(await request.body(), at)


ReceivedDep = Annotated[Received, Depends(received_body)]


@router.post("/events", dependencies=[Depends(requires(WRITERS))])
def post_events(received: ReceivedDep, writer: WriterDep, settings: SettingsDep,
                request: Request, response: Response) -> dict[str, Any]:
    """Ingest a batch of events, ``{"events": [...]}``; one result per event, in order, and
    the consistency token of the write (also in the ``X-Consistency-Token`` header)."""
    try:
        data = strictjson.loads(received.body)
    except strictjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise InvalidInput('the body must be a JSON object {"events": [...]}')
    unknown = sorted(set(data) - {"events"})
    if unknown:
        raise InvalidInput(f"unknown key(s) {unknown} in the body; expected only `events`")
    events: list[Any] = data["events"]
    if len(events) > settings.api_max_batch_events:
        _count_refusal(request, HTTP_SOURCE, "too_large", len(events))
        raise LimitExceeded(f"{len(events)} events in one request, over the limit of "
                            f"{settings.api_max_batch_events} (PERSONAS_API_MAX_BATCH_EVENTS)")
    results = ingest_records(writer, events, source=HTTP_SOURCE, received_at=received.at)
    counts = count(results)
    token = response.headers[consistency.HEADER] = consistency.written(writer.graph)
    return {"accepted": counts.written, "duplicates": counts.duplicates,
            "rejected": counts.rejected, "results": [r.as_dict() for r in results],
            "consistency": {"token": token}}


def crm_mapping(request: HTTPConnection, settings: Settings) -> FieldMapping:
    """The webhook's mapping, loaded once and again when the file changes."""
    path: Path | None = settings.crm_mapping_file
    if path is None:
        raise Unavailable("the CRM webhook has no mapping (set PERSONAS_CRM_MAPPING_FILE)")
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise Unavailable(f"the CRM webhook's mapping file {path} cannot be read") from None
    cached: tuple[Path, int, FieldMapping] | None = getattr(request.app.state, "crm_mapping",
                                                            None)
    if cached is not None and cached[0] == path and cached[1] == stamp:
        return cached[2]
    try:
        mapping = load_mapping(path)
    except PersonaError as exc:
        log.error("the CRM webhook's mapping is invalid: %s", exc)
        raise Unavailable(f"the CRM webhook's mapping is invalid: {exc}") from None
    request.app.state.crm_mapping = (path, stamp, mapping)
    return mapping


@router.post("/webhooks/crm")
def post_crm_webhook(
    received: ReceivedDep, writer: WriterDep, settings: SettingsDep, request: Request,
    x_personas_timestamp: Annotated[str | None, Header()] = None,
    x_personas_signature: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """CRM records pushed by the CRM, signed with the shared secret (no API key)."""
    if settings.crm_webhook_secret is None:
        raise Unavailable("the CRM webhook is not configured (set PERSONAS_CRM_WEBHOOK_SECRET)")
    tolerance = settings.crm_webhook_tolerance_seconds
    try:
        signed_at = webhook.verify(settings.crm_webhook_secret.get_secret_value(),
                                   x_personas_timestamp, x_personas_signature, received.body,
                                   tolerance=tolerance)
    except PersonaError:
        _count_refusal(request, "crm", "unauthorized")
        raise
    assert x_personas_signature is not None  # verify() refuses a delivery without one
    try:
        webhook.ensure_not_seen(writer.graph, x_personas_signature)
    except PersonaError:
        _count_refusal(request, "crm", "conflict")
        raise
    mapping = crm_mapping(request, settings)
    try:
        records = webhook.decode_records(received.body, settings.api_max_batch_events)
    except LimitExceeded:
        _count_refusal(request, "crm", "too_large")
        raise
    results = webhook.apply_delivery(writer.graph, writer.pseudonymizer, mapping, records,
                                     signed=x_personas_signature, signed_at=signed_at,
                                     tolerance=tolerance, metrics=writer.metrics)
    accepted = sum(r.status == "accepted" for r in results)
    return {"accepted": accepted, "rejected": len(results) - accepted,
            "results": [r.as_dict() for r in results]}
