// A category's most interacted-with items are read from an ordered index seek
// (graph/recommend/queries.py, the preferred categories' items) instead of counting every item's
// INTERACTED degree: each item carries its users (`users`: users with an INTERACTED to it; none
// before the first), kept by every writer as `buyers` and `units` are
// (graph/aggregates/queries.py UPDATE_INTERACTED and REFRESH_ITEM_COUNTERS, the bulk import).
// The id last: the items tied on users are read in id order, as many as needed.
CREATE INDEX item_category_users IF NOT EXISTS FOR (n:Item) ON (n.category, n.users, n.id);
// Items interacted with before then are counted here, in batches; those whose count is right
// are left alone, so running it again changes nothing.
MATCH (it:Item)
WHERE coalesce(it.users, 0) <> COUNT { (:User)-[:INTERACTED]->(it) }
CALL (it) {
  WITH it, COUNT { (:User)-[:INTERACTED]->(it) } AS users
  SET it.users = CASE WHEN users > 0 THEN users END
} IN TRANSACTIONS OF 1000 ROWS;
