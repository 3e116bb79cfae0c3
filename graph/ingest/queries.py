"""Cypher for event ingestion. Every statement takes a batch as ``$rows`` (one UNWIND a statement;
``WRITE_BATCH`` runs the writes of a batch as one).

A device, session, location or explicit preference the writer touches becomes the user's own:
``REMOVE r.via_merge`` drops the mark of a copy made by a merge (``graph/identity``), so that
unmerging keeps what the user's own events confirmed.

Every ``UNWIND`` statement here starts with ``CYPHER replan=skip``: their plans are index seeks
on unique keys whatever the graph's size, yet Neo4j would re-plan each of them, slowly, every
time its statistics drift, which they do all the time under ingestion: a batch that met a round
of re-planning took seconds (figures: ``docs/performance.md``).

Times travel as epoch milliseconds and become DateTime values here: the Python driver packs
``datetime`` objects about ten times slower than integers, which dominated batch writes.
"""

from __future__ import annotations

import re

USER_COUNT = "MATCH (u:User) RETURN count(u) AS n"

EXISTING_EVENTS = """
CYPHER replan=skip
UNWIND $ids AS id
MATCH (i:Interaction {event_id: id})
RETURN id
"""

# Who each identifier names now, and when it was erased (the suppression list written by
# erasure, graph/subjects): one round trip for both. A pair with neither is not returned.
RESOLVE_IDENTIFIERS = """
CYPHER replan=skip
UNWIND $rows AS row
OPTIONAL MATCH (:Identifier {kind: row.kind, hash: row.hash})-[:IDENTIFIES]->(u:User)
OPTIONAL MATCH (e:ErasedIdentifier {key: row.kind + ':' + row.hash})
WITH row, u, e WHERE u IS NOT NULL OR e IS NOT NULL
RETURN row.kind AS kind, row.hash AS hash, u.id AS user_id, e.at.epochMillis AS erased_at
"""

# Profile fields are last-write-wins by event time (`profile_updated_at`). Declared attributes
# (`attr_<name>`, graph.events.ATTRIBUTE_PREFIX) are bounded per user ($max_attributes,
# MAX_USER_ATTRIBUTES): a name the user does not hold yet is stored only while there is room.
UPSERT_USERS = """
CYPHER replan=skip
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
    u.spend = u.spend + row.spend
WITH u, row, u.profile_updated_at AS before,
     [k IN keys(u) WHERE k STARTS WITH 'attr_'] AS held
WITH u, row, before, held,
     [f IN row.profile WHERE before IS NULL OR datetime({epochMillis: f.at}) >= before] AS newer
WITH u, row, before, newer, held,
     CASE WHEN size(held) < $max_attributes THEN $max_attributes - size(held) ELSE 0 END AS room
FOREACH (f IN [f IN newer WHERE NOT f.key STARTS WITH 'attr_' OR f.key IN held] +
              [f IN newer WHERE f.key STARTS WITH 'attr_' AND NOT f.key IN held][..room] |
         SET u[f.key] = f.value)
SET u.profile_updated_at =
      CASE WHEN row.profile_at IS NOT NULL
                AND (before IS NULL OR datetime({epochMillis: row.profile_at}) > before)
           THEN datetime({epochMillis: row.profile_at}) ELSE before END
"""

LINK_IDENTIFIERS = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (i:Identifier {kind: row.kind, hash: row.hash})
ON CREATE SET i.first_seen = datetime({epochMillis: row.at})
MERGE (i)-[:IDENTIFIES]->(u)
"""

# Identifiers just linked that now identify two users: another transaction linked the same new
# identifier to another user between this one's look-up and its MERGE (two writers, e.g. the
# consumer and the API). The writer merges the owners, as for an event naming two users.
CONTESTED_IDENTIFIERS = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (:Identifier {kind: row.kind, hash: row.hash})-[:IDENTIFIES]->(u:User)
WITH row, collect(u.id) AS owners
WHERE size(owners) > 1
RETURN row.kind AS kind, row.hash AS hash, owners
"""

# The link this batch made to a contested identifier goes before the merge, so the merge moves
# the other writer's (one link to the survivor, which an unmerge gives back).
UNLINK_IDENTIFIERS = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (:Identifier {kind: row.kind, hash: row.hash})-[r:IDENTIFIES]->(:User {id: row.user_id})
DELETE r
"""

# The location is last-write-wins by event time too, with its own time on LOCATED_IN (`at`).
# Batches name the same few locations and items again and again: they are written (and
# locked) only when a value changes (here and in UPSERT_ITEMS).
UPSERT_LOCATIONS = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id})
WHERE NOT EXISTS { (u)-[cur:LOCATED_IN]->() WHERE cur.at > at }
MERGE (l:Location {id: row.location.id})
WITH u, l, at, row
CALL (l, row) {
  WITH l, row WHERE any(k IN keys(row.location) WHERE l[k] IS NULL OR l[k] <> row.location[k])
  SET l += row.location
}
OPTIONAL MATCH (u)-[old:LOCATED_IN]->(other:Location) WHERE other <> l
DELETE old
MERGE (u)-[r:LOCATED_IN]->(l)
SET r.at = at
REMOVE r.via_merge
"""

