"""Cypher for data-subject requests: erasure, export, consent and retention.

Statements that act on "the user" take ``$eids``: the element ids of the user's node and of the
nodes of users merged into it (merge tombstones, which may have lost the ``User`` label), found
once by ``SUBJECT_NODES``, so that erasing or exporting a survivor covers what was merged in.
"""

from __future__ import annotations

# The user's node and the tombstones of the users merged into it, transitively (identity
# resolution, graph/identity: label MergedUser, MERGED_INTO the survivor).
SUBJECT_NODES = """
MATCH (u:User {id: $id})
OPTIONAL MATCH (u)<-[:MERGED_INTO*]-(t:MergedUser)
WITH u, collect(DISTINCT t) AS tombstones
RETURN [elementId(u)] + [t IN tombstones | elementId(t)] AS eids,
       [u.id] + [t IN tombstones | t.id] AS ids
"""

# A user merged into another is erased or exported through the survivor.
MERGED_INTO_ROOT = """
MATCH (:MergedUser {id: $id})-[:MERGED_INTO*]->(root:User)
RETURN root.id AS id
"""

ERASED_BEFORE = """
MATCH (e:Erasure {subject: $subject})
RETURN e.id AS id, e.at AS at
ORDER BY e.at DESC LIMIT 1
"""

# ---------------------------------------------------------------------------------- erasure ---

IDENTIFIER_KEYS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (i:Identifier)-[:IDENTIFIES]->(u)
RETURN collect(DISTINCT i.kind + ':' + i.hash) AS keys
"""

# Interactions go first, in batches of their own (idempotent: a retry deletes what is left).
DELETE_INTERACTIONS_BATCH = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:PERFORMED]->(i:Interaction)
WITH i LIMIT $limit
DETACH DELETE i
RETURN count(*) AS n
"""

# Dead letters carry the `kind:hash` pseudonyms readable from the rejected record. A label scan:
# dead letters are few, and a list property has no index that answers `IN`.
DELETE_DEAD_LETTERS = """
MATCH (d:DeadLetter)
WHERE any(k IN d.identifiers WHERE k IN $keys)
DETACH DELETE d
RETURN count(*) AS n
"""

# Sessions and devices are the user's unless another (not erased) user has them too.
DELETE_SESSIONS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:HAD_SESSION]->(s:Session)
WHERE NOT EXISTS { MATCH (s)<-[:HAD_SESSION]-(o) WHERE NOT elementId(o) IN $eids }
WITH DISTINCT s
DETACH DELETE s
RETURN count(*) AS n
"""

DELETE_DEVICES = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:USES]->(d:Device)
WHERE NOT EXISTS { MATCH (d)<-[:USES]-(o) WHERE NOT elementId(o) IN $eids }
WITH DISTINCT d
DETACH DELETE d
RETURN count(*) AS n
"""

DELETE_IDENTIFIERS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (i:Identifier)-[:IDENTIFIES]->(u)
WHERE NOT EXISTS { MATCH (i)-[:IDENTIFIES]->(o) WHERE NOT elementId(o) IN $eids }
WITH DISTINCT i
DETACH DELETE i
RETURN count(*) AS n
"""

DELETE_CONSENTS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:GAVE_CONSENT]->(c:Consent)
WITH DISTINCT c
DETACH DELETE c
RETURN count(*) AS n
"""

# What the user's own relationships to shared nodes (items, categories, segments, personas,
# locations, similar users) were: counted for the report, removed with the user. A relationship
# between two of the subject's nodes (a survivor and its tombstone) counts once.
COUNT_RELATIONSHIPS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[r]-()
WITH DISTINCT r
RETURN type(r) AS type, count(r) AS n
"""

# Anything else only the erased users point at (profile-field provenance, merge records...):
# every node next to them that is not a shared kind and links to nothing but them.
DELETE_OTHER_OWNED = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)--(n)
WITH DISTINCT n
WHERE none(l IN labels(n) WHERE l IN $shared)
  AND NOT EXISTS { MATCH (n)--(m) WHERE NOT elementId(m) IN $eids }
DETACH DELETE n
RETURN count(*) AS n
"""

