"""Cypher for event ingestion. Every statement takes a batch as ``$rows`` (one UNWIND a statement;
``WRITE_BATCH`` runs the writes of a batch as one, with the identifier links of
``graph/identity/queries.py`` and the aggregate updates of ``graph/aggregates/queries.py``).

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

from graph.aggregates.queries import (
    NORMALIZE_INFERRED_PREFERENCES,
    UPDATE_INFERRED_PREFERENCES,
    UPDATE_INTERACTED,
)
from graph.identity.queries import CONTESTED_IDENTIFIERS, LINK_IDENTIFIERS

USER_COUNT = "MATCH (u:User) RETURN count(u) AS n"

EXISTING_EVENTS = """
CYPHER replan=skip
UNWIND $ids AS id
MATCH (i:Interaction {event_id: id})
RETURN id
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

# An item is in one category, the latest an event named: its `category` (what the
# recommendation reads: a property, not an expansion of the dense item node; migrations/0019)
# and its one IN_CATEGORY edge (what the catalogue reads and analysts use) are written
# together, here and in the bulk import (graph/ingest/bulk.py), and only when the category
# changes: the edge then moves, as LOCATED_IN does.
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
CALL (it, row) {
  WITH it, row WHERE row.category IS NOT NULL
                 AND (it.category IS NULL OR it.category <> row.category)
  MATCH (c:Category {name: row.category})
  OPTIONAL MATCH (it)-[old:IN_CATEGORY]->(other) WHERE other <> c
  DELETE old
  WITH DISTINCT it, c
  MERGE (it)-[:IN_CATEGORY]->(c)
  SET it.category = c.name
}
OPTIONAL MATCH (b:Brand {name: row.brand})
FOREACH (_ IN CASE WHEN b IS NULL THEN [] ELSE [1] END | MERGE (it)-[:OF_BRAND]->(b))
"""

# A session shared by several users (a conversation with two participants) links each of them:
# `row.user_ids` are the batch's participants, and one seen in an earlier batch keeps its link.
# Each link carries its user's id and the session's start (`user_id`, `started_at`: a user's
# sessions are a seek of the index on them, migrations/0015): the batch's links get the start
# as they are written, and every link of the session again only when a late event moved it.
UPSERT_SESSIONS = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.started_at}) AS started_at,
     datetime({epochMillis: row.ended_at}) AS ended_at
MERGE (s:Session {id: row.id})
ON CREATE SET s.started_at = started_at, s.ended_at = ended_at, s.events = 0
WITH row, started_at, ended_at, s, s.started_at AS before
SET s.started_at = CASE WHEN started_at < s.started_at THEN started_at ELSE s.started_at END,
    s.ended_at = CASE WHEN ended_at > s.ended_at THEN ended_at ELSE s.ended_at END,
    s.events = s.events + row.events,
    s.channel = coalesce(row.channel, s.channel),
    s.device_kind = coalesce(row.device_kind, s.device_kind)
WITH s, row, before
CALL (s, row) {
  UNWIND row.user_ids AS uid
  MATCH (u:User {id: uid})
  MERGE (u)-[r:HAD_SESSION]->(s)
  SET r.user_id = uid, r.started_at = s.started_at
  REMOVE r.via_merge
}
CALL (s, before) {
  WITH s, before WHERE s.started_at <> before
  MATCH (s)<-[h:HAD_SESSION]-()
  SET h.started_at = s.started_at
}
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


# Each interaction carries its user's and session's ids (`user_id`, `session_id`): the reads of
# a user's or a session's interactions seek them in time order (migrations/0015). They are
# taken from `$refs`, not read from the nodes found (two property reads an event less).
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
SET i = row.props, i.at = datetime({epochMillis: row.at}), i.recorded_at = datetime(),
    i.user_id = $refs.users[row.u], i.session_id = $refs.sessions[row.s]
FOREACH (_ IN CASE WHEN s IS NULL THEN [] ELSE [1] END | CREATE (i)-[:IN_SESSION]->(s))
FOREACH (_ IN CASE WHEN it IS NULL THEN [] ELSE [1] END | CREATE (i)-[:ON_ITEM]->(it))
FOREACH (_ IN CASE WHEN c IS NULL OR it IS NOT NULL THEN [] ELSE [1] END |
         CREATE (i)-[:ABOUT]->(c))
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
