"""Cypher for identity resolution: who identifiers name and linking new ones
(``resolution.py``: events, CRM records and the API alike), and merging and unmerging users
(``merge.py``).

The link statements start with ``CYPHER replan=skip``: they become parts of the event writer's
``WRITE_BATCH`` (``graph/ingest/queries.py``).

Merges and unmerges keep their provenance on the graph itself:

- a relationship *moved* from the merged user to the survivor carries ``merges``, the stack of
  merge ids that moved it (the last one is the latest move); unmerging moves back the
  relationships whose last entry is that merge, and pops it;
- a relationship *copied* to the survivor (devices, sessions, location, explicit preferences the
  survivor lacked) carries ``via_merge``; unmerging deletes the copies of that merge, and the
  merged user kept its originals;
- an explicit preference of the survivor overwritten by a newer one of the merged user keeps its
  previous weight and time on the stacks ``stash_merges``/``stash_weights``/``stash_updated_at``;
- the merged user becomes a tombstone: label ``MergedUser`` instead of ``User``, and
  ``(tombstone)-[:MERGED_INTO {merge_id, at}]->(survivor)``; the survivor's ``merge_stack``
  lists the merges into it, latest last.

Relationship types of moved relationships come from ``type(r)`` of stored relationships, so the
dynamic ``$(type)`` never holds caller input.
"""

from __future__ import annotations

# ---- who identifiers name, and new links (resolution.py) ----

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

# ---- merging and unmerging (merge.py) ----

# Each id as stored: live user, tombstone, or nothing; a tombstone's live root and the merge that
# made it a tombstone.
FIND_USERS = """
UNWIND $ids AS id
OPTIONAL MATCH (u:User {id: id})
OPTIONAL MATCH (t:MergedUser {id: id})
OPTIONAL MATCH (t)-[:MERGED_INTO*]->(root:User)
OPTIONAL MATCH (t)-[via:MERGED_INTO]->()
RETURN id, u IS NOT NULL AS live, t IS NOT NULL AS merged,
       coalesce(u.id, root.id) AS root_id, via.merge_id AS merge_id
"""

# Write-locks both users before anything is read for the merge, so that two transactions
# merging overlapping users are serialized (the second then sees the first's result).
LOCK_USERS = """
UNWIND $ids AS id
MATCH (u:User {id: id})
SET u.merge_lock = true
REMOVE u.merge_lock
RETURN u.id AS id
"""

# How authoritative each user's best identifier is (`$ranks`: kind -> position in
# IDENTIFIER_KINDS, 0 the most authoritative), and when the user was first seen.
AUTHORITY = """
UNWIND $ids AS id
MATCH (u:User {id: id})
OPTIONAL MATCH (u)<-[:IDENTIFIES]-(i:Identifier)
RETURN u.id AS id, min($ranks[i.kind]) AS rank, u.first_seen AS first_seen
"""

# ------------------------------------------------------------------------------------ merge ---

# Owned relationships (identifiers, interactions, and any type not named in `$kept`) move to the
# survivor, with the merge pushed on their `merges` stack.
MOVE_OUTGOING = """
MATCH (m:User {id: $merged_id})-[r]->(x)
WHERE NOT type(r) IN $kept AND x <> m
MATCH (s:User {id: $survivor_id})
WITH s, r, x, type(r) AS type
CREATE (s)-[moved:$(type)]->(x)
SET moved = properties(r), moved.merges = coalesce(r.merges, []) + $merge_id
DELETE r
RETURN type, count(*) AS n
"""

MOVE_INCOMING = """
MATCH (m:User {id: $merged_id})<-[r]-(x)
WHERE NOT type(r) IN $kept AND x <> m
MATCH (s:User {id: $survivor_id})
WITH s, r, x, type(r) AS type
CREATE (x)-[moved:$(type)]->(s)
SET moved = properties(r), moved.merges = coalesce(r.merges, []) + $merge_id
DELETE r
RETURN type, count(*) AS n
"""

