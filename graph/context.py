"""External context in the graph: weather observations and local events, linked to locations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graph.db import Graph

UPSERT_WEATHER = """
UNWIND $rows AS row
MERGE (l:Location {id: row.location_id})
MERGE (w:WeatherObservation {id: row.id})
SET w.at = row.at, w.temp_c = row.temp_c, w.condition = row.condition, w.source = row.source
MERGE (w)-[:OBSERVED_AT]->(l)
"""

UPSERT_LOCAL_EVENTS = """
UNWIND $rows AS row
MERGE (l:Location {id: row.location_id})
MERGE (e:LocalEvent {id: row.id})
SET e.name = row.name, e.starts_at = row.starts_at, e.ends_at = row.ends_at, e.source = row.source
MERGE (e)-[:HELD_IN]->(l)
"""


def upsert_weather(graph: Graph, rows: Sequence[dict[str, Any]]) -> None:
    graph.execute(UPSERT_WEATHER, rows=list(rows))


def upsert_local_events(graph: Graph, rows: Sequence[dict[str, Any]]) -> None:
    graph.execute(UPSERT_LOCAL_EVENTS, rows=list(rows))
