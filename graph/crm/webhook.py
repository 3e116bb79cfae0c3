"""The CRM webhook without the web layer: signature and timestamp checks, replay protection and
the application of one delivery's records.

The sender signs ``"{timestamp}.{raw body}"`` with HMAC-SHA256 under the shared secret and sends
``X-Personas-Timestamp: <epoch seconds>`` and ``X-Personas-Signature: sha256=<hex>``. A delivery
is identified by (the SHA-256 of) its signature; it is recorded in the transaction that applies
it, under a uniqueness constraint, so that every API process refuses a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from neo4j.exceptions import ConstraintError

from graph.crm import queries as q
from graph.crm.importer import METRICS_SOURCE, Delivery, apply_records
from graph.crm.mapping import CrmRecord, FieldMapping, dead_letter_raw, parse_record
from graph.db import Graph
from graph.errors import Conflict, InvalidInput, LimitExceeded, Unauthenticated
from graph.ingest.batch import ERASED_REASON
from graph.ingest.deadletter import DeadLetterStore, make_dead_letter
from graph.ingest.metrics import IngestMetrics
from graph.ingest.reader import InvalidJson, load_json
from graph.privacy import Pseudonymizer

TIMESTAMP_HEADER = "X-Personas-Timestamp"
SIGNATURE_HEADER = "X-Personas-Signature"
SIGNATURE_PREFIX = "sha256="
_HEX64 = re.compile(r"[0-9a-f]{64}")


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The header value a sender puts in ``X-Personas-Signature``."""
    message = str(timestamp).encode() + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, signed: str | None, body: bytes, *,
           tolerance: int, now: float | None = None) -> int:
    """The delivery's timestamp (epoch seconds) when the signature and the time check out;
    ``Unauthenticated`` saying which check failed otherwise."""
    if not timestamp or not signed:
        raise Unauthenticated(f"unsigned delivery: send {TIMESTAMP_HEADER} and "
                              f"{SIGNATURE_HEADER}: {SIGNATURE_PREFIX}<hex HMAC-SHA256>")
    if not re.fullmatch(r"\d{1,12}", timestamp.strip()):
        raise Unauthenticated(f"{TIMESTAMP_HEADER} must be epoch seconds")
    at = int(timestamp.strip())
    now = time.time() if now is None else now
    if abs(now - at) > tolerance:
        raise Unauthenticated(f"{TIMESTAMP_HEADER} is more than {tolerance} s from the server's "
                              "clock (stale or replayed delivery)")
    expected = signature(secret, at, body)
    # compare_digest runs in constant time, so timing does not reveal the expected value.
    if not hmac.compare_digest(expected.encode(), signed.strip().lower().encode()):
        raise Unauthenticated("bad signature")
    return at


def delivery_id(signed: str) -> str:
    """What is stored of a delivery: the SHA-256 of its signature, never the signature."""
    return hashlib.sha256(signed.strip().lower().encode()).hexdigest()


def decode_records(body: bytes, max_records: int) -> list[Any]:
    """The delivery's records: a JSON array of records, or one record (a JSON object)."""
    try:
        # orjson, as every reader: the standard library's parser raised RecursionError (a 500)
        # on a body of deeply nested arrays.
        data = load_json(body)
    except InvalidJson as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None
    records = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
    if records is None:
        raise InvalidInput("the body must be a JSON object (one record) or an array of records")
    if len(records) > max_records:
        raise LimitExceeded(f"{len(records)} records in one delivery, over the limit of "
                            f"{max_records} (PERSONAS_API_MAX_BATCH_EVENTS)")
    return records


@dataclass(frozen=True)
class WebhookRecordResult:
    index: int
    status: Literal["accepted", "rejected"]
    reason: str | None = None
    fields_updated: tuple[str, ...] = ()
    fields_kept: tuple[str, ...] = ()
    """Fields the record carried that were not written: the stored value is as new or newer."""

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "status": self.status, "reason": self.reason,
                "fields_updated": list(self.fields_updated),
                "fields_kept": list(self.fields_kept)}


def ensure_not_seen(graph: Graph, signed: str) -> None:
    """A cheap early refusal of a replay (the constraint catches a concurrent one)."""
    if graph.rows(q.DELIVERY_SEEN, id=delivery_id(signed)):
        raise Conflict("this delivery was received before (replayed signature)")


def apply_delivery(graph: Graph, pseudonymizer: Pseudonymizer, mapping: FieldMapping,
                   records: list[Any], *, signed: str, signed_at: int, tolerance: int,
                   metrics: IngestMetrics | None = None) -> list[WebhookRecordResult]:
    """Parse each record through the mapping and apply the valid ones, with the delivery's
    record, in one transaction. Bad records are answered, not stored; a replay raises
    ``Conflict`` and writes nothing."""
    if metrics is not None and records:
        metrics.received.labels(METRICS_SOURCE).inc(len(records))
    results: list[WebhookRecordResult | None] = [None] * len(records)
    parsed: list[tuple[int, CrmRecord]] = []
    for index, data in enumerate(records):
        try:
            parsed.append((index, parse_record(mapping, data, pseudonymizer)))
        except InvalidInput as exc:
            results[index] = WebhookRecordResult(index, "rejected", str(exc))
            if metrics is not None:
                metrics.reject(METRICS_SOURCE, "malformed" if not isinstance(data, dict)
                               else "invalid")
    start = time.perf_counter()
    try:
        done = apply_records(graph, [r for _, r in parsed], source=mapping.source, via="webhook",
                             delivery=Delivery(delivery_id(signed), signed_at),
                             prune_deliveries_after=2 * tolerance)
    except ConstraintError:
        if metrics is not None:
            metrics.reject(METRICS_SOURCE, "conflict", max(len(records), 1))
        raise Conflict("this delivery was received before (replayed signature)") from None
    if metrics is not None:
        metrics.batch(METRICS_SOURCE, time.perf_counter() - start,
                      len(parsed) - len(done.refused), 0)
        if done.refused:
            metrics.reject(METRICS_SOURCE, "erased", len(done.refused))
    rejected = [r for r in results if r is not None]
    if rejected:
        # Kept as dead letters in the graph, identifiers and names as tokens.
        where = f"delivery {delivery_id(signed)[:12]}"
        DeadLetterStore(graph).record([
            make_dead_letter(pseudonymizer, source=f"webhook:{mapping.source}",
                             reason=r.reason or "", position=f"{where} record {r.index}",
                             raw=dead_letter_raw(mapping, records[r.index], pseudonymizer))
            for r in rejected])
        if metrics is not None:
            metrics.dead_letters.labels(METRICS_SOURCE).inc(len(rejected))
    refused = set(done.refused)
    for position, (index, record) in enumerate(parsed):
        if position in refused:
            results[index] = WebhookRecordResult(index, "rejected", ERASED_REASON)
            continue
        updated = tuple(sorted(done.updated_by_record[position]))
        kept = tuple(sorted(set(record.fields) - set(updated)))
        results[index] = WebhookRecordResult(index, "accepted", None, updated, kept)
    return [r for r in results if r is not None]