# The users' retained baselines: what their pruned interactions contributed (graph/aggregates).
DELETE_RETAINED = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:RETAINED]->(r:Retained)
DETACH DELETE r
RETURN count(*) AS n
"""

# Merge records (graph/identity) that name one of the erased users.
DELETE_MERGES = """
MATCH (g:Merge)
WHERE g.survivor_id IN $ids OR g.merged_id IN $ids
DETACH DELETE g
RETURN count(*) AS n
"""

DELETE_USERS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
DETACH DELETE u
RETURN count(*) AS n
"""

# The erased identifiers' pseudonyms (`kind:hash`, as on dead letters), so that a re-sent event
# from before the erasure cannot bring the user back (see `graph/ingest/writer.py`).
RECORD_ERASED_IDENTIFIERS = """
UNWIND $keys AS key
MERGE (e:ErasedIdentifier {key: key})
SET e.at = datetime(), e.erasure_id = $erasure_id
"""

RECORD_ERASURE = """
CREATE (e:Erasure {id: $erasure_id, subject: $subject, at: datetime(), source: $source})
SET e += $counts
"""

# ----------------------------------------------------------------------------------- export ---

EXPORT_PROFILE = """
MATCH (u:User {id: $id})
OPTIONAL MATCH (u)-[:LOCATED_IN]->(l:Location)
RETURN properties(u) AS profile, properties(l) AS location
"""

EXPORT_IDENTIFIERS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (i:Identifier)-[:IDENTIFIES]->(u)
RETURN i.kind AS kind, i.hash AS hash, i.first_seen AS first_seen
ORDER BY kind, hash
"""

EXPORT_DEVICES = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:USES]->(d:Device)
RETURN DISTINCT d.id AS id, d.kind AS kind
ORDER BY id
"""

EXPORT_SESSIONS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:HAD_SESSION]->(s:Session)
RETURN DISTINCT properties(s) AS session
ORDER BY session.started_at
"""

EXPORT_INTERACTIONS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:PERFORMED]->(i:Interaction)
OPTIONAL MATCH (i)-[:IN_SESSION]->(s:Session)
RETURN properties(i) AS interaction, s.id AS session_id
ORDER BY interaction.at
"""

EXPORT_PREFERENCES = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[p:PREFERS]->(c:Category)
RETURN c.name AS category, p.source AS source, p.weight AS weight, p.score AS score,
       p.updated_at AS updated_at
ORDER BY source, weight DESC
"""

EXPORT_AGGREGATES = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[r:INTERACTED]->(it:Item)
RETURN it.id AS item_id, it.name AS item_name, properties(r) AS aggregate
ORDER BY item_id
"""

# The user's retained baselines (graph/aggregates: what pruned interactions contributed, one
# per origin, the merges they came through): the counters each holds, and its items and
# interests.
EXPORT_RETAINED = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[k:RETAINED]->(r:Retained)
RETURN properties(r) AS counters, coalesce(k.merges, []) AS merges,
       COLLECT { MATCH (r)-[x:RETAINED_ITEM]->(it:Item)
                 RETURN {item_id: it.id, aggregate: properties(x)} AS item
                 ORDER BY item.item_id } AS items,
       COLLECT { MATCH (r)-[x:RETAINED_INTEREST]->(c:Category)
                 RETURN {category: c.name, score: x.score, updated_at: x.updated_at} AS interest
                 ORDER BY interest.category } AS interests
ORDER BY elementId(r)
"""

EXPORT_SEGMENTS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[m:IN_SEGMENT]->(s:Segment)
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
RETURN s.id AS segment_id, s.label AS label, s.level AS level, m.run_id AS run_id,
       m.assigned_at AS assigned_at, m.assigned_by AS assigned_by, m.distance AS distance,
       p.id AS persona_id, p.name AS persona
ORDER BY assigned_at
"""

EXPORT_PERSONA_HISTORY = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[h:HAD_PERSONA]->(p:Persona)
RETURN p.id AS persona_id, p.name AS persona, h.valid_from AS valid_from,
       h.valid_to AS valid_to, h.run_id AS run_id
ORDER BY valid_from
"""

EXPORT_MERGES = """
MATCH (g:Merge)
WHERE g.survivor_id IN $ids OR g.merged_id IN $ids
RETURN properties(g) AS merge
ORDER BY merge.at
"""

EXPORT_DEAD_LETTERS = """
MATCH (d:DeadLetter)
WHERE any(k IN d.identifiers WHERE k IN $keys)
RETURN properties(d) AS dead_letter
ORDER BY dead_letter.at
"""

# The similar users a segmentation run found for the user (graph/recommend/neighbours.py), as
# counts: their ids belong to them.
EXPORT_SIMILAR_USERS = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[s:SIMILAR_TO]->()
RETURN s.run_id AS run_id, count(s) AS users
ORDER BY run_id
"""