UPSERT_DEVICES = """
CYPHER replan=skip
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (d:Device {id: row.id})
SET d.kind = coalesce(row.kind, d.kind)
MERGE (u)-[r:USES]->(d)
REMOVE r.via_merge
"""

UPSERT_CATEGORIES = """
CYPHER replan=skip
UNWIND $names AS name
MERGE (:Category {name: name})
"""

UPSERT_BRANDS = """
CYPHER replan=skip
UNWIND $names AS name
MERGE (:Brand {name: name})
"""

UPSERT_ITEMS = """
CYPHER replan=skip
UNWIND $rows AS row
MERGE (it:Item {id: row.id})
WITH it, row
CALL (it, row) {
  WITH it, row WHERE (row.name IS NOT NULL AND (it.name IS NULL OR it.name <> row.name))
                  OR (row.price IS NOT NULL AND (it.price IS NULL OR it.price <> row.price))
  SET it.name = coalesce(row.name, it.name), it.price = coalesce(row.price, it.price)
}
OPTIONAL MATCH (c:Category {name: row.category})
OPTIONAL MATCH (b:Brand {name: row.brand})
FOREACH (_ IN CASE WHEN c IS NULL THEN [] ELSE [1] END | MERGE (it)-[:IN_CATEGORY]->(c))
FOREACH (_ IN CASE WHEN b IS NULL THEN [] ELSE [1] END | MERGE (it)-[:OF_BRAND]->(b))
"""

# A session shared by several users (a conversation with two participants) links each of them:
# `row.user_ids` are the batch's participants, and one seen in an earlier batch keeps its link.
UPSERT_SESSIONS = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.started_at}) AS started_at,
     datetime({epochMillis: row.ended_at}) AS ended_at
MERGE (s:Session {id: row.id})
ON CREATE SET s.started_at = started_at, s.ended_at = ended_at, s.events = 0
SET s.started_at = CASE WHEN started_at < s.started_at THEN started_at ELSE s.started_at END,
    s.ended_at = CASE WHEN ended_at > s.ended_at THEN ended_at ELSE s.ended_at END,
    s.events = s.events + row.events,
    s.channel = coalesce(row.channel, s.channel),
    s.device_kind = coalesce(row.device_kind, s.device_kind)
WITH s, row
UNWIND row.user_ids AS uid
MATCH (u:User {id: uid})
MERGE (u)-[r:HAD_SESSION]->(s)
REMOVE r.via_merge
"""

def _by_position(kind: str, var: str, node: str) -> str:
    """A subquery returning ``kind`` (``[[n], ...]``): the nodes named in ``$refs.<kind>``, in
    its order, for ``CREATE_INTERACTIONS``. ``node`` is the pattern matched on ``$name``."""
    return f"""CALL {{
  UNWIND range(0, size($refs.{kind}) - 1) AS k
  OPTIONAL MATCH {node.replace("$name", f"$refs.{kind}[k]")}
  WITH k, {var} ORDER BY k
  RETURN collect([{var}]) AS {kind}
}}
"""


# Each row names its user, session, item and category by position in `$refs` (a list per kind,
# each name once): a batch looks each node up once instead of once per event (four index seeks
# an event were a fifth of the batch's time in Neo4j). `collect([n])` keeps a position for a
# node not found. Look-ups come before the CREATE so the planner needs no Eager barrier between
# them.
CREATE_INTERACTIONS = "\nCYPHER replan=skip\n" + "".join((
    _by_position("users", "u", "(u:User {id: $name})"),
    _by_position("sessions", "s", "(s:Session {id: $name})"),
    _by_position("items", "it", "(it:Item {id: $name})"),
    _by_position("categories", "c", "(c:Category {name: $name})"),
)) + """UNWIND $rows AS row
WITH row, users[row.u][0] AS u, sessions[row.s][0] AS s, items[row.it][0] AS it,
     categories[row.c][0] AS c
