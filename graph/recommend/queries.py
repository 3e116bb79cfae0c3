"""Cypher for recommendations. Values travel as parameters; see ``engine.recommend_params``.

``RECOMMEND`` takes ``$user_id``, ``$recommendations_first`` (1..100), ``$now`` (a UTC
datetime), ``$weights`` (``engine.WEIGHTS``) and ``$context`` (``engine.CONTEXT_BOOSTS``).
``RECOMMEND_FOR_USER`` is its body, for a user ``u`` already matched: the API runs it inside the
one query that fetches a user with everything a chatbot asks of them.
"""

from __future__ import annotations

USER_EXISTS = "MATCH (u:User {id: $user_id}) RETURN u.id AS id"

# Candidates come from
#   (a) the favourites of the user's leaf segment in the latest run: `FAVOURITE`, written with the
#       run (``WRITE_SEGMENT_FAVOURITES``): the 50 items most bought by the segment's 100 most
#       typical members (by distance from the segment centre);
#   (b) what similar users bought: users who bought any of the user's 10 most recently carted or
#       bought items, the 50 with the most such items in common (their overlap). The latest
#       segmentation run wrote them (`SIMILAR_TO {run_id}`, see ``neighbours``); a user without
#       them (new since the run, merged or unmerged since) gets them found here, by the same rule;
#   (c) the items of the user's 3 strongest categories (weight >= $weights.preference_min).
# Every candidate is scored
#     segment    * share of those segment members who bought it
#   + similar    * overlap-weighted share of the similar users who bought it
#   + preference * weight of its category: the inferred share, plus the explicit weight if > 0
#   + popularity * share of all users who interacted with it (orders (c) within a category)
#   + context    * number of context rules its category fits: the weather now (latest
#                  observation within $context.weather_valid_hours), local events coming up
#                  (within $context.event_horizon_days), at the user's location
# and carries a reason for each of (a), (b), (c) and each context rule that contributed. Items the
# user bought are left out, and so is every item of a category with an explicit negative weight.
#
# PROFILE on the demo graph (2,000 users, 240 items, 4 leaf segments; 200 users): see
# docs/performance.md. Reading what the run wrote, (a) touches 50 relationships instead of the
# purchases of 100 members, and (b) the purchases of 50 users instead of every interaction of
# 10 items (about 400 each). Weather and events are found through their time indexes (hence the
# hints), so a long history of either costs nothing.
RECOMMEND_FOR_USER = """
OPTIONAL MATCH (latest:SegmentationRun)
WITH u, latest ORDER BY latest.created_at DESC LIMIT 1
WITH u, latest.id AS run_id, $now AS now
CALL (u) {
  OPTIONAL MATCH (u)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0
  RETURN collect(it) AS bought
}
CALL (u, run_id) {
  MATCH (u)-[:IN_SEGMENT {run_id: run_id}]->(s:Segment {level: 0})
  OPTIONAL MATCH (s)-[f:FAVOURITE]->(it:Item)
  RETURN head(collect(s.label)) AS segment,
         collect(CASE WHEN it IS NOT NULL THEN {item: it, seg: f.share} END) AS seg_items
}
CALL (u, run_id) {
  WITH u, [(u)-[s:SIMILAR_TO {run_id: run_id}]->(known:User)
           | {peer: known, overlap: s.overlap}] AS stored
  CALL (u, stored) {
    UNWIND stored AS p
    RETURN p.peer AS peer, p.overlap AS overlap
    UNION ALL
    WITH u WHERE size(stored) = 0
    MATCH (u)-[mine:INTERACTED]->(shared)
    WHERE mine.carts + mine.purchases > 0
    WITH u, shared ORDER BY mine.last_at DESC, shared.id LIMIT 10
    MATCH (shared)<-[theirs:INTERACTED]-(peer)
    WHERE theirs.purchases > 0 AND peer <> u
    WITH peer, count(*) AS overlap
    ORDER BY overlap DESC, peer.id LIMIT 50
    RETURN peer, overlap
  }
  WITH collect({peer: peer, overlap: overlap}) AS peers, toFloat(sum(overlap)) AS total
  UNWIND peers AS p
  WITH p.peer AS peer, p.overlap AS overlap, total
  MATCH (peer)-[r:INTERACTED]->(it) WHERE r.purchases > 0
  WITH it, total, count(*) AS n, sum(overlap) AS weight
  RETURN collect({item: it, sim: weight / total, n: n}) AS sim_items
}
CALL (u) {
  MATCH (u)-[p:PREFERS]->(c:Category)
  WITH c, max(CASE p.source WHEN 'explicit' THEN p.weight END) AS explicit,
       max(CASE p.source WHEN 'inferred' THEN p.weight END) AS inferred
  RETURN collect({category: c.name, explicit: explicit,
                  weight: coalesce(inferred, 0.0)
                          + CASE WHEN explicit > 0 THEN explicit ELSE 0.0 END}) AS prefs
}
CALL (prefs) {
  UNWIND prefs AS p
  WITH p WHERE coalesce(p.explicit, 0.0) >= 0 AND p.weight >= $weights.preference_min
  ORDER BY p.weight DESC, p.category LIMIT 3
  MATCH (:Category {name: p.category})<-[:IN_CATEGORY]-(it:Item)
  RETURN collect({item: it}) AS pref_items
}
CALL (u, now) {
  OPTIONAL MATCH (u)-[:LOCATED_IN]->(l:Location)
  OPTIONAL MATCH (w:WeatherObservation)-[:OBSERVED_AT]->(l)
    USING INDEX w:WeatherObservation(at)
    WHERE now - duration({hours: $context.weather_valid_hours}) <= w.at <= now
  WITH l, w ORDER BY w.at DESC LIMIT 1
  WITH l, coalesce(l.city, l.id) AS place, w
  CALL (l, now) {
    MATCH (e:LocalEvent)-[:HELD_IN]->(l)
    USING INDEX e:LocalEvent(starts_at)
    WHERE now <= e.starts_at < now + duration({days: $context.event_horizon_days})
    UNWIND keys($context.event_kinds) AS kind
    WITH e, kind WHERE toLower(e.name) CONTAINS kind
    UNWIND $context.event_kinds[kind] AS category
    RETURN collect({category: category,
                    reason: e.name + ' on ' + toString(date(e.starts_at))}) AS event_boosts
  }
  RETURN
    [category IN coalesce($context.weather[w.condition], []) |
       {category: category, reason: w.condition + ' in ' + place + ' today'}]
    + [category IN CASE WHEN w.temp_c <= $context.cold_below_c THEN $context.cold ELSE [] END |
       {category: category, reason: 'cold in ' + place + ' today'}]
    + [category IN CASE WHEN w.temp_c >= $context.warm_from_c THEN $context.warm ELSE [] END |
       {category: category, reason: 'warm in ' + place + ' today'}]
    + event_boosts AS boosts
}
WITH bought, segment, prefs, boosts, seg_items + sim_items + pref_items AS candidates,
     COUNT { (:User) } AS users
UNWIND candidates AS cand
WITH bought, segment, prefs, boosts, users, cand.item AS it,
     sum(coalesce(cand.seg, 0.0)) AS seg, sum(coalesce(cand.sim, 0.0)) AS sim,
     sum(coalesce(cand.n, 0)) AS similar_buyers
WHERE NOT it IN bought
WITH segment, boosts, users, it, seg, sim, similar_buyers,
     head([(it)-[:IN_CATEGORY]->(c:Category) | c.name]) AS category, prefs
WITH segment, boosts, users, it, seg, sim, similar_buyers, category,
     head([p IN prefs WHERE p.category = category]) AS pref
WHERE coalesce(pref.explicit, 0.0) >= 0
WITH it, category, seg, sim, similar_buyers, pref,
     [b IN boosts WHERE b.category = category | b.reason] AS context_reasons,
     toFloat(COUNT { (it)<-[:INTERACTED]-() }) / users AS popularity,
     CASE WHEN seg > 0 THEN ['popular with your segment ' + segment] ELSE [] END
     + CASE WHEN similar_buyers = 1 THEN ['bought by a similar user']
            WHEN similar_buyers > 1 THEN ['bought by ' + similar_buyers + ' similar users']
            ELSE [] END
     + CASE WHEN pref.explicit > 0 THEN ['you said you like ' + category]
            WHEN pref.weight >= $weights.preference_min
              THEN ['matches your preference for ' + category]
            ELSE [] END AS graph_reasons
RETURN it.id AS item_id, coalesce(it.name, it.id) AS name, category,
       $weights.segment * seg + $weights.similar * sim
       + $weights.preference * coalesce(pref.weight, 0.0)
       + $weights.popularity * popularity
       + $weights.context * size(context_reasons) AS score,
       graph_reasons + context_reasons AS reasons
ORDER BY score DESC, item_id
LIMIT $recommendations_first
"""

