"""Cypher that records a segmentation run, its segments, personas and memberships.

What ingestion runs with each batch to assign newcomers keeps its plan (``CYPHER replan=skip``),
as the ingest statements do (see ``graph/ingest/queries.py``).
"""

from __future__ import annotations

LATEST_RUN = """
MATCH (r:SegmentationRun)
RETURN r.id AS id ORDER BY r.created_at DESC LIMIT 1
"""

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

# Persona ids come from matching against the previous run (see personas.py).
UPSERT_PERSONAS = """
UNWIND $rows AS row
MATCH (s:Segment {id: row.segment_id})
MERGE (p:Persona {id: row.persona_id})
SET p.name = row.name, p.description = row.description, p.updated_at = datetime()
CREATE (s)-[:EMBODIES]->(p)
"""

# A user has one membership per run: a run assigns everyone ('run'), ingestion assigns users who
# arrived after it ('ingest'); the guard keeps concurrent batches from assigning a user twice.
ASSIGN_USERS = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (u:User {id: row.user_id}), (s:Segment {id: row.segment_id})
WHERE NOT EXISTS { (u)-[:IN_SEGMENT {run_id: $run_id}]->() }
CREATE (u)-[:IN_SEGMENT {distance: row.distance, assigned_at: datetime(), run_id: $run_id,
                         assigned_by: $assigned_by}]->(s)
"""

# Which of the given users the latest run has no segment for (users who withdrew analytics
# consent are never segmented).
UNSEGMENTED = """
CYPHER replan=skip
MATCH (r:SegmentationRun)
WITH r ORDER BY r.created_at DESC LIMIT 1
UNWIND $ids AS id
MATCH (u:User {id: id})
WHERE NOT EXISTS { (u)-[:IN_SEGMENT {run_id: r.id}]->() } AND coalesce(u.consent_analytics, true)
RETURN r.id AS run_id, collect(u.id) AS user_ids
"""

# The latest run's leaf segments with their personas and raw-unit centres, for matching.
PREVIOUS_RUN_PERSONAS = """
MATCH (r:SegmentationRun)
WITH r ORDER BY r.created_at DESC LIMIT 1
MATCH (r)-[:PRODUCED]->(s:Segment {level: 0})-[:EMBODIES]->(p:Persona)
RETURN r.id AS run_id, r.features AS features, s.id AS segment_id, s.raw_center AS raw_center,
       p.id AS persona_id, p.name AS name, p.description AS description
"""

RUN_MEMBERS = """
MATCH (u:User)-[:IN_SEGMENT {run_id: $run_id}]->(s:Segment)
RETURN u.id AS user_id, s.id AS segment_id
"""

# Each user's persona over time: the open entry is closed when the persona changes.
UPDATE_PERSONA_HISTORY = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (u:User {id: row.user_id}), (p:Persona {id: row.persona_id})
OPTIONAL MATCH (u)-[h:HAD_PERSONA]->(old:Persona) WHERE h.valid_to IS NULL
WITH u, p, h, old
FOREACH (_ IN CASE WHEN h IS NOT NULL AND old <> p THEN [1] ELSE [] END |
         SET h.valid_to = datetime($at))
FOREACH (_ IN CASE WHEN h IS NULL OR old <> p THEN [1] ELSE [] END |
         CREATE (u)-[:HAD_PERSONA {valid_from: datetime($at), run_id: $run_id}]->(p))
"""

# Each leaf segment of a run: the items most bought by its most typical members (nearest the
# segment centre), with the share of those members who bought each. Run in the run's
# transaction, after its memberships; the recommender reads them (graph/recommend/queries.py).
WRITE_SEGMENT_FAVOURITES = """
MATCH (:SegmentationRun {id: $run_id})-[:PRODUCED]->(s:Segment {level: 0})
CALL (s) {
  MATCH (s)<-[m:IN_SEGMENT]-(member:User)
  WITH member ORDER BY m.distance, member.id LIMIT $typical
  WITH collect(member) AS members
  UNWIND members AS member
  MATCH (member)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0
  WITH size(members) AS n, it, count(*) AS buyers
  ORDER BY buyers DESC, it.id LIMIT $favourites
  CREATE (s)-[:FAVOURITE {share: toFloat(buyers) / n, buyers: buyers}]->(it)
}
"""
