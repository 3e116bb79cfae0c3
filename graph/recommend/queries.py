"""Cypher for recommendations. Values travel as parameters; see ``engine.recommend_params``.

``RECOMMEND`` takes ``$user_id``, ``$recommendations_first`` (1..100), ``$now`` (ISO 8601
text of a UTC instant, ``engine.now_param``), ``$weights`` (``engine.WEIGHTS``), ``$context``
(``engine.CONTEXT_BOOSTS``) and ``$what_if`` (``engine.WhatIf.param``, or null for the real
situation).
``RECOMMEND_FOR_USER`` is its body, for a user ``u`` already matched: the API runs it inside the
one query that fetches a user with everything a chatbot asks of them.
"""

from __future__ import annotations

USER_EXISTS = "MATCH (u:User {id: $user_id}) RETURN u.id AS id"

# Candidates come from
#   (a) the favourites of the user's leaf segment in the latest run: `FAVOURITE`, written with the
#       run (``WRITE_SEGMENT_FAVOURITES``): the ``limits.FAVOURITES`` (50) items most bought by the
#       segment's ``limits.TYPICAL_MEMBERS`` (100) most typical members (by distance from the
#       segment centre);
#   (b) what similar users bought or liked: users who bought or liked any of the user's
#       $limits.recent_items most recently carted, bought or liked items, the $limits.peers with
#       the most such items in common (their overlap). The latest segmentation run wrote them
#       (`SIMILAR_TO {run_id}`, see ``neighbours``); a user without them (new since the run,
#       merged or unmerged since) gets them found here, by the same rule: an item rated 2 or
#       lower is nobody's evidence, and an item more than $limits.max_item_users users
#       interacted with is no evidence (a degree read, so an item every user bought is never
#       expanded). Each similar user adds their
#       $limits.peer_items most recent purchases or liked items (sorted by recency only when
#       they have more than that: for the others the order would choose nothing, and reading
#       every interaction's times cost a fifth of the chatbot query's db hits). Bought or liked
#       is the aggregate's mark (`bought_or_liked`: bought, or rated 4-5, and not rated 2 or
#       lower; kept by every writer of INTERACTED, see graph/aggregates/queries.py), and a
#       similar user's marked aggregates are a seek of the index on their owner's id and the
#       mark (migrations/0016): their other interactions are not touched (filtering them by
#       their properties cost over half of the chatbot query's db hits);
#   (c) the items of the user's $limits.top_categories strongest categories (weight >=
#       $weights.preference_min), each category's $limits.category_items most interacted-with
#       items, most users first, then by id: an ordered seek of the index on the items'
#       category and users counter (`users`, kept by every writer of INTERACTED,
#       migrations/0020), one past the limit; when that one ties the last kept, the items with
#       that many users are read again in id order (the index's third property, at most
#       $limits.category_items of them); when the category has fewer interacted-with items
#       than the limit, its items without any follow by id: an ordered seek of the index on
#       the items' category and id (migrations/0022), stopped by the limit, which passes over
#       at most the category's fewer than $limits.category_items interacted-with items;
#   (d) the item neighbours (`SIMILAR_ITEM {score, run_id}` of the latest run: EASE weights,
#       see ``items``) of the user's $limits.seed_items most recently bought, carted or liked
#       (rated 4-5) items.
# Every candidate is scored
#     segment    * share of those segment members who bought it
#   + similar    * overlap-weighted share of the similar users who bought or liked it
#   + item       * summed item-to-item weight from the user's items it neighbours, over the
#                  largest such sum among the user's candidates (so in (0, 1] like the shares
#                  above, whatever the scale of the item model's weights)
#   + preference * weight of its category: the inferred share, plus the explicit weight if > 0
#   + popularity * share of all users who interacted with it (orders (c) within a category)
#   + context    * number of context rules its category fits: the weather now (latest
#                  observation within $context.weather_valid_hours), local events coming up
#                  (within $context.event_horizon_days), at the user's location
# where `similar` and `item` are the weights the latest run learned on a validation split of its
# data (``rec_similar_weight``, ``rec_item_weight``, see ``blend``; $weights' for a run without
# them), the others $weights'. A candidate carries a reason for each of (a) to (d) that
# weighs (none for similar users the run weighs 0) and each context rule that contributed
# ((d) names the user's item it is most similar to: "because you bought X"). Items the user
# bought or rated are left out (rated 2 or lower: never offered; rated higher: already known,
# as bought), and so is every item of a category with an explicit negative weight. An item
# rating never hides its category: only a category preference does.
# A long history of the user's own is never read whole, whatever plan the statistics of the
# moment give (tests/integration/test_read_bounds.py plans it on an empty graph and on a full
# one). The items left out: a user with at most $limits.own_items aggregates has them read
# once (a degree read decides); past that, each candidate is tested for the user's edge (an
# expand-into, from whichever of user and item has fewer INTERACTED), in rank order until
# $recommendations_first have passed: the ranked candidates are collected first, so no plan
# can test them before ranking them. The newest items of (b) and (d): an ordered seek of the
# index on the owner's id and last_at (migrations/0016; every writer sets both), hinted, one
# past the limit; when that one ties the last kept on last_at, the items from that time on are
# read again (in a subquery of their own, so only then) and the ties broken by item id, as a
# sort of all of them would. The seek's filter has no OR: the planner may answer `A OR B` on
# a hinted seek as two seeks and a union, which loses the index's order, and then sorts every
# aggregate of the user (planned on an empty graph's statistics: 27,787 db hits for 3,000
# aggregates, docs/performance.md); a CASE is one predicate. The seek of a category's items
# without users is given a null category (which finds nothing) unless the category has few
# interacted-with items: as a `WHERE size(top) < …` before it, the planner moved that test
# after the seek, which then read every item of every preferred category.
#
# Every expansion is bounded whatever the graph's shape (see ``limits``): (a) FAVOURITES,
# (b) $limits.peers stored peers x $limits.peer_items or, found here, $limits.recent_items
# items x $limits.max_item_users buyers, (c) $limits.top_categories x 2 x ($limits.category_items
# + 1) index entries, or x 2 x $limits.category_items for a category with fewer
# interacted-with items than that, (d) $limits.seed_items x ITEM_NEIGHBOURS;
# popularity is a degree read per candidate. PROFILE on the demo graph: see docs/performance.md.
# A user's or item's run edges are all its edges, filtered by run_id afterwards (at most a few
# runs' worth): with the run_id in the pattern the planner may seek the run_id index instead
# (migration 0012, meant for dropping a whole run) and filter every edge of the run by endpoint,
# O(edges of the run) per user; tests/integration/test_recommend.py checks the plans.
# Weather and events are found through their time indexes (hence the hints), so a long history
# of either costs nothing.
# Every property read is a db hit, and one an edge lacks (most interactions have no rating)
# walks its whole property chain, so each is read once where it belongs: a similar user's
# id once per similar user; an interaction's mark rather than its purchases and rating; a
# seed's id, name and how once per seed, before its
# neighbours are unwound; a run edge's score or overlap only when its run_id is the run's
# (tested in a CASE, which the planner cannot turn into a seek of the run index). Labels that
# the writers guarantee are not checked again per row (SIMILAR_TO joins users, SIMILAR_ITEM
# items, FAVOURITE a segment to items, IN_CATEGORY an item to a category). A candidate's
# category is the item's `category` property, which every writer keeps beside its IN_CATEGORY
# edge (migrations/0019): a property read, not an expansion of the item, a dense node. The
# item's name is read after the LIMIT.
# The newest-items seeks' filter on the user's aggregate `mine` (carted, bought or rated 4-5,
# and not rated 2 or lower), spliced into both seeks of (b) and (d) and their tie re-reads: one
# predicate, a CASE rather than an OR (see above).
_MINE_SEEDS = """\
  AND CASE WHEN mine.rating >= 4 THEN true
           ELSE coalesce(mine.carts, 0) + coalesce(mine.purchases, 0) > 0 END
  AND coalesce(mine.rating, 3) > 2"""

