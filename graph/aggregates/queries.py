"""Cypher for a user's aggregates (``rules.py``): the incremental updates a batch of events
makes (parts of the event writer's ``WRITE_BATCH``, so they start with ``CYPHER replan=skip``;
see ``graph/ingest/queries.py``), and the rebuild from the user's interactions after identity
resolution moved some.

Times travel as epoch milliseconds and become DateTime values here (as in the event writer's
statements).
"""

from __future__ import annotations

# ---- a batch of events adds to the aggregates (graph/ingest/writer.py) ----

# An item's buyers (users who bought it) and units (bought in all) are counters on the item
# (`buyers`, `units`; none before its first purchase), so that best-sellers and an item's buyers
# are read from an index (migrations/0015), not summed over every purchase; likewise its users
# (`users`: users with an INTERACTED to it; none before the first), so that a category's most
# interacted-with items are an ordered seek (migrations/0020). A batch adds to them here, once
# per item (its rows summed: a user new to buying the item is a buyer more, an aggregate this
# statement's MERGE created a user more), the items in id order; each SET reads its counter in
# its own expression (a direct dependency), for which Neo4j takes the item's write lock before
# reading, so two writers never lose an
# update (a read in a WITH before the SET would: tests/integration/test_counters_and_owners.py);
# what moves or removes purchases otherwise (merges, unmerges, erasure) recounts the items
# concerned (REFRESH_ITEM_COUNTERS). The aggregate's own counters are written first, in SETs
# that read them directly (so `r` is locked before they are read); whether the user had bought
# the item before (`before`) and which rating is newer are read after that, never before: two
# batches of one user and item, the second waiting on the first's lock, would otherwise both
# count the user as a new buyer, or let an older rating replace a newer one. Each aggregate
# carries its user's id (`user_id`) and `bought_or_liked` (bought, or rated 4-5, and not rated
# 2 or lower: a similar user's evidence in graph/recommend/queries.py), kept here and by
# RECOMPUTE_INTERACTED, indexed with the user's id (migrations/0016): a user's marked items are
# read without touching the others. Every committed aggregate has its `bought_or_liked` (set
# below whatever the row; RECOMPUTE_INTERACTED, the bulk import and migration 0016 too), so an
# aggregate without it just after the MERGE is one the MERGE created (`created`): a new user of
# the item, counted without marking the aggregate and unmarking it (a MERGE that waited on
# another writer's creation of the same aggregate finds it committed, with its mark).
UPDATE_INTERACTED = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.first_at}) AS first_at,
     datetime({epochMillis: row.last_at}) AS last_at
MATCH (u:User {id: row.user_id}), (it:Item {id: row.item_id})
MERGE (u)-[r:INTERACTED]->(it)
ON CREATE SET r.user_id = row.user_id, r.views = 0, r.carts = 0, r.purchases = 0,
              r.spend = 0.0, r.first_at = first_at, r.last_at = last_at
WITH row, it, r, first_at, last_at, r.bought_or_liked IS NULL AS created
SET r.views = r.views + row.views,
    r.carts = r.carts + row.carts,
    r.purchases = r.purchases + row.purchases,
    r.spend = r.spend + row.spend,
    r.first_at = CASE WHEN first_at < r.first_at THEN first_at ELSE r.first_at END,
    r.last_at = CASE WHEN last_at > r.last_at THEN last_at ELSE r.last_at END
WITH row, it, r, r.purchases - row.purchases AS before, created,
     CASE WHEN row.rated_at IS NOT NULL THEN datetime({epochMillis: row.rated_at}) END
       AS rated_at
WITH row, it, r, before, created, rated_at,
     rated_at IS NOT NULL AND (r.rated_at IS NULL OR rated_at >= r.rated_at) AS rates
FOREACH (_ IN CASE WHEN rates THEN [1] ELSE [] END |
  SET r.rating = row.rating, r.rated_at = rated_at)
SET r.bought_or_liked = (r.purchases > 0 OR coalesce(r.rating, 0) >= 4)
                        AND coalesce(r.rating, 3) > 2
WITH it, sum(CASE WHEN row.purchases > 0 AND NOT coalesce(before, 0) > 0 THEN 1 ELSE 0 END)
       AS buyers, sum(row.purchases) AS units, sum(CASE WHEN created THEN 1 ELSE 0 END) AS users
WHERE units > 0 OR users > 0
WITH it, buyers, units, users ORDER BY it.id
SET it.users = CASE WHEN users > 0 THEN coalesce(it.users, 0) + users ELSE it.users END,
    it.buyers = CASE WHEN units > 0 THEN coalesce(it.buyers, 0) + buyers ELSE it.buyers END,
    it.units = CASE WHEN units > 0 THEN coalesce(it.units, 0) + units ELSE it.units END
