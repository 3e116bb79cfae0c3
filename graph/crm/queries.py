"""Cypher of the CRM import and webhook. Each statement takes a batch as ``$rows``; times travel
as epoch milliseconds (see ``graph.ingest.queries``)."""

from __future__ import annotations

# Users first known from the CRM get the counters the event writer expects (it adds to them),
# and first_seen/last_seen at the record's time, so later events compare against a value.
ENSURE_USERS = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MERGE (u:User {id: row.id})
ON CREATE SET u.first_seen = at, u.last_seen = at, u.created_at = datetime(),
              u.events = 0, u.page_views = 0, u.searches = 0, u.carts = 0, u.purchases = 0,
              u.chat_messages = 0, u.feedbacks = 0, u.spend = 0.0
"""

# Writing this property takes the user's write lock first, so that two transactions updating the
# same user's fields run one after the other and the last-write-wins comparison below is safe.
LOCK_USERS = """
UNWIND $ids AS id
MATCH (u:User {id: id})
SET u.crm_synced_at = datetime()
"""

# One row per (user, field), the newest of the batch. A field changes only when the record is
# strictly newer than what is stored (last write wins by the source's timestamp); an older or
# equally old record changes nothing. A user merged from two may hold two fields of one name
# (the merge keeps each, so that it can be undone): the record must be newer than all of them,
# and then updates all of them. ``row.mirror`` is {name: value} for the fields the rest of the
# graph reads on the User node (age_band, tier...), {} for hashed names and location fields.
UPSERT_FIELDS = """
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id})
OPTIONAL MATCH (u)-[:HAS_FIELD]->(old:ProfileField {name: row.name})
WITH u, row, at, collect(old) AS olds
WHERE all(o IN olds WHERE at > o.updated_at)
FOREACH (_ IN CASE WHEN size(olds) = 0 THEN [1] ELSE [] END |
  CREATE (u)-[:HAS_FIELD]->(:ProfileField {name: row.name, value: row.value, hashed: row.hashed,
          source: row.source, via: row.via, updated_at: at, written_at: datetime()}))
FOREACH (o IN olds |
  SET o.value = row.value, o.hashed = row.hashed, o.source = row.source, o.via = row.via,
      o.updated_at = at, o.written_at = datetime())
SET u += row.mirror
RETURN row.ref AS ref, row.name AS name
"""

# The user's location follows the location_id field: only when this record's value won.
LINK_LOCATIONS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})-[:HAS_FIELD]->(f:ProfileField {name: 'location_id'})
WHERE f.updated_at = datetime({epochMillis: row.at}) AND f.value = row.location.id
WITH DISTINCT u, row
MERGE (l:Location {id: row.location.id})
SET l += row.location
WITH u, l
OPTIONAL MATCH (u)-[old:LOCATED_IN]->(other:Location) WHERE other <> l
DELETE old
MERGE (u)-[:LOCATED_IN]->(l)
"""

# After a merge, the survivor's fields of each name: the newest value, to mirror on the user.
NEWEST_FIELDS = """
UNWIND $ids AS id
MATCH (u:User {id: id})-[:HAS_FIELD]->(f:ProfileField)
WITH u, f ORDER BY f.updated_at DESC
WITH u, f.name AS name, collect(f)[0] AS newest
RETURN u.id AS user_id, name, newest.value AS value
"""

MIRROR_FIELDS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
SET u += row.mirror
"""

# ---- webhook deliveries -------------------------------------------------------------------

DELIVERY_SEEN = """
MATCH (d:WebhookDelivery {id: $id})
RETURN d.received_at AS received_at
"""

# Created in the transaction that applies the delivery's records: a delivery that failed can be
# retried, and the uniqueness constraint makes two processes racing on one delivery agree.
RECORD_DELIVERY = """
CREATE (:WebhookDelivery {id: $id, source: $source, received_at: datetime(),
                          signed_at: datetime({epochSeconds: $signed_at}), records: $records})
"""

PRUNE_DELIVERIES = """
MATCH (d:WebhookDelivery)
WHERE d.received_at < datetime() - duration({seconds: $keep_seconds})
WITH d LIMIT 1000
DELETE d
RETURN count(*) AS pruned
"""