RECOMMEND_FOR_USER = """
OPTIONAL MATCH (latest:SegmentationRun)
WITH u, latest ORDER BY latest.created_at DESC LIMIT 1
WITH u, latest.id AS run_id, datetime($now) AS now,
     {item: coalesce(latest.rec_item_weight, $weights.item),
      similar: coalesce(latest.rec_similar_weight, $weights.similar)} AS blend,
     COUNT { (u)-[:INTERACTED]->() } <= $limits.own_items AS few
CALL (u, few) {
  WITH u WHERE few
  MATCH (u)-[r:INTERACTED]->(it)
  WHERE r.purchases > 0 OR r.rating IS NOT NULL
  RETURN collect(it) AS owned
}
CALL (u, run_id) {
  MATCH (u)-[:IN_SEGMENT {run_id: run_id}]->(s:Segment {level: 0})
  WITH s, s.label AS label
  OPTIONAL MATCH (s)-[f:FAVOURITE]->(it)
  RETURN head(collect(label)) AS segment,
         collect(CASE WHEN it IS NOT NULL THEN {item: it, seg: f.share} END) AS seg_items
}
CALL (u, run_id) {
  WITH u, [p IN [(u)-[s:SIMILAR_TO]->(known)
                  | CASE WHEN s.run_id = run_id THEN {peer: known, overlap: s.overlap} END]
           WHERE p IS NOT NULL] AS stored
  CALL (u, stored) {
    UNWIND stored AS p
    RETURN p.peer AS peer, p.overlap AS overlap
    UNION ALL
    WITH u WHERE size(stored) = 0
    CALL (u) {
      MATCH ()-[mine:INTERACTED]->(shared)
      USING INDEX SEEK mine:INTERACTED(user_id, last_at)
      WHERE mine.user_id = u.id AND mine.last_at IS NOT NULL
""" + _MINE_SEEDS + """
        AND COUNT { (shared)<-[:INTERACTED]-() } <= $limits.max_item_users
      WITH shared, mine ORDER BY mine.user_id DESC, mine.last_at DESC
      LIMIT $limits.recent_items + 1
      RETURN collect({item: shared, at: mine.last_at}) AS newest
    }
    CALL (u, newest) {
      WITH newest WHERE size(newest) <= $limits.recent_items OR newest[-1].at < newest[-2].at
      UNWIND newest[..$limits.recent_items] AS n
      RETURN n.item AS shared, n.at AS at
      UNION ALL
      WITH u, newest
      WHERE size(newest) > $limits.recent_items AND newest[-1].at = newest[-2].at
      CALL (u, newest) {
        MATCH ()-[mine:INTERACTED]->(shared)
        USING INDEX SEEK mine:INTERACTED(user_id, last_at)
        WHERE mine.user_id = u.id AND mine.last_at >= newest[-2].at
""" + _MINE_SEEDS + """
          AND COUNT { (shared)<-[:INTERACTED]-() } <= $limits.max_item_users
        RETURN shared, mine.last_at AS at
      }
      RETURN shared, at
    }
    WITH u, shared ORDER BY at DESC, shared.id LIMIT $limits.recent_items
    MATCH (shared)<-[theirs:INTERACTED]-(peer)
    WHERE theirs.bought_or_liked AND peer <> u
    WITH peer, count(*) AS overlap
    ORDER BY overlap DESC, peer.id LIMIT $limits.peers
    RETURN peer, overlap
  }
  WITH collect({peer: peer, overlap: overlap}) AS peers, toFloat(sum(overlap)) AS total
  UNWIND peers AS p
  WITH p.peer AS peer, p.overlap AS overlap, total
  CALL (peer) {
    MATCH ()-[r:INTERACTED]->(it)
    USING INDEX SEEK r:INTERACTED(user_id, bought_or_liked)
    WHERE r.user_id = peer.id AND r.bought_or_liked = true
    RETURN collect({r: r, it: it}) AS marked
  }
  CALL (marked) {
    UNWIND marked AS m
    WITH m WHERE size(marked) <= $limits.peer_items
    RETURN m.it AS it
    UNION ALL
    WITH marked WHERE size(marked) > $limits.peer_items
    UNWIND marked AS m
    WITH m.it AS it, m.r AS r
    ORDER BY coalesce(r.last_at, r.rated_at) DESC, it.id LIMIT $limits.peer_items
    RETURN it
  }
  WITH it, total, count(*) AS n, sum(overlap) AS weight
  RETURN collect({item: it, sim: weight / total, n: n}) AS sim_items
}
CALL (u, run_id) {
  CALL (u) {
    MATCH ()-[mine:INTERACTED]->(seed)
    USING INDEX SEEK mine:INTERACTED(user_id, last_at)
    WHERE mine.user_id = u.id AND mine.last_at IS NOT NULL
""" + _MINE_SEEDS + """
    WITH seed, mine ORDER BY mine.user_id DESC, mine.last_at DESC
    LIMIT $limits.seed_items + 1
    RETURN collect({seed: seed, mine: mine, at: mine.last_at}) AS newest
  }
  CALL (u, newest) {
    WITH newest WHERE size(newest) <= $limits.seed_items OR newest[-1].at < newest[-2].at
    UNWIND newest[..$limits.seed_items] AS n
    RETURN n.seed AS seed, n.mine AS mine, n.at AS at
    UNION ALL
    WITH u, newest
    WHERE size(newest) > $limits.seed_items AND newest[-1].at = newest[-2].at
    CALL (u, newest) {
      MATCH ()-[mine:INTERACTED]->(seed)
      USING INDEX SEEK mine:INTERACTED(user_id, last_at)
      WHERE mine.user_id = u.id AND mine.last_at >= newest[-2].at
""" + _MINE_SEEDS + """
      RETURN seed, mine, mine.last_at AS at
    }
    RETURN seed, mine, at
  }
  WITH seed, mine ORDER BY at DESC, seed.id LIMIT $limits.seed_items
  WITH seed, seed.id AS seed_id, coalesce(seed.name, seed.id) AS seed_name,
       CASE WHEN mine.rating >= 4 THEN 'liked' WHEN mine.purchases > 0 THEN 'bought'
            ELSE 'cart' END AS how
  UNWIND [(seed)-[s:SIMILAR_ITEM]->(it)
          | CASE WHEN s.run_id = run_id THEN {it: it, score: s.score} END] AS n
  WITH n.it AS it, n.score AS score, seed_id, seed_name, how WHERE n IS NOT NULL
  ORDER BY score DESC, seed_id
  WITH it, sum(score) AS score, head(collect({seed: seed_name, how: how})) AS best
  WITH collect({item: it, score: score, best: best}) AS found
  WITH found, reduce(top = 0.0, f IN found | CASE WHEN f.score > top THEN f.score ELSE top END)
       AS top
  RETURN [f IN found | {item: f.item, item_sim: f.score / top,
                        because: CASE f.best.how
                          WHEN 'bought' THEN 'because you bought ' + f.best.seed
                          WHEN 'liked' THEN 'because you liked ' + f.best.seed
                          ELSE 'because you put ' + f.best.seed + ' in your cart' END}]
         AS item_items
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
  ORDER BY p.weight DESC, p.category LIMIT $limits.top_categories
  MATCH (c:Category {name: p.category})
  CALL (c) {
    CALL (c) {
      MATCH (it:Item)
      USING INDEX SEEK it:Item(category, users, id)
      WHERE it.category = c.name AND it.users > 0 AND it.id IS NOT NULL
      WITH it ORDER BY it.category DESC, it.users DESC LIMIT $limits.category_items + 1
      RETURN collect({it: it, users: it.users}) AS top
    }
    CALL (c, top) {
      WITH top WHERE size(top) <= $limits.category_items OR top[-1].users < top[-2].users
      UNWIND top AS t
      RETURN t.it AS it, t.users AS users
      UNION ALL
      WITH c, top
      WHERE size(top) > $limits.category_items AND top[-1].users = top[-2].users
      WITH c, top[-1].users AS tied, [t IN top WHERE t.users > top[-1].users] AS above
      CALL (c, tied, above) {
        UNWIND above AS t
        RETURN t.it AS it, t.users AS users
        UNION ALL
        MATCH (it:Item)
        USING INDEX SEEK it:Item(category, users, id)
        WHERE it.category = c.name AND it.users = tied AND it.id IS NOT NULL
        WITH it ORDER BY it.category, it.users, it.id LIMIT $limits.category_items
        RETURN it, tied AS users
      }
      RETURN it, users
      UNION ALL
      WITH CASE WHEN size(top) < $limits.category_items THEN c.name END AS few_of
      MATCH (it:Item)
      USING INDEX SEEK it:Item(category, id)
      WHERE it.category = few_of AND it.id IS NOT NULL AND it.users IS NULL
      WITH it ORDER BY it.category, it.id LIMIT $limits.category_items
      RETURN it, 0 AS users
    }
    RETURN it ORDER BY users DESC, it.id LIMIT $limits.category_items
  }
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
  // The weather and events that count: the real ones, or those $what_if supposes instead
  // (null: none supposed). A supposed one is phrased as such in the reasons.
  WITH place, event_boosts, coalesce($what_if.supposes_weather, false) AS supposed,
       CASE WHEN $what_if.supposes_weather THEN $what_if.weather ELSE w.condition END
         AS condition,
       CASE WHEN $what_if.supposes_weather THEN $what_if.temp_c ELSE w.temp_c END AS temp_c
  WITH event_boosts, condition, temp_c,
       CASE WHEN supposed THEN 'if it were {} in ' + coalesce(place, 'your area')
            ELSE '{} in ' + place + ' today' END AS phrase,
       CASE WHEN $what_if.local_event IS NULL THEN event_boosts
            ELSE reduce(acc = [], kind IN keys($context.event_kinds) |
                   acc + CASE WHEN toLower($what_if.local_event) CONTAINS kind
                              THEN [category IN $context.event_kinds[kind] |
                                      {category: category, reason: 'if there were '
                                       + $what_if.local_event + ' nearby'}]
                              ELSE [] END) END AS events
  RETURN
    [category IN coalesce($context.weather[condition], []) |
       {category: category, reason: replace(phrase, '{}', condition)}]
    + [category IN CASE WHEN temp_c <= $context.cold_below_c THEN $context.cold ELSE [] END |
       {category: category, reason: replace(phrase, '{}', 'cold')}]
    + [category IN CASE WHEN temp_c >= $context.warm_from_c THEN $context.warm ELSE [] END |
       {category: category, reason: replace(phrase, '{}', 'warm')}]
    + events AS boosts
}
WITH u, few, owned, segment, prefs, boosts, blend,
     seg_items + sim_items + item_items + pref_items AS candidates, COUNT { (:User) } AS users
UNWIND candidates AS cand
WITH u, few, owned, segment, prefs, boosts, blend, users, cand.item AS it,
     sum(coalesce(cand.seg, 0.0)) AS seg, sum(coalesce(cand.sim, 0.0)) AS sim,
     sum(coalesce(cand.n, 0)) AS similar_buyers, sum(coalesce(cand.item_sim, 0.0)) AS item_sim,
     head(collect(cand.because)) AS because
WHERE NOT it IN owned
WITH u, few, segment, boosts, blend, users, it, seg, sim, similar_buyers, item_sim, because,
     it.category AS category, prefs
WITH u, few, segment, boosts, blend, users, it, seg, sim, similar_buyers, item_sim, because,
     category, head([p IN prefs WHERE p.category = category]) AS pref
WHERE coalesce(pref.explicit, 0.0) >= 0
WITH u, few, it, category, blend, seg, sim, similar_buyers, item_sim, pref,
     [b IN boosts WHERE b.category = category | b.reason] AS context_reasons,
     toFloat(COUNT { (it)<-[:INTERACTED]-() }) / users AS popularity,
     CASE WHEN seg > 0 THEN ['popular with your segment ' + segment] ELSE [] END
     + CASE WHEN blend.similar = 0 THEN []
            WHEN similar_buyers = 1 THEN ['bought by a similar user']
            WHEN similar_buyers > 1 THEN ['bought by ' + similar_buyers + ' similar users']
            ELSE [] END
     + CASE WHEN because IS NOT NULL THEN [because] ELSE [] END
     + CASE WHEN pref.explicit > 0 THEN ['you said you like ' + category]
            WHEN pref.weight >= $weights.preference_min
              THEN ['matches your preference for ' + category]
            ELSE [] END AS graph_reasons
WITH u, few, it, it.id AS item_id, category,
     $weights.segment * seg + blend.similar * sim + blend.item * item_sim
     + $weights.preference * coalesce(pref.weight, 0.0)
     + $weights.popularity * popularity
     + $weights.context * size(context_reasons) AS score,
     graph_reasons + context_reasons AS reasons
ORDER BY score DESC, item_id
// The ranked list, then each candidate tested in that order until enough have passed: the
// test is on the list's elements, so no plan can test them before they are ranked.
WITH u, few, collect({it: it, item_id: item_id, category: category, score: score,
                      reasons: reasons}) AS ranked
UNWIND ranked AS r
WITH u, r, r.it AS it
WHERE few OR NOT EXISTS { (u)-[o:INTERACTED]->(it) WHERE o.purchases > 0
                                                      OR o.rating IS NOT NULL }
WITH it, r LIMIT $recommendations_first
RETURN r.item_id AS item_id, coalesce(it.name, r.item_id) AS name, r.category AS category,
       r.score AS score, r.reasons AS reasons
"""

