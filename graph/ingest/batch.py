"""Ingesting a batch of raw records handed over in one request (HTTP, GraphQL): the file reader's
validation, one writer batch, and one result per record, in order.

Independent of any web framework: the HTTP route and the GraphQL mutation both call
``ingest_records``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from graph.events import Event
from graph.ingest.deadletter import DeadLetter, DeadLetterStore, make_dead_letter
from graph.ingest.reader import Parsed, validate
from graph.ingest.tally import Tally
from graph.ingest.writer import EventWriter

Status = Literal["accepted", "duplicate", "rejected"]

ERASED_REASON = "names a user who was erased after this event happened"


@dataclass(frozen=True)
class RecordResult:
    """What became of one input record: ``accepted`` (written now), ``duplicate`` (its
    ``event_id`` was already stored, or came earlier in the same batch), or ``rejected`` with
    the reason (nothing of it was written)."""

    index: int
    event_id: str | None
    status: Status
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count(results: Sequence[RecordResult]) -> Tally:
    """A batch's counts from its per-record results (accepted records are ``written``)."""
    statuses = [r.status for r in results]
    return Tally(records=len(results), written=statuses.count("accepted"),
                 duplicates=statuses.count("duplicate"), rejected=statuses.count("rejected"))


def _event_id_of(record: Any) -> str | None:
    """The record's event id when it has a usable one, for the caller to match results."""
    if isinstance(record, dict):
        value = record.get("event_id")
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    return None


def ingest_records(writer: EventWriter, records: Sequence[Any], *, source: str,
                   received_at: float | None = None) -> list[RecordResult]:
    """Validate raw records (dicts, as decoded from JSON) exactly as the file reader does, write
    the valid ones in one writer batch (one transaction), and return one result per record.

    ``source`` labels the metrics (a source family such as ``http``). ``received_at`` is the
    ``time.monotonic()`` of the request's receipt: when given, each written event's freshness
    (commit minus receipt) is observed. Raises what the writer raises (Neo4j errors); then
    nothing of the batch is written.
    """
    metrics = writer.metrics
    if metrics is not None and records:
        metrics.received.labels(source).inc(len(records))
    results: list[RecordResult | None] = [None] * len(records)
    valid: list[tuple[int, Event]] = []
    malformed = invalid = 0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            malformed += 1
            results[index] = RecordResult(index, None, "rejected", "record is not a JSON object")
            continue
        parsed = validate(index, record, "")
        if isinstance(parsed, Parsed):
            valid.append((index, parsed.event))
        else:
            invalid += 1
            results[index] = RecordResult(index, _event_id_of(record), "rejected", parsed.reason)
    if malformed or invalid:
        # Rejects are kept as dead letters in the graph too (scrubbed), like every source's.
        letters = [_dead_letter(writer, source, records[r.index], r)
                   for r in results if r is not None]
        DeadLetterStore(writer.graph).record(letters)
        if metrics is not None:
            metrics.dead_letters.labels(source).inc(len(letters))
    if metrics is not None:
        if malformed:
            metrics.reject(source, "malformed", malformed)
        if invalid:
            metrics.reject(source, "invalid", invalid)

    # Which events are new: repeats within the batch are duplicates here; events the graph
    # already holds are found by the writer inside its transaction, so a concurrent write of
    # the same event is reported as accepted by one caller only.
    first_index: dict[str, int] = {}
    for index, event in valid:
        if event.event_id in first_index:
            results[index] = RecordResult(
                index, event.event_id, "duplicate",
                f"event_id repeats record {first_index[event.event_id]} of this batch")
        else:
            first_index[event.event_id] = index
    if valid:
        try:
            result = writer.write([event for _, event in valid], source=source)
        except Exception:
            if metrics is not None:
                metrics.reject(source, "error", len(first_index))
            raise
        for event_id in result.stored:
            index = first_index[event_id]
            results[index] = RecordResult(index, event_id, "duplicate",
                                          "event_id already stored")
        for event_id in result.erased:  # not dead-lettered: that would keep their data
            index = first_index[event_id]
            results[index] = RecordResult(index, event_id, "rejected", ERASED_REASON)
        if metrics is not None and received_at is not None and result.written:
            freshness = metrics.freshness.labels(source)
            elapsed = time.monotonic() - received_at
            for _ in range(result.written):
                freshness.observe(elapsed)
    for event_id, index in first_index.items():
        if results[index] is None:
            results[index] = RecordResult(index, event_id, "accepted")
    return [r for r in results if r is not None]


def _dead_letter(writer: EventWriter, source: str, record: Any,
                 result: RecordResult) -> DeadLetter:
    return make_dead_letter(writer.pseudonymizer, source=source, reason=result.reason or "",
                            raw=json.dumps(record, default=str),
                            position=f"record {result.index}")