"""

# Inferred interest decays exponentially ($decay_per_ms: rules.DECAY_PER_MS): a score is
# held as of its `updated_at`; a newer batch decays it to the batch's time before adding, an
# older (late) one adds its own score decayed to `updated_at`. Rows come pre-decayed to row.at.
# `updated_at` is read only inside the SETs (a direct dependency: Neo4j locks `p` first), never
# in a WITH before them: a batch waiting on another's lock would decay by a stale interval and
# move `updated_at` back (tests/integration/test_counters_and_owners.py).
UPDATE_INFERRED_PREFERENCES = """
CYPHER replan=skip
UNWIND $rows AS row
WITH row, datetime({epochMillis: row.at}) AS at
MATCH (u:User {id: row.user_id}), (c:Category {name: row.category})
MERGE (u)-[p:PREFERS {source: 'inferred'}]->(c)
ON CREATE SET p.score = 0.0, p.updated_at = at
SET p.score = CASE WHEN at >= p.updated_at
                   THEN p.score * exp(-$decay_per_ms * (at.epochMillis - p.updated_at.epochMillis))
                        + row.score
                   ELSE p.score + row.score
                        * exp($decay_per_ms * (at.epochMillis - p.updated_at.epochMillis))
                   END,
    p.updated_at = CASE WHEN at > p.updated_at THEN at ELSE p.updated_at END
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

# A user's retained baseline: what pruned interactions contributed, one
# `(:User)-[:RETAINED]->(:Retained)` per origin. The origin is the merges the pruned
# interactions' `PERFORMED` had come through (`merges`, graph/identity), copied onto `RETAINED`:
# a merge moves `RETAINED` like `PERFORMED` and an unmerge moves it back, so pruned history
# returns to the user it came from. `Retained` holds the counters, `events`, `spend` and
# `first_seen`/`last_seen`; `(:Retained)-[:RETAINED_ITEM]->(:Item)` what `INTERACTED` holds;
# `(:Retained)-[:RETAINED_INTEREST {score, updated_at}]->(:Category)` the inferred interest, as
# of `updated_at`. `$eids` are the element ids of the interactions being pruned, in the
# transaction that deletes them.

# The baseline each (user, origin) of the batch folds into, as of one: the lowest element id.
_BASELINE = """
CALL (u, origin) {
  MATCH (u)-[k:RETAINED]->(r:Retained)
  WHERE coalesce(k.merges, []) = origin
  RETURN r ORDER BY elementId(r) LIMIT 1
}
"""

ENSURE_RETAINED = """
UNWIND $eids AS eid
MATCH (u:User)-[p:PERFORMED]->(i:Interaction)
WHERE elementId(i) = eid
WITH DISTINCT u, coalesce(p.merges, []) AS origin
WHERE NOT EXISTS {
  MATCH (u)-[k:RETAINED]->(:Retained) WHERE coalesce(k.merges, []) = origin
}
CREATE (u)-[k:RETAINED]->(r:Retained)
SET r = $zero, k.merges = CASE WHEN size(origin) > 0 THEN origin END
"""

FOLD_USER_COUNTERS = """
UNWIND $eids AS eid
MATCH (u:User)-[p:PERFORMED]->(i:Interaction)
WHERE elementId(i) = eid
WITH u, coalesce(p.merges, []) AS origin, count(i) AS events, min(i.at) AS first_seen,
     max(i.at) AS last_seen,
     sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
     collect(i.type) AS types
""" + _BASELINE + """
SET r.events = r.events + events, r.spend = r.spend + spend,
    r.first_seen = CASE WHEN r.first_seen IS NULL OR first_seen < r.first_seen
                        THEN first_seen ELSE r.first_seen END,
    r.last_seen = CASE WHEN r.last_seen IS NULL OR last_seen > r.last_seen
                       THEN last_seen ELSE r.last_seen END
WITH r, types
UNWIND keys($counters) AS type
SET r[$counters[type]] = r[$counters[type]] + size([t IN types WHERE t = type])
"""

