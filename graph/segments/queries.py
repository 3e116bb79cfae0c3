"""Cypher that records a segmentation run, its segments, personas and memberships.

A run is written in bounded transactions while it is a ``:PendingRun`` whose segments are
``:PendingSegment`` nodes: nothing that reads runs (the API, newcomer assignment, the recommender,
the cookbook's Browser queries) matches those labels, so a run being written is invisible. One
small transaction publishes it (``PUBLISH_RUN``: the labels become ``:SegmentationRun`` and
``:Segment``); a run that fails is taken apart in bounded batches and kept as a ``:FailedRun``
record with its error (see ``publish.py``).

What ingestion runs with each batch to assign newcomers keeps its plan (``CYPHER replan=skip``),
as the ingest statements do (see ``graph/ingest/queries.py``).
"""

from __future__ import annotations

LATEST_RUN = """
MATCH (r:SegmentationRun)
RETURN r.id AS id ORDER BY r.created_at DESC LIMIT 1
"""

# -- Writing a run: pending until published ---------------------------------------------------

BEGIN_RUN = """
CREATE (r:PendingRun {id: $run.id})
SET r += $run, r.status = 'writing', r.started_at = datetime(), r.heartbeat_at = datetime()
"""

CREATE_PENDING_SEGMENTS = """
MATCH (r:PendingRun {id: $run_id})
SET r.heartbeat_at = datetime()
WITH r
UNWIND $rows AS row
CREATE (s:PendingSegment {id: row.id})
SET s += row.props, s.run_id = $run_id
CREATE (r)-[:PRODUCED]->(s)
"""

LINK_PENDING_PARENTS = """
UNWIND $rows AS row
MATCH (child:PendingSegment {id: row.child}), (parent:PendingSegment {id: row.parent})
CREATE (child)-[:CHILD_OF]->(parent)
"""

# One chunk of a run's memberships, each chunk its own transaction; the heartbeat tells the
# sweep (``ABANDONED_RUNS``) that the run's writer is alive. A membership carries its segment's
# id for the index that pages a persona's members (migrations/0014_member_order.cypher), and its
# user's for the one that finds a user's newest membership (0017_persona_and_type_order).
ASSIGN_RUN_MEMBERS = """
CYPHER replan=skip
MATCH (r:PendingRun {id: $run_id})
SET r.heartbeat_at = datetime()
WITH r
UNWIND $rows AS row
MATCH (u:User {id: row.user_id}), (s:PendingSegment {id: row.segment_id})
WHERE NOT EXISTS { (u)-[:IN_SEGMENT {run_id: $run_id}]->() }
CREATE (u)-[:IN_SEGMENT {distance: row.distance, assigned_at: datetime(), run_id: $run_id,
                         assigned_by: 'run', segment_id: row.segment_id,
                         user_id: u.id}]->(s)
"""

# One leaf segment's profile as of the run, read by the API's `Persona.topCategories` and
# `topItems` instead of aggregating a whole segment per request: the $top categories its
# members favour most (mean inferred weight over the segment) and the $top items they buy
# most (then interact with most). One transaction per segment, run once per run; its memory
# is one row per distinct category or item, however many members the segment holds.
WRITE_SEGMENT_TOPS = """
MATCH (s:PendingSegment {id: $segment_id})
CALL (s) {
  MATCH (s)<-[:IN_SEGMENT]-(:User)-[pr:PREFERS {source: 'inferred'}]->(c:Category)
  WITH s, c, sum(pr.weight) AS total
  WITH s, c, total / s.size AS weight ORDER BY weight DESC, c.name LIMIT $top
  WITH s, collect([c, weight]) AS ranked
  UNWIND range(0, size(ranked) - 1) AS rank
  WITH s, ranked[rank][0] AS c, ranked[rank][1] AS weight, rank
  CREATE (s)-[:TOP_CATEGORY {rank: rank, weight: weight}]->(c)
}
CALL (s) {
  MATCH (s)<-[:IN_SEGMENT]-(u:User)-[r:INTERACTED]->(it:Item)
  WITH it, sum(r.purchases) AS purchases, count(u) AS users
  ORDER BY purchases DESC, users DESC, it.id LIMIT $top
  WITH collect([it, purchases, users]) AS ranked
  UNWIND range(0, size(ranked) - 1) AS rank
  WITH ranked[rank][0] AS it, ranked[rank][1] AS purchases, ranked[rank][2] AS users, rank
  CREATE (s)-[:TOP_ITEM {rank: rank, purchases: coalesce(purchases, 0), users: users}]->(it)
}
SET s.tops_written = $top
"""

PENDING_LEAVES = """
MATCH (:PendingRun {id: $run_id})-[:PRODUCED]->(s:PendingSegment {level: 0})
RETURN s.id AS id ORDER BY id
"""

# One leaf segment's favourites: the items most bought by its most typical members (nearest
# the segment centre), with the share of those members who bought each; one transaction per
# segment. The members' expansion is bounded ($typical members, each by their own purchases),
# however many users the segment holds. The recommender reads them (graph/recommend/queries.py).
WRITE_SEGMENT_FAVOURITES = """
MATCH (s:PendingSegment {id: $segment_id})
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

# The one transaction that makes a run visible: labels, personas and their segments, and the
# run's time (``created_at``, what "the latest run" is ordered by) set now, at publication.
# Its size is the number of segments, whatever the population.
PUBLISH_RUN = """
MATCH (r:PendingRun {id: $run_id})
OPTIONAL MATCH (r)-[:PRODUCED]->(s:PendingSegment)
WITH r, collect(s) AS segments
FOREACH (s IN segments | REMOVE s:PendingSegment SET s:Segment)
REMOVE r:PendingRun
SET r:SegmentationRun, r.status = 'complete', r.created_at = datetime(),
    r.published_at = datetime(), r.history_pending = true