# Interactions carry their owner's id (`user_id`, the key of the index a user's reads seek:
# migrations/0015): a merge hands the merged user's to the survivor before they move, and an
# unmerge hands them back once they are the merged user's again.
HAND_OVER_INTERACTIONS = """
MATCH (:User {id: $from_id})-[:PERFORMED]->(i:Interaction)
SET i.user_id = $to_id
"""

# Shared things (devices, sessions) are copied to the survivor when it lacks them.
COPY_DEVICES = """
MATCH (m:User {id: $merged_id})-[r:USES]->(d:Device)
MATCH (s:User {id: $survivor_id})
WHERE NOT EXISTS { (s)-[:USES]->(d) }
CREATE (s)-[c:USES]->(d)
SET c = properties(r), c.via_merge = $merge_id
RETURN count(c) AS n
"""

COPY_SESSIONS = """
MATCH (m:User {id: $merged_id})-[r:HAD_SESSION]->(x:Session)
MATCH (s:User {id: $survivor_id})
WHERE NOT EXISTS { (s)-[:HAD_SESSION]->(x) }
CREATE (s)-[c:HAD_SESSION]->(x)
SET c = properties(r), c.via_merge = $merge_id, c.user_id = $survivor_id
RETURN count(c) AS n
"""

# A user has one location, the latest known: the merged user's replaces the survivor's when the
# merged user was seen more recently (the replaced one is recorded on the Merge node), and is
# copied when the survivor has none.
REPLACE_LOCATION = """
MATCH (s:User {id: $survivor_id})-[own:LOCATED_IN]->(old:Location)
MATCH (m:User {id: $merged_id})-[:LOCATED_IN]->(l:Location)
WHERE old <> l AND m.last_seen > s.last_seen
WITH own, old LIMIT 1
WITH own, old.id AS before, own.via_merge AS via, own.at AS before_at
DELETE own
RETURN before, via, before_at
"""

COPY_LOCATION = """
MATCH (m:User {id: $merged_id})-[r:LOCATED_IN]->(l:Location)
MATCH (s:User {id: $survivor_id})
WHERE NOT EXISTS { (s)-[:LOCATED_IN]->() }
WITH s, r, l LIMIT 1
CREATE (s)-[c:LOCATED_IN]->(l)
SET c = properties(r), c.via_merge = $merge_id
RETURN count(c) AS n
"""

# Explicit preferences: the newer statement wins, as in the writer (ties: the survivor's). An
# older one of the survivor is overwritten, its values kept on the stash stacks.
OVERWRITE_EXPLICIT_PREFERENCES = """
MATCH (m:User {id: $merged_id})-[r:PREFERS {source: 'explicit'}]->(c:Category)
MATCH (s:User {id: $survivor_id})-[e:PREFERS {source: 'explicit'}]->(c)
WHERE r.updated_at > e.updated_at
SET e.stash_merges = coalesce(e.stash_merges, []) + $merge_id,
    e.stash_weights = coalesce(e.stash_weights, []) + e.weight,
    e.stash_updated_at = coalesce(e.stash_updated_at, []) + e.updated_at,
    e.weight = r.weight,
    e.updated_at = r.updated_at
RETURN count(e) AS n
"""

COPY_EXPLICIT_PREFERENCES = """
MATCH (m:User {id: $merged_id})-[r:PREFERS {source: 'explicit'}]->(c:Category)
MATCH (s:User {id: $survivor_id})
WHERE NOT EXISTS { (s)-[:PREFERS {source: 'explicit'}]->(c) }
CREATE (s)-[copy:PREFERS]->(c)
SET copy = properties(r), copy.via_merge = $merge_id
REMOVE copy.stash_merges, copy.stash_weights, copy.stash_updated_at
RETURN count(copy) AS n
"""