CREATE (u)-[:PERFORMED]->(i:Interaction)
SET i = row.props, i.at = datetime({epochMillis: row.at}), i.recorded_at = datetime()
FOREACH (_ IN CASE WHEN s IS NULL THEN [] ELSE [1] END | CREATE (i)-[:IN_SESSION]->(s))
FOREACH (_ IN CASE WHEN it IS NULL THEN [] ELSE [1] END | CREATE (i)-[:ON_ITEM]->(it))
FOREACH (_ IN CASE WHEN c IS NULL OR it IS NOT NULL THEN [] ELSE [1] END |
         CREATE (i)-[:ABOUT]->(c))
"""

UPDATE_INTERACTED = """
CYPHER replan=skip
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
WITH r, row WHERE row.rated_at IS NOT NULL
WITH r, row, datetime({epochMillis: row.rated_at}) AS rated_at
WHERE r.rated_at IS NULL OR rated_at >= r.rated_at
SET r.rating = row.rating, r.rated_at = rated_at
"""

# Inferred interest decays exponentially ($decay_per_ms: aggregates.DECAY_PER_MS): a score is
# held as of its `updated_at`; a newer batch decays it to the batch's time before adding, an
# older (late) one adds its own score decayed to `updated_at`. Rows come pre-decayed to row.at.
UPDATE_INFERRED_PREFERENCES = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id}), (c:Category {name: row.category})
MERGE (u)-[p:PREFERS {source: 'inferred'}]->(c)
ON CREATE SET p.score = 0.0, p.updated_at = at
WITH p, row, at, at.epochMillis - p.updated_at.epochMillis AS delta
SET p.score = CASE WHEN delta >= 0
                   THEN p.score * exp(-$decay_per_ms * delta) + row.score
                   ELSE p.score + row.score * exp($decay_per_ms * delta) END,
    p.updated_at = CASE WHEN delta > 0 THEN at ELSE p.updated_at END
"""

# Inferred weights are each category's share of the user's interest, every score first decayed
# to the user's latest one, so they stay comparable between heavy and light users and between
# categories last touched at different times.
NORMALIZE_INFERRED_PREFERENCES = """
CYPHER replan=skip
UNWIND $user_ids AS uid
MATCH (:User {id: uid})-[p:PREFERS {source: 'inferred'}]->(:Category)
WITH uid, collect(p) AS prefs, max(p.updated_at).epochMillis AS ref
WITH prefs,
     [p IN prefs | p.score * exp(-$decay_per_ms * (ref - p.updated_at.epochMillis))] AS now
WITH prefs, now, reduce(t = 0.0, v IN now | t + v) AS total
UNWIND range(0, size(prefs) - 1) AS k
WITH prefs[k] AS p, now[k] AS v, total
SET p.weight = CASE WHEN total > 0 THEN v / total ELSE 0.0 END
"""