RECOMMEND = "MATCH (u:User {id: $user_id})\n" + RECOMMEND_FOR_USER

# The global-popularity baseline: the items bought by the most users, minus the user's own.
# With $personal false the list is the same for everyone (nothing of the user is read): what a
# user without personalization consent is offered.
POPULAR = """
MATCH (u:User {id: $user_id})
CALL (u) {
  OPTIONAL MATCH (u)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0 AND $personal
  RETURN collect(it) AS bought
}
MATCH (it:Item)<-[r:INTERACTED]-(:User)
WHERE r.purchases > 0 AND NOT it IN bought
WITH it, count(*) AS buyers, sum(r.purchases) AS units
ORDER BY buyers DESC, units DESC, it.id
LIMIT $first
RETURN it.id AS item_id, coalesce(it.name, it.id) AS name,
       head([(it)-[:IN_CATEGORY]->(c:Category) | c.name]) AS category,
       toFloat(buyers) AS score, ['bought by ' + buyers + ' shoppers'] AS reasons
"""

# -- Similar users, written with each segmentation run (see ``neighbours``) -------------------

CARTED_OR_BOUGHT = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
WHERE r.carts + r.purchases > 0
RETURN u.id AS user_id, it.id AS item_id, r.last_at AS last_at, r.purchases > 0 AS bought,
       coalesce(u.consent_personalization, true) AS personal
"""

# Every other run's, after a run is published: the recommender reads only the latest run's.
DROP_SIMILAR_USERS_EXCEPT = """
MATCH ()-[s:SIMILAR_TO]->() WHERE s.run_id <> $run_id
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS
"""

WRITE_SIMILAR_USERS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
UNWIND row.peers AS p
MATCH (peer:User {id: p.user_id})
CREATE (u)-[:SIMILAR_TO {overlap: p.overlap, run_id: $run_id}]->(peer)
"""

# A user's stored similar users, when they no longer hold: the user's aggregates were rebuilt
# (graph/ingest/aggregates.py, after a merge or an unmerge; until the next run they are found
# per request), or the user
# withdrew personalization consent (none are kept).
DROP_SIMILAR_USERS = """
UNWIND $user_ids AS id
MATCH (:User {id: id})-[s:SIMILAR_TO]->()
DELETE s
"""