RECOMMEND = "MATCH (u:User {id: $user_id})\n" + RECOMMEND_FOR_USER

# The global-popularity baseline: the items bought by the most distinct users (a user who
# bought an item ten times counts once; units only break ties), minus those the user bought or
# rated (any rating), as RECOMMEND leaves them out. With $personal false the list is the same
# for everyone (nothing of the user is read): what a user without personalization consent is
# offered. Items carry their buyers and units (graph/aggregates/queries.py), and the index on
# them (migrations/0015) hands the best-sellers out in order: a read of $first items (and of
# those the user is left out of), not of every purchase. The user is found by a seek of its id
# (a hint: a plan cached while the graph held other data scanned every user's id per item).
POPULAR = """
MATCH (it:Item)
USING INDEX SEEK it:Item(buyers, units)
WHERE it.buyers > 0 AND it.units IS NOT NULL
WITH it ORDER BY it.buyers DESC, it.units DESC, it.id
WHERE NOT ($personal AND EXISTS {
  MATCH (u:User)-[r:INTERACTED]->(it)
  USING INDEX SEEK u:User(id)
  WHERE u.id = $user_id AND (r.purchases > 0 OR r.rating IS NOT NULL)
})
WITH it, it.buyers AS buyers LIMIT $first
RETURN it.id AS item_id, coalesce(it.name, it.id) AS name,
       it.category AS category,
       toFloat(buyers) AS score,
       ['bought by ' + buyers + CASE buyers WHEN 1 THEN ' shopper' ELSE ' shoppers' END]
       AS reasons
"""

