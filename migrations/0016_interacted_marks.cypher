// A user's `INTERACTED` carry their owner's id (`user_id`) and a mark, `bought_or_liked`: true
// when the user bought the item or liked it (rated 4-5) and did not rate it 2 or lower, the
// rule a similar user's evidence follows (graph/recommend/queries.py RECOMMEND_FOR_USER). Every
// writer keeps them (graph/aggregates/queries.py UPDATE_INTERACTED and RECOMPUTE_INTERACTED,
// the bulk import, graph/ingest/bulk.py), so that a user's marked items are an index seek that
// touches no other edge, and a user's latest items an ordered seek of the second index
// (graph/profile/queries.py SIMILAR_USERS), not a walk of every item the user ever touched.
CREATE INDEX interacted_user_bought_or_liked IF NOT EXISTS
FOR ()-[r:INTERACTED]-() ON (r.user_id, r.bought_or_liked);
CREATE INDEX interacted_user_last_at IF NOT EXISTS
FOR ()-[r:INTERACTED]-() ON (r.user_id, r.last_at);
// Aggregates written before then get both here, in bounded transactions; those that have them
// right are left alone, so running it again is a no-op.
MATCH (u:User)-[r:INTERACTED]->(:Item)
WITH u, r, (coalesce(r.purchases, 0) > 0 OR coalesce(r.rating, 0) >= 4)
           AND coalesce(r.rating, 3) > 2 AS mark
WHERE r.user_id IS NULL OR r.user_id <> u.id OR r.bought_or_liked IS NULL
   OR r.bought_or_liked <> mark
CALL (u, r, mark) { SET r.user_id = u.id, r.bought_or_liked = mark } IN TRANSACTIONS OF 10000 ROWS;