WITH r
UNWIND $personas AS row
MATCH (s:Segment {id: row.segment_id})
MERGE (p:Persona {id: row.persona_id})
SET p.name = row.name, p.description = row.description, p.updated_at = datetime()
CREATE (s)-[:EMBODIES]->(p)
RETURN count(*) AS personas
"""

# Each member's persona history after publication, in bounded transactions (auto-commit
# ``IN TRANSACTIONS``). Re-running it is harmless: an open entry for the same persona is kept.
# The open entry is closed when the persona changes. An entry carries its user's id for the
# index a user's history is read from (migrations/0017_persona_and_type_order.cypher).
WRITE_PERSONA_HISTORY = """
MATCH (:SegmentationRun {id: $run_id})-[:PRODUCED]->(s:Segment {level: 0})-[:EMBODIES]->(p)
MATCH (s)<-[:IN_SEGMENT {run_id: $run_id}]-(u:User)
CALL (u, p) {
  OPTIONAL MATCH (u)-[h:HAD_PERSONA]->(old:Persona) WHERE h.valid_to IS NULL
  WITH u, p, h, old
  FOREACH (_ IN CASE WHEN h IS NOT NULL AND old <> p THEN [1] ELSE [] END |
           SET h.valid_to = datetime($at))
  FOREACH (_ IN CASE WHEN h IS NULL OR old <> p THEN [1] ELSE [] END |
           CREATE (u)-[:HAD_PERSONA {valid_from: datetime($at), run_id: $run_id,
                                       user_id: u.id}]->(p))
} IN TRANSACTIONS OF 5000 ROWS
"""

HISTORY_WRITTEN = """
MATCH (r:SegmentationRun {id: $run_id})
REMOVE r.history_pending
"""

# Published runs whose persona history was not finished (the writer stopped after publishing),
# and whether each is the latest run.
HISTORY_PENDING = """
MATCH (latest:SegmentationRun)
WITH latest ORDER BY latest.created_at DESC LIMIT 1
MATCH (r:SegmentationRun) WHERE r.history_pending
RETURN r.id AS run_id, toString(r.snapshot_at) AS at, r = latest AS is_latest
"""

# -- Runs that failed or were abandoned --------------------------------------------------------

# Pending runs whose writer has shown no sign of life for $stale_ms (it crashed, or Neo4j
# restarted under it).
ABANDONED_RUNS = """
MATCH (r:PendingRun)
WHERE r.heartbeat_at < datetime() - duration({milliseconds: $stale_ms})
RETURN r.id AS run_id
"""

# Taking a run apart: every statement deletes in bounded transactions (auto-commit), so a run
# of any size is removed within the default transaction memory.
DISCARD_MEMBERSHIPS = """
MATCH (:PendingRun {id: $run_id})-[:PRODUCED]->(s:PendingSegment)
MATCH (s)<-[m:IN_SEGMENT]-()
CALL (m) { DELETE m } IN TRANSACTIONS OF 10000 ROWS
"""

DISCARD_SEGMENTS = """
MATCH (:PendingRun {id: $run_id})-[:PRODUCED]->(s:PendingSegment)
CALL (s) { DETACH DELETE s } IN TRANSACTIONS OF 100 ROWS
"""

DISCARD_SIMILAR_USERS = """
MATCH ()-[e:SIMILAR_TO {run_id: $run_id}]->()
CALL (e) { DELETE e } IN TRANSACTIONS OF 10000 ROWS
"""

DISCARD_SIMILAR_ITEMS = """
MATCH ()-[e:SIMILAR_ITEM {run_id: $run_id}]->()
CALL (e) { DELETE e } IN TRANSACTIONS OF 10000 ROWS
"""

MARK_FAILED = """
MATCH (r:PendingRun {id: $run_id})
REMOVE r:PendingRun
SET r:FailedRun, r.status = 'failed', r.error = $error, r.failed_at = datetime()
"""

FAILED_RUNS = """
MATCH (r:FailedRun)
RETURN r.id AS id, r.error AS error, r.failed_at AS failed_at
ORDER BY r.failed_at DESC
"""

# A user has one membership per run: a run assigns everyone ('run'), ingestion assigns users who
# arrived after it ('ingest'); the guard keeps concurrent batches from assigning a user twice.
ASSIGN_USERS = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (u:User {id: row.user_id}), (s:Segment {id: row.segment_id})
WHERE NOT EXISTS { (u)-[:IN_SEGMENT {run_id: $run_id}]->() }
CREATE (u)-[:IN_SEGMENT {distance: row.distance, assigned_at: datetime(), run_id: $run_id,
                         assigned_by: $assigned_by, segment_id: row.segment_id,
                         user_id: u.id}]->(s)
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
RETURN r.id AS run_id, r.as_of AS as_of, collect(u.id) AS user_ids
"""

# The latest run's leaf segments with their personas and raw-unit centres, for matching.
PREVIOUS_RUN_PERSONAS = """
MATCH (r:SegmentationRun)
WITH r ORDER BY r.created_at DESC LIMIT 1
MATCH (r)-[:PRODUCED]->(s:Segment {level: 0})-[:EMBODIES]->(p:Persona)
RETURN r.id AS run_id, r.features AS features, s.id AS segment_id, s.raw_center AS raw_center,
       p.id AS persona_id, p.name AS name, p.description AS description
"""

# The text topics a run learned (``FeatureTable.topics``), to project newcomers' texts on.
RUN_TOPICS = """
MATCH (r:SegmentationRun {id: $run_id})
RETURN r.topics_json AS topics
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
         CREATE (u)-[:HAD_PERSONA {valid_from: datetime($at), run_id: $run_id,
                                       user_id: u.id}]->(p))
"""