# -- Similar users and item neighbours, written with each segmentation run --------------------
# (see ``neighbours`` and ``items``; the rules match RECOMMEND_FOR_USER's (b) and (d))

# The interactions that make a user similar to others: carted, bought or liked (rated 4-5), not
# rated 2 or lower; ``bought``: bought or liked (what a peer is found by); ``item_users``: the
# item's interacting users (a degree read), for the super-node cap.
CARTED_OR_BOUGHT = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
WHERE (coalesce(r.carts, 0) + coalesce(r.purchases, 0) > 0 OR r.rating >= 4)
  AND coalesce(r.rating, 3) > 2
RETURN u.id AS user_id, it.id AS item_id, coalesce(r.last_at, r.rated_at) AS last_at,
       coalesce(r.purchases, 0) > 0 OR coalesce(r.rating, 0) >= 4 AS bought,
       coalesce(u.consent_personalization, true) AS personal,
       COUNT { (it)<-[:INTERACTED]-() } AS item_users
"""

# A run's SIMILAR_TO are new for that run, so a chunk only creates them. A chunk is written in
# one transaction, so if its first user already has edges of the run the chunk is a retry (a
# commit whose outcome was unknown, or the same rows written again): then the run's edges of
# its users are deleted first, in the same transaction, and the retry replaces what it wrote
# instead of doubling it. One user's edges are read per chunk (RUN_EDGES_OF_FIRST_USER), not
# every user's. The run's edges of a user are read from the user (one expansion of its
# SIMILAR_TO), never by seeking the run_id index (every edge of the run, per user: see the test
# of migration 0012's indexes): the run id is filtered outside the pattern (a WHERE inside it,
# even in a pattern comprehension, is planned as that seek). Both ends are found by the id
# uniqueness constraint's index, one seek each. Only the run writes its edges, so nothing else
# races to create one.
RUN_EDGES_OF_FIRST_USER = """
MATCH (u:User {id: $rows[0].user_id})
RETURN size([s IN [(u)-[s:SIMILAR_TO]->() | s] WHERE s.run_id = $run_id]) AS edges
"""

DELETE_RUN_SIMILAR_USERS_OF = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
UNWIND [s IN [(u)-[s:SIMILAR_TO]->() | s] WHERE s.run_id = $run_id] AS s
DELETE s
"""

