"""Cypher for situations (weather, local events). Each statement takes a batch as ``$rows``
(one UNWIND each).

Observations are merged on their id, so writing the same observation twice leaves one node; one
moved to another location (a corrected push) loses its old link. Each carries its location's id
(`location_id`): reads seek a location's latest weather and next events in the indexes on
(location_id, at) and (location_id, starts_at) (migrations/0015), whatever its history.
"""

from __future__ import annotations

# Locations named by a batch; a description (city, country, lat, lon) fills in what it gives and
# keeps what it leaves out.
UPSERT_LOCATIONS = """
UNWIND $rows AS row
MERGE (l:Location {id: row.id})
SET l.city = coalesce(row.city, l.city), l.country = coalesce(row.country, l.country),
    l.lat = coalesce(row.lat, l.lat), l.lon = coalesce(row.lon, l.lon)
"""

UPSERT_WEATHER = """
UNWIND $rows AS row
MATCH (l:Location {id: row.location_id})
MERGE (w:WeatherObservation {id: row.id})
ON CREATE SET w.recorded_at = datetime()
SET w.at = row.at, w.valid_until = row.valid_until, w.temp_c = row.temp_c,
    w.condition = row.condition, w.source = row.source, w.location_id = l.id
WITH w, l
OPTIONAL MATCH (w)-[old:OBSERVED_AT]->(other:Location) WHERE other <> l
DELETE old
MERGE (w)-[:OBSERVED_AT]->(l)
"""

UPSERT_LOCAL_EVENTS = """
UNWIND $rows AS row
MATCH (l:Location {id: row.location_id})
MERGE (e:LocalEvent {id: row.id})
ON CREATE SET e.recorded_at = datetime()
SET e.name = row.name, e.starts_at = row.starts_at, e.ends_at = row.ends_at,
    e.source = row.source, e.location_id = l.id
WITH e, l
OPTIONAL MATCH (e)-[old:HELD_IN]->(other:Location) WHERE other <> l
DELETE old
MERGE (e)-[:HELD_IN]->(l)
"""

# Every location the graph knows, for the poller.
KNOWN_LOCATIONS = """
MATCH (l:Location)
RETURN l {.id, .city, .country, .lat, .lon} AS location
ORDER BY l.id
"""
