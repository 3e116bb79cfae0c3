// A user's interactions, newest first, and a session's, oldest first, are read from an index
// seek (graph/profile/queries.py): each Interaction carries its owner's id (`user_id`, written
// by the event writer and the bulk import, handed over by merges and unmerges,
// graph/identity) and its session's (`session_id`), so that `ORDER BY at DESC LIMIT n` reads
// n entries of these indexes, not the whole history.
CREATE INDEX interaction_user_at IF NOT EXISTS FOR (n:Interaction) ON (n.user_id, n.at);
CREATE INDEX interaction_session_at IF NOT EXISTS FOR (n:Interaction) ON (n.session_id, n.at);
// Interactions written before then get their owner's and session's ids here, in bounded
// transactions; those that have them are left alone, so running it again is a no-op.
MATCH (u:User)-[:PERFORMED]->(i:Interaction)
WHERE i.user_id IS NULL OR i.user_id <> u.id
CALL (u, i) { SET i.user_id = u.id } IN TRANSACTIONS OF 10000 ROWS;
MATCH (i:Interaction)-[:IN_SESSION]->(s:Session)
WHERE i.session_id IS NULL
CALL (i, s) { SET i.session_id = s.id } IN TRANSACTIONS OF 10000 ROWS;
// A location's weather observations and local events carry its id (`location_id`, written by
// graph/situation/queries.py): a location's latest weather and its next events are an ordered
// seek, not a walk of every observation it ever had.
CREATE INDEX weather_location_at IF NOT EXISTS
FOR (n:WeatherObservation) ON (n.location_id, n.at);
CREATE INDEX local_event_location_starts_at IF NOT EXISTS
FOR (n:LocalEvent) ON (n.location_id, n.starts_at);
MATCH (w:WeatherObservation)-[:OBSERVED_AT]->(l:Location)
WHERE w.location_id IS NULL OR w.location_id <> l.id
CALL (w, l) { SET w.location_id = l.id } IN TRANSACTIONS OF 10000 ROWS;
MATCH (e:LocalEvent)-[:HELD_IN]->(l:Location)
WHERE e.location_id IS NULL OR e.location_id <> l.id
CALL (e, l) { SET e.location_id = l.id } IN TRANSACTIONS OF 10000 ROWS;
// Best-sellers and an item's buyers are read from counters on the item (`buyers`: users who
// bought it, `units`: bought in all; graph/aggregates/queries.py UPDATE_INTERACTED) instead of
// summing every purchase: this index hands the best-sellers out in order. Items bought before
// then are counted here, in batches; counted ones are left alone.
CREATE INDEX item_popularity IF NOT EXISTS FOR (n:Item) ON (n.buyers, n.units);
MATCH (it:Item)
WHERE it.buyers IS NULL AND EXISTS { (:User)-[r:INTERACTED]->(it) WHERE r.purchases > 0 }
CALL (it) {
  MATCH (:User)-[r:INTERACTED]->(it)
  WHERE r.purchases > 0
  WITH it, count(r) AS buyers, sum(r.purchases) AS units
  SET it.buyers = buyers, it.units = units
} IN TRANSACTIONS OF 1000 ROWS;
// A user's sessions likewise: each HAD_SESSION link carries its user's id and its session's
// start (graph/ingest/queries.py UPSERT_SESSIONS; a session may have several participants).
CREATE INDEX had_session_user_started_at IF NOT EXISTS
FOR ()-[h:HAD_SESSION]-() ON (h.user_id, h.started_at);
MATCH (u)-[h:HAD_SESSION]->(s:Session)
WHERE h.user_id IS NULL OR h.user_id <> u.id OR h.started_at IS NULL
   OR h.started_at <> s.started_at
CALL (u, h, s) { SET h.user_id = u.id, h.started_at = s.started_at } IN TRANSACTIONS OF 10000 ROWS;