CREATE_SIMILAR_USERS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
UNWIND row.peers AS p
MATCH (peer:User {id: p.user_id})
CREATE (u)-[:SIMILAR_TO {run_id: $run_id, overlap: p.overlap}]->(peer)
RETURN count(*) AS edges
"""

# Every other run's, once a run is published (readers read only the latest run's anyway): the
# run ids below this one's, then those above, each a range seek of the run_id index (migration
# 0012), so that the drop reads the edges it deletes and not the run's own (a scan of every
# edge for `<> $run_id` read both). Every writer gives the edges a run id; those from before
# that were deleted by migration 0018.
DROP_SIMILAR_USERS_BELOW = """
MATCH ()-[s:SIMILAR_TO]->() USING INDEX SEEK s:SIMILAR_TO(run_id) WHERE s.run_id < $run_id
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS
"""

DROP_SIMILAR_USERS_ABOVE = """
MATCH ()-[s:SIMILAR_TO]->() USING INDEX SEEK s:SIMILAR_TO(run_id) WHERE s.run_id > $run_id
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS
"""

# A user's stored similar users, when they no longer hold: the user's aggregates were rebuilt
# (graph/aggregates, after a merge or an unmerge; until the next run they are found
# per request), or the user
# withdrew personalization consent (none are kept).
DROP_SIMILAR_USERS = """
UNWIND $user_ids AS id
MATCH (:User {id: id})-[s:SIMILAR_TO]->()
DELETE s
"""

ITEM_INTERACTIONS = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
RETURN u.id AS user_id, it.id AS item_id, r.views AS views, r.carts AS carts,
       r.purchases AS purchases, r.rating AS rating, coalesce(r.last_at, r.rated_at) AS last_at
"""

