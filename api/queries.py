"""Cypher the API runs. Resolvers call these by name; none is built from request text."""

from __future__ import annotations

# The latest run is the segmentation job's notion; the API asks the same question.
from graph.segments.queries import LATEST_RUN as LATEST_RUN

USER = """
MATCH (u:User {id: $id})
RETURN u.id AS id, u.first_seen AS first_seen, u.last_seen AS last_seen,
       u.age_band AS age_band, u.gender AS gender, u.locale AS locale,
       u.events AS events, u.purchases AS purchases, u.spend AS spend
"""

# The user's leaf segment in the latest run that includes them.
USER_SEGMENT = """
MATCH (u:User {id: $id})-[m:IN_SEGMENT]->(s:Segment)
WITH s, m ORDER BY m.assigned_at DESC LIMIT 1
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, m.distance AS distance
"""

SEGMENTS_OF_RUN = """
MATCH (r:SegmentationRun {id: $run_id})-[:PRODUCED]->(s:Segment)
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
OPTIONAL MATCH (s)-[:CHILD_OF]->(parent:Segment)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, parent.id AS parent_id
ORDER BY s.level DESC, s.size DESC
"""

SEGMENT = """
MATCH (s:Segment {id: $id})
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
OPTIONAL MATCH (s)-[:CHILD_OF]->(parent:Segment)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, parent.id AS parent_id
"""

PREFERENCES = """
MATCH (:User {id: $id})-[p:PREFERS]->(c:Category)
RETURN c.name AS category, p.weight AS weight, p.source AS source, p.updated_at AS updated_at
ORDER BY CASE p.source WHEN 'explicit' THEN 0 ELSE 1 END, p.weight DESC
LIMIT $first
"""

RECENT_INTERACTIONS = """
MATCH (:User {id: $id})-[:PERFORMED]->(i:Interaction)
RETURN i {.event_id, .type, .at, .item_id, .category, .amount, .query, .text, .intent,
          .rating} AS interaction
ORDER BY i.at DESC
LIMIT $first
"""

LOCATION = """
MATCH (:User {id: $id})-[:LOCATED_IN]->(l:Location)
OPTIONAL MATCH (w:WeatherObservation)-[:OBSERVED_AT]->(l) WHERE w.at <= datetime()
WITH l, w ORDER BY w.at DESC LIMIT 1
RETURN l {.id, .city, .country, .lat, .lon} AS location,
       w {.at, .temp_c, .condition} AS weather
"""

UPCOMING_EVENTS = """
MATCH (l:Location {id: $location_id})<-[:HELD_IN]-(e:LocalEvent)
WHERE e.starts_at >= datetime()
RETURN e {.id, .name, .starts_at, .ends_at} AS event
ORDER BY e.starts_at
LIMIT $first
"""

READY = "MATCH (m:Migration) RETURN max(m.version) AS version"
