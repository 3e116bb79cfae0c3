"""The one way weather and local events reach the graph: a validated batch, written in one
transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from neo4j import ManagedTransaction

from graph.db import Graph
from graph.situation import queries as q
from graph.situation.models import SituationBatch, parse_situation

T = TypeVar("T")
CHUNK = 1000
"""Rows per UNWIND statement; all chunks of a batch share one transaction."""
DEFAULT_WEATHER_VALID_HOURS = 24.0
"""The default of PERSONAS_WEATHER_VALID_HOURS, for callers without settings (tests, bench)."""


@dataclass(frozen=True)
class SituationCounts:
    """What a batch wrote: records per kind, and how many of them were new nodes (the rest
    replaced an observation with the same id)."""

    locations: int
    weather: int
    local_events: int
    new_weather: int
    new_local_events: int

    def as_dict(self) -> dict[str, int]:
        return {"locations": self.locations, "weather": self.weather,
                "local_events": self.local_events, "new_weather": self.new_weather,
                "new_local_events": self.new_local_events}


def _chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start:start + CHUNK]


def batch_rows(batch: SituationBatch, valid_hours: float) -> dict[str, list[dict[str, Any]]]:
    """The statement parameters of a batch: every location it names (described or only
    referenced), then observations with their validity window filled in."""
    locations: dict[str, dict[str, Any]] = {}
    for ref in [*(w.location_id for w in batch.weather),
                *(e.location_id for e in batch.local_events)]:
        locations.setdefault(ref, {"id": ref, "city": None, "country": None, "lat": None,
                                   "lon": None})
    for loc in batch.locations:
        locations[loc.id] = loc.model_dump()
    weather = [{**w.model_dump(), "valid_until": w.window_end(valid_hours)}
               for w in batch.weather]
    events = [e.model_dump() for e in batch.local_events]
    return {"locations": list(locations.values()), "weather": weather, "local_events": events}


def write_situation(graph: Graph, batch: SituationBatch, *,
                    valid_hours: float = DEFAULT_WEATHER_VALID_HOURS) -> SituationCounts:
    """Write a batch in one managed transaction (all or nothing; retried on transient errors).

    Weather without a ``valid_until`` of its own is valid ``valid_hours`` after ``at``
    (PERSONAS_WEATHER_VALID_HOURS). Idempotent: writing the same batch again changes nothing.
    """
    rows = batch_rows(batch, valid_hours)

    def work(tx: ManagedTransaction) -> tuple[int, int]:
        for chunk in _chunks(rows["locations"]):
            tx.run(q.UPSERT_LOCATIONS, rows=list(chunk)).consume()
        new_weather = new_events = 0
        for chunk in _chunks(rows["weather"]):
            new_weather += tx.run(q.UPSERT_WEATHER, rows=list(chunk)).consume() \
                .counters.nodes_created
        for chunk in _chunks(rows["local_events"]):
            new_events += tx.run(q.UPSERT_LOCAL_EVENTS, rows=list(chunk)).consume() \
                .counters.nodes_created
        return new_weather, new_events

    new_weather, new_events = graph.write(work) if batch.size else (0, 0)
    return SituationCounts(locations=len(rows["locations"]), weather=len(rows["weather"]),
                           local_events=len(rows["local_events"]), new_weather=new_weather,
                           new_local_events=new_events)


def upsert_weather(graph: Graph, rows: Sequence[dict[str, Any]], *,
                   valid_hours: float = DEFAULT_WEATHER_VALID_HOURS) -> SituationCounts:
    """Weather observations given as dicts (the demo's, tests'), validated and written like
    any other batch."""
    return write_situation(graph, parse_situation({"weather": list(rows)}, origin="weather"),
                           valid_hours=valid_hours)


def upsert_local_events(graph: Graph, rows: Sequence[dict[str, Any]]) -> SituationCounts:
    """Local events given as dicts, validated and written like any other batch."""
    return write_situation(graph, parse_situation({"local_events": list(rows)},
                                                  origin="local events"))