# Profile fields (age band, gender, locale...): the survivor takes those it lacks, and all the
# merged user has when the merged user was seen more recently (last value wins, as in the
# writer). Consent flags (`$restrictive`): a withdrawal (false) on either side holds. Returns
# the survivor's previous values, for unmerge.
COPY_PROFILE = """
MATCH (s:User {id: $survivor_id}), (m:User {id: $merged_id})
WITH s, m, coalesce(m.profile_updated_at > s.profile_updated_at, m.last_seen > s.last_seen,
                    false) AS newer
WITH s, m,
     [k IN $keys + [k IN keys(m) WHERE k STARTS WITH $attribute_prefix]
      WHERE m[k] IS NOT NULL AND (s[k] IS NULL OR (newer AND s[k] <> m[k]))] +
     [k IN $restrictive WHERE m[k] IS NOT NULL
                          AND (s[k] IS NULL OR (m[k] = false AND s[k] <> false))]
     AS taken
// The replaced values are kept as JSON on the Merge node: the profile's time as a string.
WITH s, m, taken, [k IN taken | {key: k, value: CASE WHEN k = 'profile_updated_at'
                                                    THEN toString(s[k]) ELSE s[k] END}] AS before
FOREACH (k IN taken | SET s[k] = m[k])
RETURN before
"""

# The tombstone's aggregates are derived; they are rebuilt when it is unmerged.
DROP_DERIVED = """
MATCH (m:User {id: $merged_id})-[r:INTERACTED|PREFERS]->()
WHERE type(r) = 'INTERACTED' OR r.source = 'inferred'
DELETE r
"""

TOMBSTONE = """
MATCH (s:User {id: $survivor_id}), (m:User {id: $merged_id})
CREATE (:Merge {id: $merge_id, at: datetime.realtime(), source: $source, reason: $reason,
                survivor_id: $survivor_id, merged_id: $merged_id,
                profile_before: $profile_before, location_before: $location_before,
                location_before_via: $location_before_via,
                location_before_at: $location_before_at, moved: $moved, copied: $copied})
CREATE (m)-[:MERGED_INTO {merge_id: $merge_id, at: datetime()}]->(s)
REMOVE m:User
SET m:MergedUser, s.merge_stack = coalesce(s.merge_stack, []) + $merge_id
"""

# ---------------------------------------------------------------------------------- unmerge ---

GET_MERGE = """
MATCH (g:Merge {id: $merge_id})
OPTIONAL MATCH (s:User {id: g.survivor_id})
OPTIONAL MATCH (:MergedUser {id: g.survivor_id})-[later:MERGED_INTO]->()
OPTIONAL MATCH (t:MergedUser {id: g.merged_id})-[:MERGED_INTO {merge_id: g.id}]->()
RETURN g.survivor_id AS survivor_id, g.merged_id AS merged_id,
       g.undone_at IS NOT NULL AS undone, g.profile_before AS profile_before,
       g.location_before AS location_before, g.location_before_via AS location_before_via,
       g.location_before_at AS location_before_at,
       s IS NOT NULL AS survivor_live, s.merge_stack AS stack,
       later.merge_id AS survivor_merged_by, t IS NOT NULL AS tombstone_found
"""

UNDO_MOVE_OUTGOING = """
MATCH (s:User {id: $survivor_id})-[r]->(x)
WHERE r.merges[-1] = $merge_id
MATCH (m:MergedUser {id: $merged_id})
WITH m, r, x, type(r) AS type
CREATE (m)-[back:$(type)]->(x)
SET back = properties(r),
    back.merges = CASE WHEN size(r.merges) > 1 THEN r.merges[..-1] END
DELETE r
RETURN count(*) AS n
"""

UNDO_MOVE_INCOMING = """
MATCH (s:User {id: $survivor_id})<-[r]-(x)
WHERE r.merges[-1] = $merge_id
MATCH (m:MergedUser {id: $merged_id})
WITH m, r, x, type(r) AS type
CREATE (x)-[back:$(type)]->(m)
SET back = properties(r),
    back.merges = CASE WHEN size(r.merges) > 1 THEN r.merges[..-1] END
DELETE r
RETURN count(*) AS n
"""