FOLD_INTERACTED = """
UNWIND $eids AS eid
MATCH (u:User)-[p:PERFORMED]->(i:Interaction)
WHERE elementId(i) = eid AND i.item_id IS NOT NULL
WITH u, coalesce(p.merges, []) AS origin, i.item_id AS item_id,
     sum(CASE WHEN i.type = $view THEN 1 ELSE 0 END) AS views,
     sum(CASE WHEN i.type = $cart THEN 1 ELSE 0 END) AS carts,
     sum(CASE WHEN i.type = $purchase THEN coalesce(i.quantity, 1) ELSE 0 END) AS purchases,
     sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
     min(i.at) AS first_at, max(i.at) AS last_at,
     collect(CASE WHEN i.type = $feedback AND i.rating IS NOT NULL
                  THEN {rating: i.rating, at: i.at} END) AS ratings
""" + _BASELINE + """
MATCH (it:Item {id: item_id})
MERGE (r)-[x:RETAINED_ITEM]->(it)
ON CREATE SET x.views = 0, x.carts = 0, x.purchases = 0, x.spend = 0.0, x.first_at = first_at,
              x.last_at = last_at
SET x.views = x.views + views, x.carts = x.carts + carts,
    x.purchases = x.purchases + purchases, x.spend = x.spend + spend,
    x.first_at = CASE WHEN first_at < x.first_at THEN first_at ELSE x.first_at END,
    x.last_at = CASE WHEN last_at > x.last_at THEN last_at ELSE x.last_at END
WITH x, reduce(latest = null, f IN ratings |
               CASE WHEN latest IS NULL OR f.at >= latest.at THEN f ELSE latest END) AS rated
WHERE rated IS NOT NULL AND (x.rated_at IS NULL OR rated.at >= x.rated_at)
SET x.rating = rated.rating, x.rated_at = rated.at
"""

FOLD_INFERRED_INTEREST = """
UNWIND $eids AS eid
MATCH (u:User)-[p:PERFORMED]->(i:Interaction)
WHERE elementId(i) = eid AND i.category IS NOT NULL
WITH u, coalesce(p.merges, []) AS origin, i.category AS category, collect(i) AS its,
     max(i.at) AS at
WITH u, origin, category, at,
     reduce(s = 0.0, i IN its | s + $interest[i.type] *
            exp(-$decay_per_ms * (at.epochMillis - i.at.epochMillis))) AS score
""" + _BASELINE + """
MATCH (c:Category {name: category})
MERGE (r)-[x:RETAINED_INTEREST]->(c)
ON CREATE SET x.score = 0.0, x.updated_at = at
WITH x, score, at, at.epochMillis - x.updated_at.epochMillis AS delta
SET x.score = CASE WHEN delta >= 0
                   THEN x.score * exp(-$decay_per_ms * delta) + score
                   ELSE x.score + score * exp($decay_per_ms * delta) END,
    x.updated_at = CASE WHEN delta > 0 THEN at ELSE x.updated_at END
"""

# ---- rebuilding a user's aggregates (``rules.recompute_aggregates``) ----
# Used after identity resolution moved interactions between users: the user's retained
# baselines plus their interactions. `$counters` maps an event type to the user counter it
# increments, `$interest` an event type to its interest score (``rules.COUNTER`` and
# ``rules.INTEREST_SCORE``).

RECOMPUTE_USER_COUNTERS = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})
CALL (u) {
  OPTIONAL MATCH (u)-[:PERFORMED]->(i:Interaction)
  RETURN count(i) AS events, min(i.at) AS first_seen, max(i.at) AS last_seen,
         sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
         collect(i.type) AS types
}
CALL (u) {
  OPTIONAL MATCH (u)-[:RETAINED]->(r:Retained)
  RETURN collect(r) AS kept
}
WITH u, types, kept,
     reduce(n = events, r IN kept | n + r.events) AS events,
     reduce(s = spend, r IN kept | s + r.spend) AS spend,
     reduce(m = first_seen, r IN kept |
            CASE WHEN m IS NULL OR r.first_seen < m THEN r.first_seen ELSE m END) AS first_seen,
     reduce(m = last_seen, r IN kept |
            CASE WHEN m IS NULL OR r.last_seen > m THEN r.last_seen ELSE m END) AS last_seen
SET u.events = events, u.spend = spend,
    u.first_seen = coalesce(first_seen, u.first_seen),
    u.last_seen = coalesce(last_seen, u.last_seen)
WITH u, types, kept
UNWIND keys($counters) AS type
SET u[$counters[type]] = size([t IN types WHERE t = type]) +
                         reduce(n = 0, r IN kept | n + r[$counters[type]])
"""

DELETE_STALE_INTERACTED = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[r:INTERACTED]->(it:Item)
WHERE NOT EXISTS { (u)-[:PERFORMED]->(:Interaction {item_id: it.id}) }
  AND NOT EXISTS { (u)-[:RETAINED]->(:Retained)-[:RETAINED_ITEM]->(it) }
DELETE r
"""