# Explicit preferences (feedback naming a category and no item, or stated through the API): last
# write (by event time) wins.
# A stated preference may name a category no item has yet, so the category is merged.
SET_EXPLICIT_PREFERENCES = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id})
MERGE (c:Category {name: row.category})
MERGE (u)-[p:PREFERS {source: 'explicit'}]->(c)
ON CREATE SET p.updated_at = at, p.weight = row.weight
REMOVE p.via_merge
WITH p, row, at WHERE at >= p.updated_at
SET p.weight = row.weight, p.updated_at = at
"""


def _body(statement: str, **renamed: str) -> str:
    """``statement`` without its ``CYPHER`` prefix, its parameters renamed (each statement here
    names its rows ``$rows``), to become a part of ``WRITE_BATCH``."""
    prefix = "\nCYPHER replan=skip\n"
    if not statement.startswith(prefix):
        raise ValueError("a WRITE_BATCH part must start with CYPHER replan=skip")
    body = statement.removeprefix(prefix)
    for old, new in renamed.items():
        body = re.sub(rf"\${old}\b", f"${new}", body)
    return body


def _unit(statement: str, **renamed: str) -> str:
    return "CALL {\n" + _body(statement, **renamed) + "}\n"


# A batch's writes in the order above, as one statement with one round trip. The writer's thread
# then waits for Neo4j twice a batch (this and the commit) instead of about 16 times, and each
# of those waits ended with a wait for the GIL held by the thread reading and planning the next
# batch (docs/performance.md). An empty list leaves its part out.
#
# It first counts which of `$links` still hold: the identifier-to-user links a batch planned
# ahead relied on (EventWriter.plan; a merge leaves the merged user a MergedUser, an unmerge
# moves identifiers back, an erasure deletes both). If any changed, nothing is written and no
# row returned. At the end it returns the identifiers just linked that a concurrent writer
# linked to another user (CONTESTED_IDENTIFIERS), for the writer to merge their owners.
WRITE_BATCH = "\nCYPHER replan=skip\n" + """CALL {
  UNWIND $links AS row
  WITH row WHERE EXISTS {
    (:Identifier {kind: row.kind, hash: row.hash})-[:IDENTIFIES]->(:User {id: row.user_id})
  }
  RETURN count(row) AS held
}
WITH held WHERE held = size($links)
""" + "".join((
    _unit(UPSERT_USERS, rows="users"),
    _unit(LINK_IDENTIFIERS, rows="identifiers"),
    _unit(UPSERT_LOCATIONS, rows="locations"),
    _unit(UPSERT_DEVICES, rows="devices"),
    _unit(UPSERT_CATEGORIES, names="categories"),
    _unit(UPSERT_BRANDS, names="brands"),
    _unit(UPSERT_ITEMS, rows="items"),
    _unit(UPSERT_SESSIONS, rows="sessions"),
    _unit(CREATE_INTERACTIONS, rows="interactions", refs="interaction_refs"),
    _unit(UPDATE_INTERACTED, rows="interacted"),
    _unit(UPDATE_INFERRED_PREFERENCES, rows="inferred"),
    _unit(NORMALIZE_INFERRED_PREFERENCES, user_ids="inferred_users"),
    _unit(SET_EXPLICIT_PREFERENCES, rows="explicit"),
)) + "CALL {\nCALL {\n" + _body(CONTESTED_IDENTIFIERS, rows="identifiers") + """}
RETURN collect({kind: kind, hash: hash, owners: owners}) AS contested
}
RETURN contested
"""

# ---- rebuilding a user's aggregates from their interactions (graph/ingest/aggregates.py) ----
# Used after identity resolution moved interactions between users. `$counters` maps an event
# type to the user counter it increments, `$interest` an event type to its interest score
# (COUNTER and INTEREST_SCORE, the writer's definitions).

RECOMPUTE_USER_COUNTERS = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})
CALL (u) {
  OPTIONAL MATCH (u)-[:PERFORMED]->(i:Interaction)
  RETURN count(i) AS events, min(i.at) AS first_seen, max(i.at) AS last_seen,
         sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
         collect(i.type) AS types
}
SET u.events = events, u.spend = spend,
    u.first_seen = coalesce(first_seen, u.first_seen),
    u.last_seen = coalesce(last_seen, u.last_seen)
WITH u, types
UNWIND keys($counters) AS type
SET u[$counters[type]] = size([t IN types WHERE t = type])
"""

DELETE_STALE_INTERACTED = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[r:INTERACTED]->(it:Item)
WHERE NOT EXISTS { (u)-[:PERFORMED]->(:Interaction {item_id: it.id}) }
DELETE r
"""

RECOMPUTE_INTERACTED = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[:PERFORMED]->(i:Interaction)
WHERE i.item_id IS NOT NULL
WITH u, i.item_id AS item_id,
     sum(CASE WHEN i.type = $view THEN 1 ELSE 0 END) AS views,
     sum(CASE WHEN i.type = $cart THEN 1 ELSE 0 END) AS carts,
     sum(CASE WHEN i.type = $purchase THEN coalesce(i.quantity, 1) ELSE 0 END) AS purchases,
     sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
     min(i.at) AS first_at, max(i.at) AS last_at,
     collect(CASE WHEN i.type = $feedback AND i.rating IS NOT NULL
                  THEN {rating: i.rating, at: i.at} END) AS ratings
MATCH (it:Item {id: item_id})
MERGE (u)-[r:INTERACTED]->(it)
WITH r, views, carts, purchases, spend, first_at, last_at,
     reduce(latest = null, f IN ratings |
            CASE WHEN latest IS NULL OR f.at >= latest.at THEN f ELSE latest END) AS rated
SET r.views = views, r.carts = carts, r.purchases = purchases, r.spend = spend,
    r.first_at = first_at, r.last_at = last_at, r.rating = rated.rating, r.rated_at = rated.at
"""

DELETE_STALE_INFERRED_PREFERENCES = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[p:PREFERS {source: 'inferred'}]->(c:Category)
WHERE NOT EXISTS { (u)-[:PERFORMED]->(:Interaction {category: c.name}) }
DELETE p
"""

RECOMPUTE_INFERRED_PREFERENCES = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[:PERFORMED]->(i:Interaction)
WHERE i.category IS NOT NULL
WITH u, i.category AS category, collect(i) AS its, max(i.at) AS at
WITH u, category, at,
     reduce(s = 0.0, i IN its | s + $interest[i.type] *
            exp(-$decay_per_ms * (at.epochMillis - i.at.epochMillis))) AS score
MATCH (c:Category {name: category})
MERGE (u)-[p:PREFERS {source: 'inferred'}]->(c)
SET p.score = score, p.updated_at = at
"""