# Every user's interactions as lists, a page of users at a time (keyset on the user id): what a
# run's recommender tables are computed from (graph/recommend/interactions.py). Every user of
# the page has a row (an empty list without interactions), so the page's last row is its last
# user. The time is nanoseconds since the epoch ($missing when unset), exact and cheap to decode.
RUN_INTERACTIONS_PAGE = """
MATCH (u:User)
WHERE u.id > $after
WITH u ORDER BY u.id LIMIT $limit
RETURN u.id AS user_id, coalesce(u.consent_personalization, true) AS personal,
       [(u)-[r:INTERACTED]->(it:Item) | [it.id, coalesce(r.views, 0), coalesce(r.carts, 0),
         coalesce(r.purchases, 0), r.rating,
         coalesce(coalesce(r.last_at, r.rated_at).epochSeconds * 1000000000
                  + coalesce(r.last_at, r.rated_at).nanosecond, $missing)]] AS seen
"""

# As the similar users: a chunk whose first item has edges of the run is a retry, and the run's
# edges of its items are deleted before they are created, in the same transaction.
RUN_EDGES_OF_FIRST_ITEM = """
MATCH (it:Item {id: $rows[0].item_id})
RETURN size([s IN [(it)-[s:SIMILAR_ITEM]->() | s] WHERE s.run_id = $run_id]) AS edges
"""

DELETE_RUN_ITEM_NEIGHBOURS_OF = """
UNWIND $rows AS row
MATCH (it:Item {id: row.item_id})
UNWIND [s IN [(it)-[s:SIMILAR_ITEM]->() | s] WHERE s.run_id = $run_id] AS s
DELETE s
"""

CREATE_ITEM_NEIGHBOURS = """
UNWIND $rows AS row
MATCH (it:Item {id: row.item_id})
UNWIND row.neighbours AS n
MATCH (other:Item {id: n.item_id})
CREATE (it)-[:SIMILAR_ITEM {run_id: $run_id, score: n.score}]->(other)
RETURN count(*) AS edges
"""

# As DROP_SIMILAR_USERS_BELOW and _ABOVE.
DROP_ITEM_NEIGHBOURS_BELOW = """
MATCH ()-[s:SIMILAR_ITEM]->() USING INDEX SEEK s:SIMILAR_ITEM(run_id) WHERE s.run_id < $run_id
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS
"""

DROP_ITEM_NEIGHBOURS_ABOVE = """
MATCH ()-[s:SIMILAR_ITEM]->() USING INDEX SEEK s:SIMILAR_ITEM(run_id) WHERE s.run_id > $run_id
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS
"""