DELETE_COPIES = """
MATCH (s:User {id: $survivor_id})-[r:USES|HAD_SESSION|LOCATED_IN|PREFERS]->()
WHERE r.via_merge = $merge_id
DELETE r
"""

# An overwritten explicit preference gets its earlier value back, unless a newer statement has
# changed it since the merge (then only the stash entry goes).
RESTORE_EXPLICIT_PREFERENCES = """
MATCH (s:User {id: $survivor_id})-[e:PREFERS {source: 'explicit'}]->(c:Category)
WHERE e.stash_merges[-1] = $merge_id
OPTIONAL MATCH (:MergedUser {id: $merged_id})-[r:PREFERS {source: 'explicit'}]->(c)
WITH e, coalesce(e.weight = r.weight AND e.updated_at = r.updated_at, false) AS untouched
SET e.weight = CASE WHEN untouched THEN e.stash_weights[-1] ELSE e.weight END,
    e.updated_at = CASE WHEN untouched THEN e.stash_updated_at[-1] ELSE e.updated_at END,
    e.stash_merges = CASE WHEN size(e.stash_merges) > 1 THEN e.stash_merges[..-1] END,
    e.stash_weights = CASE WHEN size(e.stash_weights) > 1 THEN e.stash_weights[..-1] END,
    e.stash_updated_at = CASE WHEN size(e.stash_updated_at) > 1
                              THEN e.stash_updated_at[..-1] END
"""

# Profile fields the merge set get their previous value back (none: removed), unless they
# changed since.
RESTORE_PROFILE = """
MATCH (s:User {id: $survivor_id}), (m:MergedUser {id: $merged_id})
UNWIND $rows AS row
WITH s, m, row, CASE WHEN row.key = 'profile_updated_at' AND row.value IS NOT NULL
                     THEN datetime(row.value) ELSE row.value END AS value
SET s[row.key] = CASE WHEN s[row.key] = m[row.key] THEN value ELSE s[row.key] END
"""

# The location the merge replaced comes back, unless the user has moved since (then the copy was
# replaced by the writer and the user has a location of its own).
RESTORE_LOCATION = """
MATCH (s:User {id: $survivor_id}), (l:Location {id: $location_id})
WHERE NOT EXISTS { (s)-[:LOCATED_IN]->() }
CREATE (s)-[r:LOCATED_IN]->(l)
SET r.via_merge = $via, r.at = $at
"""

UNTOMBSTONE = """
MATCH (m:MergedUser {id: $merged_id})-[r:MERGED_INTO {merge_id: $merge_id}]->
      (s:User {id: $survivor_id})
MATCH (g:Merge {id: $merge_id})
DELETE r
REMOVE m:MergedUser
SET m:User, g.undone_at = datetime(),
    s.merge_stack = CASE WHEN size(s.merge_stack) > 1 THEN s.merge_stack[..-1] END
RETURN count(*) AS n
"""

# ---------------------------------------------------------------------------------- history ---

# Merges of the user and of every user merged into it (transitively), undone ones included.
MERGES_OF = """
OPTIONAL MATCH (u:User {id: $id})
OPTIONAL MATCH (t:MergedUser {id: $id})
WITH coalesce(u, t) AS x
WHERE x IS NOT NULL
OPTIONAL MATCH (x)<-[:MERGED_INTO*]-(sub:MergedUser)
WITH x.id AS id, collect(sub.id) AS subs
WITH [id] + subs AS ids
MATCH (g:Merge)
WHERE g.survivor_id IN ids OR g.merged_id IN ids
RETURN g.id AS id, g.at AS at, g.source AS source, g.reason AS reason,
       g.survivor_id AS survivor_id, g.merged_id AS merged_id, g.undone_at AS undone_at,
       g.moved AS moved, g.copied AS copied
ORDER BY g.at, g.id
"""