RECOMPUTE_INTERACTED = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})
CALL (u) {
  MATCH (u)-[:PERFORMED]->(i:Interaction)
  WHERE i.item_id IS NOT NULL
  WITH i.item_id AS item_id,
       sum(CASE WHEN i.type = $view THEN 1 ELSE 0 END) AS views,
       sum(CASE WHEN i.type = $cart THEN 1 ELSE 0 END) AS carts,
       sum(CASE WHEN i.type = $purchase THEN coalesce(i.quantity, 1) ELSE 0 END) AS purchases,
       sum(CASE WHEN i.type = $purchase THEN coalesce(i.amount, 0.0) ELSE 0.0 END) AS spend,
       min(i.at) AS first_at, max(i.at) AS last_at,
       collect(CASE WHEN i.type = $feedback AND i.rating IS NOT NULL
                    THEN {rating: i.rating, at: i.at} END) AS ratings
  RETURN item_id, views, carts, purchases, spend, first_at, last_at, ratings
  UNION ALL
  MATCH (u)-[:RETAINED]->(:Retained)-[x:RETAINED_ITEM]->(it:Item)
  RETURN it.id AS item_id, x.views AS views, x.carts AS carts, x.purchases AS purchases,
         x.spend AS spend, x.first_at AS first_at, x.last_at AS last_at,
         CASE WHEN x.rated_at IS NULL THEN [] ELSE [{rating: x.rating, at: x.rated_at}] END
           AS ratings
}
WITH u, item_id, sum(views) AS views, sum(carts) AS carts, sum(purchases) AS purchases,
     sum(spend) AS spend, min(first_at) AS first_at, max(last_at) AS last_at,
     reduce(acc = [], rs IN collect(ratings) | acc + rs) AS ratings
MATCH (it:Item {id: item_id})
MERGE (u)-[r:INTERACTED]->(it)
WITH u, r, views, carts, purchases, spend, first_at, last_at,
     reduce(latest = null, f IN ratings |
            CASE WHEN latest IS NULL OR f.at >= latest.at THEN f ELSE latest END) AS rated
SET r.user_id = u.id, r.views = views, r.carts = carts, r.purchases = purchases,
    r.spend = spend, r.first_at = first_at, r.last_at = last_at, r.rating = rated.rating,
    r.rated_at = rated.at,
    r.bought_or_liked = (purchases > 0 OR coalesce(rated.rating, 0) >= 4)
                        AND coalesce(rated.rating, 3) > 2
"""

DELETE_STALE_INFERRED_PREFERENCES = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})-[p:PREFERS {source: 'inferred'}]->(c:Category)
WHERE NOT EXISTS { (u)-[:PERFORMED]->(:Interaction {category: c.name}) }
  AND NOT EXISTS { (u)-[:RETAINED]->(:Retained)-[:RETAINED_INTEREST]->(c) }
DELETE p
"""

RECOMPUTE_INFERRED_PREFERENCES = """
UNWIND $user_ids AS uid
MATCH (u:User {id: uid})
CALL (u) {
  MATCH (u)-[:PERFORMED]->(i:Interaction)
  WHERE i.category IS NOT NULL
  WITH i.category AS category, collect(i) AS its, max(i.at) AS at
  RETURN category, at,
         reduce(s = 0.0, i IN its | s + $interest[i.type] *
                exp(-$decay_per_ms * (at.epochMillis - i.at.epochMillis))) AS score
  UNION ALL
  MATCH (u)-[:RETAINED]->(:Retained)-[x:RETAINED_INTEREST]->(c:Category)
  RETURN c.name AS category, x.updated_at AS at, x.score AS score
}
WITH u, category, collect({score: score, at: at}) AS parts, max(at) AS at
WITH u, category, at,
     reduce(s = 0.0, p IN parts | s + p.score *
            exp(-$decay_per_ms * (at.epochMillis - p.at.epochMillis))) AS score
MATCH (c:Category {name: category})
MERGE (u)-[p:PREFERS {source: 'inferred'}]->(c)
SET p.score = score, p.updated_at = at
"""

# An item's counters recounted from its users' aggregates (see UPDATE_INTERACTED): for the
# items whose aggregates a merge, an unmerge or an erasure moved or removed.
REFRESH_ITEM_COUNTERS = """
UNWIND $item_ids AS id
MATCH (it:Item {id: id})
CALL (it) {
  OPTIONAL MATCH (:User)-[r:INTERACTED]->(it)
  RETURN count(r) AS users, count(CASE WHEN r.purchases > 0 THEN r END) AS buyers,
         sum(CASE WHEN r.purchases > 0 THEN r.purchases ELSE 0 END) AS units
}
SET it.users = CASE WHEN users > 0 THEN users END,
    it.buyers = CASE WHEN buyers > 0 THEN buyers END,
    it.units = CASE WHEN buyers > 0 THEN units END
"""

# The items the users have interacted with (whose counters their changes may move).
ITEMS_OF_USERS = """
UNWIND $user_ids AS uid
MATCH (:User {id: uid})-[:INTERACTED]->(it:Item)
RETURN collect(DISTINCT it.id) AS item_ids
"""
