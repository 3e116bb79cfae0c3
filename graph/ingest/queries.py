"""Cypher for event ingestion. Every statement takes a batch as ``$rows`` (one UNWIND a statement).

Times travel as epoch milliseconds and become DateTime values here: the Python driver packs
``datetime`` objects about ten times slower than integers, which dominated batch writes.
"""

from __future__ import annotations

USER_COUNT = "MATCH (u:User) RETURN count(u) AS n"

EXISTING_EVENTS = """
UNWIND $ids AS id
MATCH (i:Interaction {event_id: id})
RETURN id
"""

RESOLVE_IDENTIFIERS = """
UNWIND $rows AS row
MATCH (:Identifier {kind: row.kind, hash: row.hash})-[:IDENTIFIES]->(u:User)
RETURN row.kind AS kind, row.hash AS hash, u.id AS user_id
"""

UPSERT_USERS = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.first_seen}) AS first_seen,
     datetime({epochMillis: row.last_seen}) AS last_seen
MERGE (u:User {id: row.id})
ON CREATE SET u.first_seen = first_seen, u.last_seen = last_seen, u.created_at = datetime(),
              u.events = 0, u.page_views = 0, u.searches = 0, u.carts = 0, u.purchases = 0,
              u.chat_messages = 0, u.feedbacks = 0, u.spend = 0.0
SET u.first_seen = CASE WHEN first_seen < u.first_seen THEN first_seen ELSE u.first_seen END,
    u.last_seen = CASE WHEN last_seen > u.last_seen THEN last_seen ELSE u.last_seen END,
    u.events = u.events + row.events,
    u.page_views = u.page_views + row.page_views,
    u.searches = u.searches + row.searches,
    u.carts = u.carts + row.carts,
    u.purchases = u.purchases + row.purchases,
    u.chat_messages = u.chat_messages + row.chat_messages,
    u.feedbacks = u.feedbacks + row.feedbacks,
    u.spend = u.spend + row.spend,
    u += row.profile
"""

LINK_IDENTIFIERS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (i:Identifier {kind: row.kind, hash: row.hash})
ON CREATE SET i.first_seen = datetime({epochMillis: row.at})
MERGE (i)-[:IDENTIFIES]->(u)
"""

UPSERT_LOCATIONS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (l:Location {id: row.location.id})
SET l += row.location
WITH u, l
OPTIONAL MATCH (u)-[old:LOCATED_IN]->(other:Location) WHERE other <> l
DELETE old
MERGE (u)-[:LOCATED_IN]->(l)
"""

UPSERT_DEVICES = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (d:Device {id: row.id})
SET d.kind = coalesce(row.kind, d.kind)
MERGE (u)-[:USES]->(d)
"""

UPSERT_CATEGORIES = """
UNWIND $names AS name
MERGE (:Category {name: name})
"""

UPSERT_BRANDS = """
UNWIND $names AS name
MERGE (:Brand {name: name})
"""

UPSERT_ITEMS = """
UNWIND $rows AS row
MERGE (it:Item {id: row.id})
SET it.name = coalesce(row.name, it.name),
    it.price = coalesce(row.price, it.price)
WITH it, row
OPTIONAL MATCH (c:Category {name: row.category})
OPTIONAL MATCH (b:Brand {name: row.brand})
FOREACH (_ IN CASE WHEN c IS NULL THEN [] ELSE [1] END | MERGE (it)-[:IN_CATEGORY]->(c))
FOREACH (_ IN CASE WHEN b IS NULL THEN [] ELSE [1] END | MERGE (it)-[:OF_BRAND]->(b))
"""

UPSERT_SESSIONS = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.started_at}) AS started_at,
     datetime({epochMillis: row.ended_at}) AS ended_at
MATCH (u:User {id: row.user_id})
MERGE (s:Session {id: row.id})
ON CREATE SET s.started_at = started_at, s.ended_at = ended_at, s.events = 0
SET s.started_at = CASE WHEN started_at < s.started_at THEN started_at ELSE s.started_at END,
    s.ended_at = CASE WHEN ended_at > s.ended_at THEN ended_at ELSE s.ended_at END,
    s.events = s.events + row.events,
    s.channel = coalesce(row.channel, s.channel),
    s.device_kind = coalesce(row.device_kind, s.device_kind)
MERGE (u)-[:HAD_SESSION]->(s)
"""

# Look-ups come before the CREATE so the planner needs no Eager barrier between them.
CREATE_INTERACTIONS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
OPTIONAL MATCH (s:Session {id: row.session_id})
OPTIONAL MATCH (it:Item {id: row.item_id})
OPTIONAL MATCH (c:Category {name: row.category})
CREATE (u)-[:PERFORMED]->(i:Interaction)
SET i = row.props, i.at = datetime({epochMillis: row.at})
FOREACH (_ IN CASE WHEN s IS NULL THEN [] ELSE [1] END | CREATE (i)-[:IN_SESSION]->(s))
FOREACH (_ IN CASE WHEN it IS NULL THEN [] ELSE [1] END | CREATE (i)-[:ON_ITEM]->(it))
FOREACH (_ IN CASE WHEN c IS NULL OR it IS NOT NULL THEN [] ELSE [1] END |
         CREATE (i)-[:ABOUT]->(c))
"""

UPDATE_INTERACTED = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.first_at}) AS first_at,
     datetime({epochMillis: row.last_at}) AS last_at
MATCH (u:User {id: row.user_id}), (it:Item {id: row.item_id})
MERGE (u)-[r:INTERACTED]->(it)
ON CREATE SET r.views = 0, r.carts = 0, r.purchases = 0, r.spend = 0.0, r.first_at = first_at,
              r.last_at = last_at
SET r.views = r.views + row.views,
    r.carts = r.carts + row.carts,
    r.purchases = r.purchases + row.purchases,
    r.spend = r.spend + row.spend,
    r.first_at = CASE WHEN first_at < r.first_at THEN first_at ELSE r.first_at END,
    r.last_at = CASE WHEN last_at > r.last_at THEN last_at ELSE r.last_at END
"""

UPDATE_INFERRED_PREFERENCES = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id}), (c:Category {name: row.category})
MERGE (u)-[p:PREFERS {source: 'inferred'}]->(c)
ON CREATE SET p.score = 0.0, p.updated_at = at
SET p.score = p.score + row.score,
    p.updated_at = CASE WHEN at > p.updated_at THEN at ELSE p.updated_at END
"""

# Inferred weights are each category's share of the user's interest, so they stay comparable
# between heavy and light users.
NORMALIZE_INFERRED_PREFERENCES = """
UNWIND $user_ids AS uid
MATCH (:User {id: uid})-[p:PREFERS {source: 'inferred'}]->(:Category)
WITH uid, collect(p) AS prefs, sum(p.score) AS total
UNWIND prefs AS p
SET p.weight = CASE WHEN total > 0 THEN p.score / total ELSE 0.0 END
"""

# Explicit feedback: last write (by event time) wins.
SET_EXPLICIT_PREFERENCES = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id}), (c:Category {name: row.category})
MERGE (u)-[p:PREFERS {source: 'explicit'}]->(c)
ON CREATE SET p.updated_at = at, p.weight = row.weight
WITH p, row, at WHERE at >= p.updated_at
SET p.weight = row.weight, p.updated_at = at
"""
