"""Cypher that records a segmentation run, its segments, personas and memberships."""

from __future__ import annotations

CREATE_RUN = """
CREATE (r:SegmentationRun {id: $run.id})
SET r += $run, r.created_at = datetime()
"""

CREATE_SEGMENTS = """
MATCH (r:SegmentationRun {id: $run_id})
UNWIND $rows AS row
CREATE (s:Segment {id: row.id})
SET s += row.props, s.run_id = $run_id
CREATE (r)-[:PRODUCED]->(s)
"""

LINK_SEGMENT_PARENTS = """
UNWIND $rows AS row
MATCH (child:Segment {id: row.child}), (parent:Segment {id: row.parent})
CREATE (child)-[:CHILD_OF]->(parent)
"""

# Personas are keyed by their name's slug, so a later run that finds the same kind of group
# embodies the same persona.
UPSERT_PERSONAS = """
UNWIND $rows AS row
MATCH (s:Segment {id: row.segment_id})
MERGE (p:Persona {id: row.persona_id})
SET p.name = row.name, p.description = row.description, p.updated_at = datetime()
CREATE (s)-[:EMBODIES]->(p)
"""

ASSIGN_USERS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id}), (s:Segment {id: row.segment_id})
CREATE (u)-[:IN_SEGMENT {distance: row.distance, assigned_at: datetime(), run_id: $run_id}]->(s)
"""