# Everything else linked to the user that the sections above do not cover (e.g. profile-field
# provenance or merge records written by other jobs), so an export never misses a kind.
EXPORT_OTHER = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[r]-(n)
WHERE NOT type(r) IN $covered
RETURN type(r) AS relationship, labels(n) AS labels, properties(r) AS relationship_properties,
       properties(n) AS node
"""

# ---------------------------------------------------------------------------------- consent ---

# A change is recorded once (idempotent on id); the user's flag follows the newest change by
# its time, so an older change arriving late does not overturn a newer one.
SET_CONSENT = """
MATCH (u:User {id: $user_id})
MERGE (c:Consent {id: $id})
ON CREATE SET c.purpose = $purpose, c.granted = $granted, c.source = $source,
              c.at = datetime({epochMillis: $at}), c.recorded_at = datetime()
MERGE (u)-[:GAVE_CONSENT]->(c)
WITH u, c
OPTIONAL MATCH (u)-[:GAVE_CONSENT]->(other:Consent {purpose: $purpose})
WITH u, c, other ORDER BY other.at DESC, other.recorded_at DESC
WITH u, c, head(collect(other)) AS newest
SET u.consent_personalization = CASE WHEN $purpose = 'personalization'
                                     THEN newest.granted ELSE u.consent_personalization END,
    u.consent_analytics = CASE WHEN $purpose = 'analytics'
                               THEN newest.granted ELSE u.consent_analytics END
RETURN u.consent_personalization AS personalization, u.consent_analytics AS analytics,
       newest.id = c.id AS current
"""

# Without analytics consent a user has no segment membership: the memberships go and the open
# persona-history entry is closed (the next runs leave the user out of the feature table).
WITHDRAW_FROM_SEGMENTS = """
MATCH (u:User {id: $user_id})
OPTIONAL MATCH (u)-[h:HAD_PERSONA]->() WHERE h.valid_to IS NULL
SET h.valid_to = datetime({epochMillis: $at})
WITH DISTINCT u
OPTIONAL MATCH (u)-[m:IN_SEGMENT]->()
DELETE m
RETURN count(m) AS n
"""

CONSENTS_OF = """
UNWIND $ids AS id
MATCH (u:User {id: id})
RETURN u.id AS id, u.consent_personalization AS personalization,
       u.consent_analytics AS analytics
"""

CONSENT_HISTORY = """
UNWIND $eids AS eid
MATCH (u) WHERE elementId(u) = eid
MATCH (u)-[:GAVE_CONSENT]->(c:Consent)
RETURN c.purpose AS purpose, c.granted AS granted, c.source AS source, c.at AS at,
       c.recorded_at AS recorded_at
ORDER BY at, recorded_at
"""

# --------------------------------------------------------------------------------- retention ---

# A batch of old interactions is chosen, folded into its users' retained baselines
# (graph/aggregates) and deleted, in one transaction.
OLD_INTERACTIONS_BATCH = """
MATCH (i:Interaction)
WHERE i.at < datetime({epochMillis: $cutoff})
WITH i LIMIT $limit
RETURN collect(elementId(i)) AS eids
"""

DELETE_INTERACTIONS = """
UNWIND $eids AS eid
MATCH (i:Interaction) WHERE elementId(i) = eid
DETACH DELETE i
RETURN count(*) AS n
"""

# Sessions that ended before the cutoff and hold no interaction any more.
PRUNE_EMPTY_SESSIONS_BATCH = """
MATCH (s:Session)
WHERE s.started_at < datetime({epochMillis: $cutoff})
  AND s.ended_at < datetime({epochMillis: $cutoff})
  AND NOT EXISTS { (s)<-[:IN_SESSION]-(:Interaction) }
WITH s LIMIT $limit
DETACH DELETE s
RETURN count(*) AS n
"""

PRUNE_DEAD_LETTERS_BATCH = """
MATCH (d:DeadLetter)
WHERE d.at < datetime({epochMillis: $cutoff})
WITH d LIMIT $limit
DETACH DELETE d
RETURN count(*) AS n
"""
